"""Serving the viewer: bind the socket first (so a taken port is a clear error), then run uvicorn."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from pathlib import Path

from dypo_data.errors import ConfigError
from dypo_data.store import open_store
from dypo_data.view.snapshot import Snapshot

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 takes any free port."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({exc.strerror})",
                          "use 127.0.0.1 (the default) or an address the machine has") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use", "pass another --port, or --port 0 for any free one") from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(f"no permission to listen on port {port}", "use a port above 1023") from exc
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})", "check --host and --port") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(store: str | Path, *, host: str, port: int, on_ready: Callable[[str, float], None]) -> None:
    """Build the store's snapshot, bind, call `on_ready(url, build_seconds)`, serve until interrupted."""
    import uvicorn

    from dypo_data.view.app import create_app

    root = open_store(store)
    snapshot = Snapshot(root)
    snapshot.refresh(force=True)
    sock = bind(host, port)
    app = create_app(root, snapshot=snapshot)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    on_ready(url_of(sock), snapshot.build_seconds)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        snapshot.close()

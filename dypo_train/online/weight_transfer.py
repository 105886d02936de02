"""Pushing the trainer's weights into running vLLM servers, and asking them which policy version they hold.

Transport tested here (CPU, no NCCL): the shared-path transport. The trainer writes one policy version
once, as a safetensors file in a directory every server can read (`weight_dir/policy-v<N>/`), then asks
each server, through the routes vLLM serves under VLLM_SERVER_DEV_MODE=1, to

1. `POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}`: the workers
   reload every weight in place from that directory (Hugging Face names, the checkpoint's format);
2. `POST /reset_prefix_cache`: cached prompt blocks hold attention state of the old weights;
3. `POST /update_weight_version {"new_version": "N"}`: the version `GET /weight_info` reports from now on.

The same three calls work on GPU servers and on any shared filesystem. On GPUs vLLM's own weight-transfer
engines avoid the disk: `rollout.weight_transfer=nccl | ipc` (vllm_transfer.py, `EngineTransport`), with the
same interface as `SharedPathTransport`: `push(state_dict, version)` (returns the servers it could not reach),
`repush(urls, version)` (servers that report another version get the current one again), `versions()`,
`close()`. `ServerRoutes` holds what both say to the servers outside the transfer itself.

Why the shared path is not a vLLM weight-transfer engine (`WeightTransferEngineFactory.register_engine`): the
registry lives in the server's worker processes, so a custom engine would have to be registered there, which
vLLM only does through a `vllm.general_plugins` entry point of an installed distribution (or a wrapper of the
server entry point that registers it before the workers start). And the worker side would do what
`reload_weights` already does (load a safetensors directory into the model). The dev route `collective_rpc`
reaches `reload_weights` with no plugin.

A server that cannot be reached is skipped and reported (`push` returns which); one that answers with an
error (another architecture, a file it cannot read) raises. `versions()` reads every server's version, so
a server that missed a push (down, or restarted with its original weights) is found before its samples
are used, and pushed to again (`ServerFleet`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dypo_data.errors import BackendError
from dypo_train.online.weights import stream_weights

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
DEV_HINT = ("start the servers with VLLM_SERVER_DEV_MODE=1 (dypo-train serve-rollouts does), so they serve the weight "
            "routes")


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (the dev routes are not under /v1)."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class Unreachable(Exception):
    """A server did not answer (connection refused, timed out): it may come back."""


class ServerRoutes:
    """The dev routes every transport uses besides the transfer: a policy version's finish, versions, world sizes."""

    def __init__(self, base_urls: Sequence[str], *, timeout_s: float = 300.0, hint: str = "") -> None:
        self.urls = [server_root(u) for u in base_urls]
        self.timeout_s = timeout_s
        self.hint = hint or "check that every server serves the policy being trained (same architecture)"

    def finish(self, version: int, urls: Sequence[str]) -> None:
        """After the servers' weights changed: drop their cached prompt blocks, report `version`."""
        for url in urls:
            self.call(url, "/reset_prefix_cache", None)  # cached prompt blocks hold attention state of the old weights
            self.call(url, "/update_weight_version", {"new_version": str(version)})

    def versions(self) -> dict[str, str]:
        """The policy version (`GET /weight_info`) of every server that answers; a server that does not is left out
        (a server never pushed to reports vLLM's "default")."""
        out: dict[str, str] = {}
        for url in self.urls:
            try:
                out[url] = str(self.get(url, "/weight_info")["weight_version"])
            except Unreachable:
                continue
        return out

    def world_sizes(self) -> list[int]:
        """Workers of each server (tensor x pipeline x data parallel), in `urls` order."""
        return [int(self.get(url, "/get_world_size")["world_size"]) for url in self.urls]

    def get(self, url: str, route: str) -> dict:
        import httpx

        try:
            reply = httpx.get(f"{url}{route}", timeout=10.0)
        except httpx.TransportError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        self._check(url, route, reply)
        return reply.json()

    def call(self, url: str, route: str, body: dict | None) -> None:
        import httpx

        try:
            reply = httpx.post(f"{url}{route}", json=body, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        self._check(url, route, reply)

    def _check(self, url: str, route: str, reply: Any) -> None:
        if reply.status_code == 404:
            raise BackendError(f"server {url} has no {route} route", DEV_HINT)
        if reply.status_code >= 400:
            raise BackendError(f"server {url} refused {route}: HTTP {reply.status_code}: {reply.text[:300]}", self.hint)


class SharedPathTransport:
    """Writes each policy version once under `root` and has every server reload it; see the module docstring."""

    def __init__(self, root: str | os.PathLike, base_urls: Sequence[str], *, dtype: Any = None, timeout_s: float = 300.0,
                 keep: int = 2) -> None:
        """`dtype`: the servers' weight dtype (floating-point weights are written in it; None: as they are)."""
        self.root = Path(root).expanduser().resolve()
        self.dtype = dtype
        self.routes = ServerRoutes(base_urls, timeout_s=timeout_s, hint="check that every server serves the policy being "
                                   f"trained (same architecture) and can read {self.root}")
        self.urls = self.routes.urls
        self.keep = keep
        self.path: Path | None = None  # the directory of the version last written

    def push(self, state_dict: Mapping[str, Any], version: int) -> list[str]:
        """Write `state_dict` as policy version `version` and have every server reload it; returns those that could
        not be reached."""
        self.path = self.write(state_dict, version)
        return self.reload(self.path, version)

    def repush(self, urls: Sequence[str], version: int) -> None:
        """Have `urls` reload the version last written (they missed it, or restarted)."""
        self.reload(self.path, version, urls)

    def versions(self) -> dict[str, str]:
        return self.routes.versions()

    def close(self) -> None:
        pass

    def write(self, state_dict: Mapping[str, Any], version: int, dtype: Any = None) -> Path:
        """Policy version `version` as `root/policy-v<version>/model.safetensors` (written to a temporary name, then
        renamed: a server never reads half a file), floating-point weights in `dtype` when given; older versions
        beyond `keep` are removed."""
        from safetensors.torch import save_file

        final = self.root / f"policy-v{version}"
        if final.is_dir():
            shutil.rmtree(final)
        tmp = self.root / f".tmp-policy-v{version}-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        # copies on CPU: tied weights must not share storage in a file
        tensors = {name: t.cpu().clone() for name, t in stream_weights(state_dict, dtype=dtype or self.dtype)}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "policy_version": str(version)})
        os.replace(tmp, final)
        self._prune(version)
        return final

    def reload(self, path: Path, version: int, urls: Sequence[str] | None = None) -> list[str]:
        """Have the servers (all, or `urls`) reload `path` and report `version`; returns those that could not be reached."""
        missed = []
        for url in urls or self.urls:
            try:
                self.routes.call(url, "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
                self.routes.finish(version, [url])
            except Unreachable as exc:
                log.warning("server %s missed policy version %d: %s", url, version, exc)
                missed.append(url)
        return missed

    def _prune(self, version: int) -> None:
        for old in self.root.glob("policy-v*"):
            suffix = old.name.removeprefix("policy-v")
            if suffix.isdigit() and int(suffix) <= version - self.keep:
                shutil.rmtree(old, ignore_errors=True)

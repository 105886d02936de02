"""`dypo-data view` through its console entry point: errors in one line, and a real server answering."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "dypo_data.cli.main", "view", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_missing_store_is_one_line_naming_it(tmp_path):
    out = _cli("--store", str(tmp_path / "nope"))
    _, err = out.communicate(timeout=60)
    assert out.returncode == 2
    assert "store directory" in err and "nope" in err and "Traceback" not in err


def test_a_port_in_use_is_one_line_with_the_fix(view_store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = _cli("--store", str(view_store.root), "--port", str(port))
        _, err = out.communicate(timeout=60)
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in err and "--port" in err and "Traceback" not in err


def test_the_server_prints_its_url_and_serves_the_pages(view_store):
    server = _cli("--store", str(view_store.root), "--port", "0")
    try:
        line = server.stdout.readline()
        assert "http://127.0.0.1:" in line, server.stderr.read() if server.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200 and b"Overview" in response.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with urllib.request.urlopen(url + "static/katex/katex.min.css", timeout=5) as response:
            assert response.status == 200
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

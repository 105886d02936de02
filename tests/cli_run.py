"""Running `dypo-data` as a user would (a subprocess of the real CLI) and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DATA_CLI = [sys.executable, "-m", "dypo_data.cli.main"]


def cli_env(cache: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", **extra)
    if cache is not None:
        env["DYPO_CACHE"] = str(cache)
    return env


def run(*args: str, cache: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`dypo-data ARGS...` to the end, output captured."""
    return subprocess.run([*DATA_CLI, *args], capture_output=True, text=True, env=cli_env(cache), timeout=timeout)


def start(*args: str, cache: Path | None = None, log: Path) -> subprocess.Popen:
    """`dypo-data ARGS...` in the background, stdout and stderr into `log` (the caller waits or signals it)."""
    fh = open(log, "w")
    return subprocess.Popen([*DATA_CLI, *args], stdout=fh, stderr=subprocess.STDOUT, text=True, env=cli_env(cache),
                            start_new_session=True)  # its own process group: killpg ends its engine too


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The error is the last line on stderr (progress bars of earlier steps may precede it)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in err, result.stderr
    return err

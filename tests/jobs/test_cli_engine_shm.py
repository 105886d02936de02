"""vLLM's shared-memory segments after a `dypo-data generate` killed with SIGKILL (engine included):
they stay in /dev/shm, and the next job that starts an engine removes them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from cli_run import run, start

RECORDS = Path("/dev/shm/dypo-engines")


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_segments_of_a_killed_engine_are_removed_by_the_next_one(tmp_path, cache):
    problems = tmp_path / "problems.jsonl"
    assert run("synth", "--out", str(problems), "-n", "200", "--seed", "4", cache=cache).returncode == 0
    args = ["generate", "--store", str(tmp_path / "st"), "--prompts", str(problems), "--policy", "p=tiny:3",
            "-k", "4", "--max-tokens", "256", "--dtype", "float32", "-q"]
    proc = start(*args, cache=cache, log=tmp_path / "first.log")
    proc_group = proc.pid  # start() runs it in a session of its own: the engine dies with it
    record = RECORDS / f"{proc.pid}.json"
    deadline = time.monotonic() + 300
    while not record.exists():
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "the engine never started"
        time.sleep(0.1)
    os.killpg(proc_group, signal.SIGKILL)
    proc.wait()
    time.sleep(1)  # the engine process ends with its parent
    left = [name for name in json.loads(record.read_text()) if (Path("/dev/shm") / name).exists()]
    assert left, "the killed engine left nothing in /dev/shm (nothing to test)"

    again = run(*args, "--limit", "1", "--policy-version", "v2", cache=cache)  # new samples: it starts an engine
    assert again.returncode == 0, again.stderr
    assert not [name for name in left if (Path("/dev/shm") / name).exists()]
    assert not record.exists()
    assert not (RECORDS / f"{os.getpid()}.json").exists()

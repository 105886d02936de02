"""Two writers of one store, as two real `dypo-data` processes.

The same work (generate of one model, role and settings; verify under one setting) is done once: the
second writer fails at once naming the holder, or with --wait waits and then does what is left.
Different work (another model, other verifier settings, verify beside generate) runs meanwhile. A
holder killed with SIGKILL leaves no lease behind. A first writer is held mid-run with SIGSTOP so
the second one meets it at a known point, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_run import assert_one_line_error, run, start
from store_factory import build_store

GENERATE = ["--backend", "transformers", "--max-tokens", "16", "--dtype", "float32", "-m", "2", "-q"]


@pytest.fixture(scope="module")
def problems(tmp_path_factory, cache) -> Path:
    path = tmp_path_factory.mktemp("problems") / "problems.jsonl"
    assert run("synth", "--out", str(path), "-n", "24", "--seed", "5", cache=cache).returncode == 0
    return path


def holding(proc: subprocess.Popen, root: Path, job: str, timeout: float = 120) -> dict:
    """Wait until `proc` holds a lease of `job` in `root`; returns the holder record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for path in (root / ".leases").glob(f"{job}*.lock") if (root / ".leases").is_dir() else ():
            text = path.read_text()
            if text and json.loads(text)["pid"] == proc.pid:
                return json.loads(text)
        time.sleep(0.02)
    raise AssertionError(f"{job} (pid {proc.pid}) never held its lease; exit code {proc.poll()}")


def raw_ids(root: Path, table: str, key: str) -> list[str]:
    """Every id in the table's Parquet files, read directly (no views, so doubles count)."""
    files = sorted((root / table).glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f, columns=[key]) for f in files])[key].to_pylist() if files else []


def test_second_generate_of_the_same_work_fails_fast_or_waits(tmp_path, cache, problems):
    root = tmp_path / "st"
    args = ["generate", "--store", str(root), "--prompts", str(problems), "--teacher", "a=tiny:1", *GENERATE]
    first = start(*args, cache=cache, log=tmp_path / "first.log")
    holder = holding(first, root, "generate")
    os.kill(first.pid, signal.SIGSTOP)  # holds the lease, mid-run
    try:
        started = time.monotonic()
        second = run(*args, cache=cache)
        err = assert_one_line_error(second, "already running", f"pid {first.pid}", holder["host"], "--wait")
        assert second.returncode == 75 and time.monotonic() - started < 60, err
        # different work runs at once: another model, and verify beside generate
        other = run("generate", "--store", str(root), "--teacher", "b=tiny:2", *GENERATE, cache=cache)
        assert other.returncode == 0, other.stderr
        assert run("verify", "--store", str(root), "--workers", "1", "-q", cache=cache).returncode == 0
        waiting = start(*args, "--wait", cache=cache, log=tmp_path / "waiting.log")
        deadline = time.monotonic() + 120
        while "waiting" not in (tmp_path / "waiting.log").read_text() and time.monotonic() < deadline:
            assert waiting.poll() is None, (tmp_path / "waiting.log").read_text()
            time.sleep(0.05)
        assert f"pid {first.pid}" in (tmp_path / "waiting.log").read_text()
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
    assert waiting.wait(timeout=300) == 0, (tmp_path / "waiting.log").read_text()
    ids = raw_ids(root, "traces", "trace_id")
    assert len(ids) == len(set(ids)), "a trace was written twice"
    n_problems = len(problems.read_text().splitlines())
    assert len(ids) == n_problems * (1 + 2 + 2)  # the reference solution, then m=2 of each teacher


def test_a_killed_holder_leaves_no_lease(tmp_path, cache, problems):
    root = tmp_path / "st"
    args = ["generate", "--store", str(root), "--prompts", str(problems), "--teacher", "a=tiny:1", *GENERATE]
    first = start(*args, cache=cache, log=tmp_path / "first.log")
    holding(first, root, "generate")
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = run(*args, cache=cache)
    assert again.returncode == 0, again.stderr
    ids = raw_ids(root, "traces", "trace_id")
    assert len(ids) == len(set(ids)) == len(problems.read_text().splitlines()) * 3


def test_second_verify_of_the_same_settings_fails_fast(tmp_path, cache):
    store = build_store(tmp_path / "st")
    verdicts_before = len(raw_ids(store.root, "verdicts", "verdict_id"))
    first = start("verify", "--store", str(store.root), "--workers", "1", "-q", cache=cache, log=tmp_path / "first.log")
    holding(first, store.root, "verify")
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = run("verify", "--store", str(store.root), "--workers", "1", cache=cache)
        assert_one_line_error(second, "verify", "already running", f"pid {first.pid}")
        other = run("verify", "--store", str(store.root), "--workers", "1", "--float-rounding", "3", "-q", cache=cache)
        assert other.returncode == 0, other.stderr  # other settings: other work
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()
    ids = raw_ids(store.root, "verdicts", "verdict_id")
    assert len(ids) == len(set(ids))
    assert len(ids) == verdicts_before + 2 * len(store.traces)  # every trace once per new setting

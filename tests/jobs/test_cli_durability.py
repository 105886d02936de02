"""What a stopped `dypo-data verify` keeps, through real signals to the real CLI process:

- SIGKILL (nothing can run) loses at most the last `--flush-seconds` of verdicts: shards are written
  on time as well as on count;
- SIGTERM (what `kill` and schedulers send) keeps every verdict already computed, as Ctrl-C does,
  and exits 143;
- the rerun grades only the rest, so every trace has exactly one verdict in the raw files.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cli_run import run, start
from many_traces import build_many_traces

NEVER_BY_COUNT = str(10**9)


@pytest.fixture
def store(tmp_path) -> tuple[Path, int]:
    root = tmp_path / "st"
    return root, build_many_traces(root, prompts=2000, per_prompt=8)


def verdict_ids(root: Path) -> list[str]:
    files = sorted((root / "verdicts").glob("*.parquet")) if (root / "verdicts").is_dir() else []
    return pa.concat_tables([pq.read_table(f, columns=["trace_id"]) for f in files])["trace_id"].to_pylist() if files else []


def wait_for(condition, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"verify ended (exit {proc.returncode}) before it could be stopped"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def finish_and_check(root: Path, n_traces: int, kept: list[str]) -> None:
    again = run("verify", "--store", str(root), "--workers", "1", "-q")
    assert again.returncode == 0, again.stderr
    ids = verdict_ids(root)
    assert len(ids) == len(set(ids)) == n_traces, "a verdict was lost or written twice"
    assert set(kept) <= set(ids)


def test_sigkill_loses_at_most_the_last_flush_interval(store, tmp_path):
    root, n_traces = store
    proc = start("verify", "--store", str(root), "--workers", "1", "-q", "--flush-every", NEVER_BY_COUNT,
                 "--flush-seconds", "1", log=tmp_path / "verify.log")
    wait_for(lambda: len(verdict_ids(root)) > 0, proc)  # a shard written because a second passed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = verdict_ids(root)
    assert 0 < len(kept) < n_traces
    finish_and_check(root, n_traces, kept)


def test_sigterm_keeps_what_was_done_like_ctrl_c(store, tmp_path):
    root, n_traces = store
    log = tmp_path / "verify.log"
    proc = start("verify", "--store", str(root), "--workers", "1", "-q", "--flush-every", NEVER_BY_COUNT,
                 "--flush-seconds", "2", log=log)
    wait_for(lambda: len(verdict_ids(root)) > 0, proc)  # grading is under way; the next shard is due in 2 s
    written = len(verdict_ids(root))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()
    assert "terminated" in log.read_text() and "Traceback" not in log.read_text()
    kept = verdict_ids(root)
    assert written < len(kept) < n_traces, "the verdicts buffered at SIGTERM were not written"
    finish_and_check(root, n_traces, kept)

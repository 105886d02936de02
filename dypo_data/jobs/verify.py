"""`dypo-data verify`: grade every trace that has no verdict under the given verifier settings.

Verdicts are their own table keyed by (trace, verifier settings), so re-verifying with other
settings adds verdicts and never rewrites a trace; the `latest_verdicts` view picks the newest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from dypo_data.contracts.rows import verdict_row, verifier_settings_hash
from dypo_data.grading import GradeItem, VerifierConfig, VerifierPool, verifier_version
from dypo_data.jobs.common import JobStats, ShardBuffer, make_progress, new_run_id
from dypo_data.errors import ConfigError
from dypo_data.store import ShardWriter, check_writable, open_store, reading
from dypo_data.store.lease import hold_lease
from dypo_data.store.queries import orphan_trace_count, unscored_traces, unscored_traces_among


@dataclass(frozen=True)
class VerifyConfig:
    store: str = field(metadata={"help": "Store directory to verify."})
    verifier: VerifierConfig = field(default_factory=VerifierConfig, metadata={"help": "Verifier settings."})
    limit: int | None = field(default=None, metadata={"help": "Verify at most this many traces."})
    trace_ids: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Verify only these traces (dypo-data eval: its samples); None: every trace."}
    )
    flush_every: int = field(default=1024, metadata={"help": "Write a verdict shard once this many verdicts are buffered."})
    flush_seconds: float = field(
        default=10.0, metadata={"help": "... or once this many seconds have passed: a kill loses at most this much work."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    wait: bool = field(
        default=False,
        metadata={"help": "When another process is verifying this store under the same settings, wait for it and "
                          "then grade what it left, instead of failing."},
    )

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit={self.limit} must be >= 1", "pass --limit N with N >= 1, or omit it to verify every trace")
        if self.flush_every < 1:
            raise ConfigError(f"flush_every={self.flush_every} must be >= 1", "use e.g. 1024")
        if not self.flush_seconds > 0:
            raise ConfigError(f"flush_seconds={self.flush_seconds} must be > 0", "use e.g. 10")


def run_verify(cfg: VerifyConfig) -> JobStats:
    root = open_store(cfg.store)
    check_writable(root)  # before any work, as generate does
    run_id = new_run_id("verify")
    stats = JobStats("verify", run_id)
    writer = ShardWriter(root, run_id)
    settings = cfg.verifier.settings()
    vhash = verifier_settings_hash(settings)
    settings_json = json.dumps(settings, sort_keys=True)
    version = verifier_version()

    with hold_lease(root, f"verify|{vhash}", f"verify under verifier settings {vhash[:8]}", wait=cfg.wait):
        with reading(root) as con:  # read once the lease is held: a waiting run grades only what is left
            todo = unscored_traces(con, vhash) if cfg.trace_ids is None else unscored_traces_among(con, list(cfg.trace_ids), vhash)
            stats.add("traces_without_prompt", orphan_trace_count(con))
        if cfg.limit is not None:
            todo = todo.slice(0, cfg.limit)
        gold_of = dict(zip(todo["trace_id"].to_pylist(), todo["gold"].to_pylist()))
        items = [GradeItem(t, g, c) for t, c, g in zip(todo["trace_id"].to_pylist(), todo["completion"].to_pylist(), todo["gold"].to_pylist())]
        stats.add("traces_to_verify", len(items))

        buffer = ShardBuffer(writer, "verdicts", stats, every=cfg.flush_every, seconds=cfg.flush_seconds)
        started = time.monotonic()
        if items:  # nothing to grade (a rerun): no worker processes to start
            _grade(items, cfg, buffer, stats, lambda g: verdict_row(g, gold_of[g.key], vhash=vhash,
                                                                      settings_json=settings_json, version=version))
        stats.time("verify_seconds", time.monotonic() - started)
    writer.write_manifest(stats.manifest(cfg, verifier_settings_hash=vhash, verifier_version=version))
    return stats


def _grade(items: list[GradeItem], cfg: VerifyConfig, buffer: ShardBuffer, stats: JobStats,
           row_of: Callable[[Any], dict]) -> None:
    """Grade `items` in the pool, buffering one verdict row each, with a progress bar."""
    started = time.monotonic()
    with VerifierPool(cfg.verifier) as pool, make_progress(cfg.progress) as bar:
        task = bar.add_task("verify", total=len(items), rate="")
        try:
            for done, grade in enumerate(pool.grade(items), 1):
                buffer.add([row_of(grade)])
                stats.add(f"status/{grade.status.value}")
                if grade.correct:
                    stats.add("correct")
                rate = done / max(time.monotonic() - started, 1e-9)
                bar.update(task, advance=1, rate=f"{rate:,.0f} items/s")
        finally:
            buffer.flush()  # verdicts already computed are kept even when the run is interrupted

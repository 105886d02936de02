"""Where a step's metrics go: the console, Accelerate's trackers, and the store's train tables.

Metric names are slash-namespaced (`loss/sft`, `tier/hard`, `tier/offline_ratio`, `time/generate`).
Rows for the store are buffered and written (one shard per table) at each checkpoint and at the
end, so a resumed run writes the retrained steps again and the views keep the latest rows.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pyarrow as pa

from dypo_data.contracts.schemas import TRAIN_METRICS, TRAIN_SAMPLES
from dypo_data.store.shards import ShardWriter
from dypo_train.loop.plan import PromptRecord

CONSOLE_KEYS = ("loss/total", "tier/easy", "tier/mid", "tier/hard", "tier/offline_ratio", "reward/mean", "policy/entropy", "grad/norm")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class StoreMetrics:
    """Buffers train_metrics and train_samples rows of one run and writes them as shards."""

    def __init__(self, store: Path, run_id: str) -> None:
        self.writer = ShardWriter(store, run_id)
        self.run_id = run_id
        self.metrics: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []

    def add(self, step: int, metrics: dict[str, float], records: list[PromptRecord]) -> None:
        at = now()
        for name, value in metrics.items():
            v = float(value)
            self.metrics.append({"run_id": self.run_id, "step": step, "name": name, "value": None if math.isnan(v) else v, "created_at": at})
        for r in records:
            self.samples.append({
                "run_id": self.run_id, "step": step, "prompt_id": r.prompt_id, "group_id": r.group_id, "tier": r.tier,
                "route": r.route, "teacher_trace_id": r.teacher_trace_id, "n_rollouts": r.n_rollouts,
                "n_correct": r.n_correct, "created_at": at,
            })

    def flush(self) -> None:
        if self.metrics:
            self.writer.write("train_metrics", pa.Table.from_pylist(self.metrics, schema=TRAIN_METRICS))
        if self.samples:
            self.writer.write("train_samples", pa.Table.from_pylist(self.samples, schema=TRAIN_SAMPLES))
        self.metrics, self.samples = [], []


def console_line(step: int, total: int, metrics: dict[str, float]) -> str:
    """One readable line per logged step: tiers, offline-data ratio, reward, losses."""
    m = metrics
    tiers = f"easy {m.get('tier/easy', 0):.0f} mid {m.get('tier/mid', 0):.0f} hard {m.get('tier/hard', 0):.0f}"
    if m.get("route/hard_without_teacher"):
        tiers += f" ({m['route/hard_without_teacher']:.0f} without a verified teacher trace)"
    parts = [f"step {step}/{total}", tiers, f"offline {m.get('tier/offline_ratio', float('nan')):.2f}",
             f"reward {m.get('reward/mean', float('nan')):.3f}"]
    for key in ("loss/sft", "loss/rl", "loss/gal", "loss/offpolicy"):
        if key in m:
            parts.append(f"{key.split('/')[1]} {m[key]:.4f}")
    if "policy/entropy" in m:
        parts.append(f"entropy {m['policy/entropy']:.3f}")
    if "grad/norm" in m:
        parts.append(f"|g| {m['grad/norm']:.3f}")
    if "perf/tokens_per_s" in m:
        parts.append(f"{m['perf/tokens_per_s']:.0f} tok/s")
    return " | ".join(parts)


EVAL_CONSOLE = ("avg@", "pass@", "maj@")


def eval_lines(metrics: dict[str, float]) -> list[str]:
    """One line per held-out set evaluated at this step: `  eval math500: avg@4 0.125 pass@1 0.125 ... maj@4 0.100`
    (with eval.greedy, `greedy avg@1 0.150` after them)."""
    sets: dict[str, list[str]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[2].startswith(EVAL_CONSOLE):
            sets.setdefault(parts[1], []).append(f"{parts[2]} {value:.3f}")
        elif len(parts) == 4 and parts[0] == "eval" and parts[2] == "greedy" and parts[3].startswith("avg@"):
            sets.setdefault(parts[1], []).append(f"greedy {parts[3]} {value:.3f}")
    return [f"  eval {name}: {' '.join(cells)}" for name, cells in sets.items()]

"""`dypo-data eval-report`: compare stored evaluations side by side, and plot runs against their steps.

Reads the `eval_results` view, keeping for each (model, policy version, benchmark) the setting
evaluated last (queries.EVAL_REPORT), and returns

- `side_by_side(rows)`: per benchmark, one column per model@version and one row per metric, in the
  order avg@k, pass@j (by j), maj@k, then the counts and rates;
- PNGs (with `out`): one per metric, the value and its interval against the training step, one line
  per (model, benchmark) that has two or more numeric versions (a training run's checkpoints).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dypo_data.errors import InputError, StoreError
from dypo_data.evaluation.summary import COUNT_METRICS
from dypo_data.store import open_store, reading
from dypo_data.store.queries import eval_names, eval_report


@dataclass(frozen=True)
class ReportConfig:
    store: str = field(metadata={"help": "Store directory holding eval_results."})
    models: tuple[str, ...] = field(default=(), metadata={"help": "Only these models (default: all)."})
    benchmarks: tuple[str, ...] = field(default=(), metadata={"help": "Only these benchmarks (default: all)."})
    out: str | None = field(default=None, metadata={"help": "Write one PNG per metric against training step here."})


@dataclass
class Report:
    rows: pa.Table  # queries.EVAL_REPORT columns
    plots: list[Path]


def run_report(cfg: ReportConfig) -> Report:
    """The newest results per (model, version, benchmark), filtered; PNGs when `cfg.out` is set."""
    root = open_store(cfg.store)
    with reading(root) as con:
        known_models, known_benchmarks = eval_names(con)
        if not known_benchmarks:
            raise InputError(f"store {cfg.store} has no eval results", "run `dypo-data eval --store ...` first")
        _check_names("benchmark", cfg.benchmarks, known_benchmarks, "--benchmark")
        _check_names("model", cfg.models, known_models, "--model")
        rows = eval_report(con, models=list(cfg.models), benchmarks=list(cfg.benchmarks))
    plots = write_plots(rows, Path(cfg.out)) if cfg.out else []
    return Report(rows, plots)


def _check_names(what: str, asked: tuple[str, ...], known: list[str], flag: str) -> None:
    unknown = [name for name in asked if name not in known]
    if unknown:
        raise InputError(f"no eval results for {what} {', '.join(map(repr, unknown))}",
                         f"use {flag} with one of: {', '.join(known)}")


# -- side by side ------------------------------------------------------------------------------------


def metric_order(metric: str) -> tuple:
    """avg@k, pass@1, pass@2, ..., maj@k, then samples, ungradable, truncation_rate, mean_length."""
    name, _, num = metric.partition("@")
    rank = {"avg": 0, "pass": 1, "maj": 2}.get(name)
    if rank is not None and num.isdigit():
        return (rank, int(num), metric)
    return (3, COUNT_METRICS.index(metric) if metric in COUNT_METRICS else len(COUNT_METRICS), metric)


def format_value(row: dict[str, Any]) -> str:
    """`0.412 [0.331, 0.493]` for a metric with an interval; counts as integers; NaN as `-`."""
    value = row["value"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if row["metric"] in ("samples", "ungradable"):
        return f"{value:.0f}"
    if row["metric"] == "mean_length":
        return f"{value:.1f}"
    text = f"{value:.3f}"
    if row["low"] is not None and row["high"] is not None:
        text += f" [{row['low']:.3f}, {row['high']:.3f}]"
    return text


def column_name(model: str, version: str) -> str:
    return model if version == "base" else f"{model}@{version}"


@dataclass
class BenchmarkTable:
    """One benchmark's side-by-side table: a column per model@version, a row per metric."""

    benchmark: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]  # (metric, one cell per column)
    k: list[int]  # the k of each column


def side_by_side(rows: pa.Table) -> list[BenchmarkTable]:
    """Pivot report (or eval) rows into one table per benchmark, in the order the rows come."""
    by_bench: dict[str, dict[str, dict[str, dict]]] = {}
    for row in rows.to_pylist():
        col = column_name(row["model"], row["policy_version"])
        by_bench.setdefault(row["benchmark"], {}).setdefault(col, {})[row["metric"]] = row
    tables = []
    for bench, cols in by_bench.items():
        metrics = sorted({m for c in cols.values() for m in c}, key=metric_order)
        cells = [(m, [format_value(cols[c][m]) if m in cols[c] else "" for c in cols]) for m in metrics]
        ks = [next(iter(c.values()))["k"] for c in cols.values()]
        tables.append(BenchmarkTable(bench, list(cols), cells, ks))
    return tables


# -- plots -------------------------------------------------------------------------------------------


def _series(rows: pa.Table) -> dict[str, dict[str, list[dict]]]:
    """metric -> "model / benchmark" -> rows by step, for models with two or more numeric versions."""
    out: dict[str, dict[str, list[dict]]] = {}
    stepped = [r for r in rows.to_pylist() if r["step"] is not None]
    for row in stepped:
        out.setdefault(row["metric"], {}).setdefault(f"{row['model']} / {row['benchmark']}", []).append(row)
    for metric in list(out):
        out[metric] = {name: sorted(rs, key=lambda r: r["step"]) for name, rs in out[metric].items()
                       if len({r["step"] for r in rs}) >= 2}
        if not out[metric]:
            del out[metric]
    return out


def plot_file(out: Path, metric: str) -> Path:
    """`pass@4` -> OUT/pass_at_4.png."""
    return out / (re.sub(r"[^A-Za-z0-9_.-]", "_", metric.replace("@", "_at_")) + ".png")


def write_plots(rows: pa.Table, out: Path) -> list[Path]:
    """One PNG per metric against training step (see the module docstring); [] when nothing has steps."""
    series = _series(rows)
    if not series:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {out}: {exc.strerror or exc}", "choose another --out") from exc
    paths = []
    for metric in sorted(series, key=metric_order):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for name, rs in series[metric].items():
            _draw(ax, name, rs)
        ax.set_xlabel("training step (policy version)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        path = plot_file(out, metric)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _draw(ax: Any, name: str, rs: list[dict]) -> None:
    steps = [r["step"] for r in rs]
    values = [r["value"] for r in rs]
    line = ax.plot(steps, values, marker="o", label=name)[0]
    if all(r["low"] is not None and r["high"] is not None for r in rs):
        ax.fill_between(steps, [r["low"] for r in rs], [r["high"] for r in rs], color=line.get_color(), alpha=0.2)

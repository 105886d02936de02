"""Small statistics over the runs' result files, shared by the report and its diagnosis section."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runs import final_metric


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the finite values."""
    vals = [x for x in values if not math.isnan(x)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def fmt(values: list[float]) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "n/a"
    return f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}"


def compare(a: list[float], b: list[float]) -> str:
    """'higher' / 'lower' when the mean +- std ranges of a and b do not overlap, else 'no clear difference'."""
    (ma, sa, na), (mb, sb, nb) = mean_std(a), mean_std(b)
    if na == 0 or nb == 0:
        return "not measured"
    if ma - sa > mb + sb:
        return "higher"
    if ma + sa < mb - sb:
        return "lower"
    return "no clear difference"


def curve(result: dict, name: str) -> list[tuple[int, float]]:
    return sorted((int(r["step"]), float(r["value"])) for r in result["dynamics"] if r["name"] == name)


def values(runs: list[dict], benchmark: str, metric: str) -> list[float]:
    return [final_metric(r, benchmark, metric) for r in runs]


def band(ax, runs: list[dict], name: str, label: str, *, keep=None) -> None:
    """Mean and ±1 std band over runs of one per-step metric; `keep(value)` drops points (e.g. zeros on a log axis)."""
    series = [[(s, x) for s, x in curve(r, name) if keep is None or keep(x)] for r in runs]
    series = [c for c in series if c]
    if not series:
        return
    steps = sorted({s for c in series for s, _ in c})
    table = [[dict(c).get(s, math.nan) for c in series] for s in steps]
    means = [mean_std(row)[0] for row in table]
    stds = [mean_std(row)[1] for row in table]
    line, = ax.plot(steps, means, label=label)
    lows = [m - s if keep is None or keep(m - s) else m for m, s in zip(means, stds)]  # on a log axis: no band below 0
    ax.fill_between(steps, lows, [m + s for m, s in zip(means, stds)], color=line.get_color(), alpha=0.2)


Column = tuple[str, Callable[[list[dict]], str]]  # a header and the cell of one method's runs


def method_table(methods: Sequence[str], chosen: dict[str, list[dict]], best: dict[str, float], lr_header: str,
                 columns: Sequence[Column]) -> list[str]:
    """A Markdown table of one row per method: its name, its chosen rate, then `columns` over its runs, then the
    number of seeds; a method with no run says so."""
    lines = ["| method | " + " | ".join([lr_header, *(h for h, _ in columns), "seeds"]) + " |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    for m in methods:
        runs = chosen.get(m, [])
        cells = ["not run", *[""] * (len(columns) - 1), "0"] if not runs else [*(fn(runs) for _, fn in columns), str(len(runs))]
        lines.append(f"| {m} | {f'{best[m]:g}' if runs else 'n/a'} | " + " | ".join(cells) + " |")
    return lines


def pyplot():
    """matplotlib's pyplot on the file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    pyplot().close(fig)


@dataclass(frozen=True)
class Panel:
    metric: str  # a per-step metric of the runs' dynamics
    title: str
    log: bool = False  # log y axis; points <= 0 (a step that trained nothing logs a 0 norm) are left out


def band_figure(path: Path, chosen: dict[str, list[dict]], methods: Sequence[str], panels: Sequence[Panel], *,
                grid: tuple[int, int], figsize: tuple[float, float], what: str) -> None:
    """One panel per metric, one mean ± std band per method over its seeds, saved to `path`."""
    fig, axes = pyplot().subplots(*grid, figsize=figsize)
    for ax, panel in zip(axes.flat, panels):
        for m in methods:
            band(ax, chosen.get(m, []), panel.metric, m, keep=(lambda x: x > 0) if panel.log else None)
        if panel.log:
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.suptitle(f"{what} at each method's chosen learning rate: mean and ±1 std band over seeds")
    save_figure(fig, path)

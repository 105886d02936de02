"""Small statistics over the runs' result files, shared by the report and its diagnosis section."""

from __future__ import annotations

import math
import statistics

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


def band(ax, runs: list[dict], name: str, label: str) -> None:
    series = [curve(r, name) for r in runs if curve(r, name)]
    if not series:
        return
    steps = sorted({s for c in series for s, _ in c})
    table = [[dict(c).get(s, math.nan) for c in series] for s in steps]
    means = [mean_std(row)[0] for row in table]
    stds = [mean_std(row)[1] for row in table]
    line, = ax.plot(steps, means, label=label)
    ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                    color=line.get_color(), alpha=0.2)

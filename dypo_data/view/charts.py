"""Line charts as SVG, drawn on the server: no plotting library to ship, nothing to run in the page.

`line_chart(title, series)` draws one metric of several runs overlaid (one colour per run, the same
colour for a run on every chart). Every piece of text goes through `html.escape`: metric names
and run ids come from the store.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
WIDTH, HEIGHT = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 24, 26


@dataclass(frozen=True)
class Series:
    label: str
    colour: str
    points: Sequence[tuple[float, float]]  # (step, value), steps increasing


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.1e}"
    return f"{value:.3g}"


def _bounds(series: Sequence[Series]) -> tuple[float, float, float, float]:
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    return x0, x1, y0, y1


def line_chart(title: str, series: Sequence[Series]) -> str:
    """An SVG element: `series` overlaid on shared axes, with the title on top."""
    drawn = [s for s in series if s.points]
    head = (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{html.escape(title)}"><text class="chart-title" x="{LEFT}" y="15">{html.escape(title)}</text>')
    if not drawn:
        return head + f'<text x="{LEFT}" y="{HEIGHT // 2}">no values</text></svg>'
    x0, x1, y0, y1 = _bounds(drawn)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [head, f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>']
    for tick in _ticks(y0, y1):
        y = sy(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{_label(tick)}</text>')
    for tick in _ticks(x0, x1):
        parts.append(f'<text class="tick" x="{sx(tick):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{_label(tick)}</text>')
    for s in drawn:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        parts.append(f'<polyline fill="none" stroke="{s.colour}" stroke-width="1.5" points="{path}">'
                     f'<title>{html.escape(s.label)}</title></polyline>')
        if len(s.points) == 1:
            x, y = s.points[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{s.colour}"/>')
    parts.append("</svg>")
    return "".join(parts)

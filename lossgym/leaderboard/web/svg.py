"""Loss curves as inline SVG, drawn server-side: no JavaScript, nothing fetched.

A plot shows a test's train and monitor loss per step (`curve` rows are
[step, train, monitor, ...]) and, dashed, the cross_entropy baseline's mean
curve for comparison; an overlay (`/compare`) shows one column of several
sessions' curves, one colour each (`run-0` ... `run-7`), and the baseline's.
Every number is formatted here; legend labels (agent names, on overlays) are
escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 64  # margins; the legend sits under the x axis
LEGEND_ITEM, LEGEND_ROW = 140, 18  # a legend entry's width; each further row adds its height
COLUMNS = {1: "train", 2: "monitor"}  # curve columns by index


@dataclass(frozen=True)
class Series:
    css: str  # class of the polyline: train | monitor | reference ref-train | ...
    label: str
    points: list[tuple[float, float]]  # (step, loss), finite only


@dataclass(frozen=True)
class Box:
    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, step: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return LEFT + (step - self.x0) / span * (WIDTH - LEFT - RIGHT)

    def y(self, loss: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return TOP + (self.y1 - loss) / span * (HEIGHT - TOP - BOTTOM)


def series_of(curve: Sequence[Sequence[float]], column: int, css: str, label: str) -> Series:
    """One column (1: train, 2: monitor) of a curve as a series, skipping non-finite values."""
    points = []
    for row in curve:
        if len(row) <= column:
            continue
        step, value = float(row[0]), float(row[column])
        if math.isfinite(step) and math.isfinite(value):
            points.append((step, value))
    return Series(css, label, points)


def plot_series(
    curve: Sequence[Sequence[float]], reference: Sequence[Sequence[float]] | None
) -> list[Series]:
    """The series of one test's plot: train, monitor, then the reference's two."""
    series = [series_of(curve, 1, "train", "train"), series_of(curve, 2, "monitor", "monitor")]
    if reference:
        series.append(series_of(reference, 1, "reference ref-train", "cross_entropy train"))
        series.append(series_of(reference, 2, "reference ref-monitor", "cross_entropy monitor"))
    return [s for s in series if s.points]


def overlay_series(
    curves: Sequence[tuple[str, Sequence[Sequence[float]]]],
    reference: Sequence[Sequence[float]] | None,
    column: int,
) -> list[Series]:
    """One column (1: train, 2: monitor) of each (label, curve), then the reference's, dashed."""
    series = [
        series_of(curve, column, f"run run-{i}", label) for i, (label, curve) in enumerate(curves)
    ]
    if reference:
        label = f"cross_entropy {COLUMNS[column]} (mean)"
        series.append(series_of(reference, column, "reference ref-mean", label))
    return [s for s in series if s.points]


def _box(series: Sequence[Series]) -> Box:
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    return Box(min(xs), max(xs), min(ys), max(ys))


def _num(value: float) -> str:
    return f"{value:.0f}" if value == int(value) and abs(value) >= 10 else f"{value:.3g}"


def _polyline(series: Series, box: Box) -> str:
    points = " ".join(f"{box.x(x):.1f},{box.y(y):.1f}" for x, y in series.points)
    return f'<polyline class="series {series.css}" fill="none" points="{points}"/>'


def _axes(box: Box) -> list[str]:
    x_left, x_right = LEFT, WIDTH - RIGHT
    y_top, y_bottom = TOP, HEIGHT - BOTTOM
    return [
        f'<rect class="frame" x="{x_left}" y="{y_top}" width="{x_right - x_left}" '
        f'height="{y_bottom - y_top}" fill="none"/>',
        f'<text class="tick" x="{x_left - 6}" y="{y_top + 4}" text-anchor="end">'
        f"{_num(box.y1)}</text>",
        f'<text class="tick" x="{x_left - 6}" y="{y_bottom}" text-anchor="end">'
        f"{_num(box.y0)}</text>",
        f'<text class="tick" x="{x_left}" y="{y_bottom + 14}" text-anchor="start">'
        f"{_num(box.x0)}</text>",
        f'<text class="tick" x="{x_right}" y="{y_bottom + 14}" text-anchor="end">'
        f"{_num(box.x1)}</text>",
        f'<text class="axis-label" x="{(x_left + x_right) / 2}" y="{y_bottom + 14}" '
        'text-anchor="middle">step</text>',
        f'<text class="axis-label" x="12" y="{(y_top + y_bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(y_top + y_bottom) / 2})">loss</text>',
    ]


def _per_row(item_width: int) -> int:
    return max(1, (WIDTH - LEFT) // item_width)


def _legend(series: Sequence[Series], item_width: int) -> list[str]:
    """Entries left to right, wrapping onto further rows below the first."""
    out = ['<g class="legend">']
    per_row = _per_row(item_width)
    for i, s in enumerate(series):
        x = LEFT + (i % per_row) * item_width
        y = HEIGHT - 22 + (i // per_row) * LEGEND_ROW
        out.append(f'<line class="series {s.css}" x1="{x}" y1="{y}" x2="{x + 24}" y2="{y}"/>')
        out.append(f'<text class="legend-label" x="{x + 30}" y="{y + 4}">{escape(s.label)}</text>')
    out.append("</g>")
    return out


def loss_plot(
    series: Sequence[Series], title: str, legend_item: int = LEGEND_ITEM, css: str = ""
) -> Markup:
    """An SVG plot of the series; `title` and labels are escaped here. The plot grows
    downwards by a row for each further row of legend (`legend_item` px per entry)."""
    series = [s for s in series if s.points]
    if not series:
        return Markup('<p class="no-curve">No loss curve was recorded for this test.</p>')
    box = _box(series)
    height = HEIGHT + (math.ceil(len(series) / _per_row(legend_item)) - 1) * LEGEND_ROW
    classes = f"loss-plot {css}".strip()
    parts = [
        f'<svg class="{classes}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" role="img">',
        Markup("<title>{}</title>").format(title),
        *_axes(box),
        *(_polyline(s, box) for s in series),
        *_legend(series, legend_item),
        "</svg>",
    ]
    return Markup("\n".join(str(p) for p in parts))

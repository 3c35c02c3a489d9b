"""Line charts as server-rendered SVG geometry: no JavaScript library, no build step.

A plotting library would add a vendored file and a client-side render for what is a few
polylines with min/max ticks; this computes the coordinates and `templates/chart.html.jinja`
draws them (labels escaped by Jinja).
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 460, 180
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 10, 24
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str
    dashed: bool = False
    path: str = ""
    last: tuple[float, float] | None = None
    """Where the last point is drawn (a dot marks the newest value)."""


@dataclass
class Chart:
    title: str
    series: list[Series]
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-2:
        return f"{value:.2e}"
    return f"{value:.4g}"


def line_chart(title: str, series: list[Series]) -> Chart:
    """Scale every series into one plot area (shared axes) and build their SVG paths."""
    chart = Chart(title, series)
    points = [p for s in series for p in s.points]
    if not points:
        return chart
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.05 - 1e-9, y1 + abs(y1) * 0.05 + 1e-9
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(x: float) -> float:
        return round(LEFT + (x - x0) / (x1 - x0) * plot_w, 1)

    def y_of(y: float) -> float:
        return round(TOP + (1 - (y - y0) / (y1 - y0)) * plot_h, 1)

    for s in series:
        coords = [(x_of(x), y_of(y)) for x, y in s.points]
        s.path = " ".join(f"{'M' if i == 0 else 'L'}{x},{y}" for i, (x, y) in enumerate(coords))
        s.last = coords[-1] if coords else None
    chart.x_ticks = [(x_of(v), _fmt(v)) for v in (x0, (x0 + x1) / 2, x1)]
    chart.y_ticks = [(y_of(v), _fmt(v)) for v in (y0, (y0 + y1) / 2, y1)]
    return chart

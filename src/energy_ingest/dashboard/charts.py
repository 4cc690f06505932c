"""Charts as inline SVG, drawn on the server: no chart library in the browser, nothing to download first.

Colours come from the page's stylesheet (classes, `currentColor`), so the charts follow light and dark mode.
Every chart has a title and a description for screen readers, marks points below a threshold with a
different shape as well as colour, and leaves gaps where there is no value. The numbers themselves are in
the table and the CSV beside each chart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 22, 28


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    values: Sequence[float | None]
    css: str  # the stylesheet's class: its colour, dashes


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round tick values spanning [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _number(value: float) -> str:
    return f"{value:.4g}"


def _time_label(at: datetime, span_s: float) -> str:
    return at.strftime("%d %b" if span_s > 3 * 86400 else "%H:%M" if span_s <= 86400 else "%d %b %H:%M")


class _Frame:
    """Maps bucket indexes and values to the drawing area."""

    def __init__(self, n: int, lo: float, hi: float, width: int = WIDTH, height: int = HEIGHT) -> None:
        self.n, self.lo, self.hi = max(n, 1), lo, hi
        self.width, self.height = width, height
        self.plot_w = width - LEFT - RIGHT
        self.plot_h = height - TOP - BOTTOM

    def x(self, index: float) -> float:
        return LEFT + (index + 0.5) * self.plot_w / self.n

    def y(self, value: float) -> float:
        return TOP + (self.hi - value) / (self.hi - self.lo) * self.plot_h


def _axes(frame: _Frame, ticks: list[float], starts: Sequence[datetime], unit: str) -> list[str]:
    parts = ['<g class="axis" aria-hidden="true">']
    for tick in ticks:
        y = frame.y(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{frame.width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(tick)}</text>')
    parts.append(f'<text x="4" y="12" class="unit">{escape(unit)}</text>')
    if starts:
        span = (starts[-1] - starts[0]).total_seconds() if len(starts) > 1 else 0.0
        labels = 6
        step = max(1, math.ceil(len(starts) / labels))
        for index in range(0, len(starts), step):
            parts.append(
                f'<text x="{frame.x(index):.1f}" y="{frame.height - 8}" text-anchor="middle">'
                f"{_time_label(starts[index], span)}</text>"
            )
    parts.append("</g>")
    return parts


def _open(title: str, description: str, chart_id: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(description)}</desc>'
    )


def _bounds(series: Sequence[Series], floor_zero: bool, extra: Sequence[float] = ()) -> tuple[float, float]:
    values = [v for s in series for v in s.values if v is not None] + list(extra)
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if floor_zero:
        lo = min(0.0, lo)
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    pad = (hi - lo) * 0.05
    return (lo if floor_zero else lo - pad), hi + pad


def bars(
    chart_id: str, title: str, starts: Sequence[datetime], series: Sequence[Series], unit: str, description: str
) -> Markup:
    """Grouped bars per bucket (AC beside DC)."""
    ticks = nice_ticks(*_bounds(series, True))
    frame = _Frame(len(starts), ticks[0], ticks[-1])
    parts = [_open(title, description, chart_id), *_axes(frame, ticks, starts, unit)]
    slot = frame.plot_w / frame.n
    bar_w = max(1.0, slot * 0.8 / max(len(series), 1))
    for k, s in enumerate(series):
        parts.append(f'<g class="{s.css}">')
        for index, value in enumerate(s.values):
            if value is None or value == 0:
                continue
            x = LEFT + index * slot + slot * 0.1 + k * bar_w
            y = frame.y(value)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{frame.y(ticks[0]) - y:.1f}">'
                f"<title>{escape(s.label)} {starts[index]:%Y-%m-%d %H:%M}Z: {_number(value)} {escape(unit)}</title>"
                "</rect>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def lines(
    chart_id: str,
    title: str,
    starts: Sequence[datetime],
    series: Sequence[Series],
    unit: str,
    description: str,
    *,
    threshold: float | None = None,
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None,
    fixed: tuple[float, float] | None = None,
) -> Markup:
    """Lines with a dot per value (gaps where there is none); points under `threshold` are drawn as ▼ and the
    threshold as a labelled dashed line; `band` shades between a low and a high series (voltage min–max)."""
    extra = [threshold] if threshold is not None else []
    band_series = [Series("", band[0], ""), Series("", band[1], "")] if band else []
    ticks = nice_ticks(*(fixed or _bounds([*series, *band_series], False, extra)))
    frame = _Frame(len(starts), ticks[0], ticks[-1])
    parts = [_open(title, description, chart_id), *_axes(frame, ticks, starts, unit)]
    if band is not None:
        lows, highs = band
        for index, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
            if lo is None or hi is None:
                continue
            half = max(1.0, frame.plot_w / frame.n * 0.4)
            parts.append(
                f'<rect class="band" x="{frame.x(index) - half:.1f}" y="{frame.y(hi):.1f}" '
                f'width="{2 * half:.1f}" height="{max(1.0, frame.y(lo) - frame.y(hi)):.1f}"/>'
            )
    if threshold is not None:
        y = frame.y(threshold)
        parts.append(
            f'<g class="threshold"><line x1="{LEFT}" x2="{frame.width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{frame.width - RIGHT - 4}" y="{y - 5:.1f}" text-anchor="end">threshold {_number(threshold)}'
            "</text></g>"
        )
    for s in series:
        parts.append(f'<g class="{s.css}">')
        run: list[str] = []
        for index, value in enumerate([*s.values, None]):
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline fill="none" points="{" ".join(run)}"/>')
                run = []
                continue
            run.append(f"{frame.x(index):.1f},{frame.y(value):.1f}")
        for index, value in enumerate(s.values):
            if value is None:
                continue
            x, y = frame.x(index), frame.y(value)
            label = f"<title>{escape(s.label)} {starts[index]:%Y-%m-%d %H:%M}Z: {_number(value)}</title>"
            if threshold is not None and value < threshold:
                parts.append(f'<path class="below" d="M{x - 5:.1f},{y - 4:.1f}h10l-5,9z">{label}</path>')
            else:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5">{label}</circle>')
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[float | None], threshold: float, label: str) -> Markup:
    """A small trend for a table cell: the line, the threshold dashed, the last point marked (▼ when below)."""
    width, height, pad = 96, 24, 3
    present = [v for v in values if v is not None]
    if not present:
        return Markup('<span class="muted">no AC</span>')
    lo, hi = min([*present, threshold]), max([*present, threshold])
    if hi == lo:
        hi = lo + 0.01

    def xy(index: int, value: float) -> tuple[float, float]:
        x = pad + index * (width - 2 * pad) / max(len(values) - 1, 1)
        return x, pad + (hi - value) / (hi - lo) * (height - 2 * pad)

    parts = [
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}">'
    ]
    ty = xy(0, threshold)[1]
    parts.append(f'<line class="threshold" x1="0" x2="{width}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
    run: list[str] = []
    for index, value in enumerate([*values, None]):
        if value is None:
            if len(run) > 1:
                parts.append(f'<polyline class="eff" fill="none" points="{" ".join(run)}"/>')
            elif len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle class="eff" cx="{cx}" cy="{cy}" r="1.5"/>')
            run = []
            continue
        x, y = xy(index, value)
        run.append(f"{x:.1f},{y:.1f}")
    last = max(i for i, v in enumerate(values) if v is not None)
    value = values[last]
    assert value is not None
    x, y = xy(last, value)
    if value < threshold:
        parts.append(f'<path class="below" d="M{x - 3.5:.1f},{y - 3:.1f}h7l-3.5,6z"/>')
    else:
        parts.append(f'<circle class="eff last" cx="{x:.1f}" cy="{y:.1f}" r="2.2"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True, slots=True)
class Span:
    start: datetime
    end: datetime | None  # None: still open
    label: str
    css: str


def timeline(
    chart_id: str, title: str, lo: datetime, hi: datetime, rows: Sequence[tuple[str, Sequence[Span]]]
) -> Markup:
    """Labelled rows of time spans (links, sessions) over [lo, hi), on the same horizontal scale as the charts."""
    row_h = 22
    height = TOP + row_h * max(len(rows), 1) + BOTTOM
    total = (hi - lo).total_seconds() or 1.0
    plot_w = WIDTH - LEFT - RIGHT

    def x(at: datetime) -> float:
        return LEFT + max(0.0, min(1.0, (at - lo).total_seconds() / total)) * plot_w

    count = sum(len(spans) for _, spans in rows)
    parts = [_open(title, f"{count} spans in the window", chart_id, WIDTH, height)]
    for index, (name, spans) in enumerate(rows):
        y = TOP + index * row_h
        parts.append(f'<text class="rowlabel" x="{LEFT - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>')
        for item in spans:
            x0, x1 = x(item.start), x(item.end or hi)
            end = "open" if item.end is None else f"{item.end:%Y-%m-%d %H:%M}Z"
            parts.append(
                f'<rect class="{item.css}" x="{x0:.1f}" y="{y + 3}" width="{max(2.0, x1 - x0):.1f}" '
                f'height="{row_h - 6}">'
                f"<title>{escape(item.label)}: {item.start:%Y-%m-%d %H:%M}Z – {end}</title></rect>"
            )
            if x1 - x0 > 60:
                parts.append(f'<text class="spanlabel" x="{x0 + 4:.1f}" y="{y + 15}">{escape(item.label)}</text>')
    span = (hi - lo).total_seconds()
    for k in range(6):
        at = lo + (hi - lo) * k / 5
        anchor = "start" if k == 0 else "end" if k == 5 else "middle"
        parts.append(
            f'<text class="axis" x="{x(at):.1f}" y="{height - 8}" text-anchor="{anchor}">{_time_label(at, span)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))

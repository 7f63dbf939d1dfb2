"""The shift report's charts as inline SVG: bars, the hourly and 7-day OEE trends, the
Pareto of stops and the loss waterfall. Pure: figures in, SVG text out.

The report must open anywhere without network, so every chart is drawn here as SVG text. Every
name that came from a config or a PLC goes through `esc`, so a reason label like "<b>" shows as
text; undefined figures draw no bar or point, never one of 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape

from agent.kpi.view import UNDEFINED, duration, percent

# Chart geometry, in SVG user units (the page scales them).
BAR_W = 420.0  # longest bar of a bar chart
ROW_H = 22.0
LABEL_W = 160.0
TREND_W, TREND_H = 640.0, 240.0
PARETO_W, PARETO_H = 640.0, 260.0
PAD = 40.0
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def hour_label(name: str) -> str:
    """An hour window's axis label: "08h"; the hour that occurs twice when clocks go back
    keeps its UTC offset ("02h+02", "02h+01"), so the two are told apart."""
    clock = name.partition("T")[2]  # "08" or "02+02:00"
    hour, offset = clock[:2], clock[2:5]
    return f"{hour}h{offset}"


def esc(text: object) -> str:
    """Text for HTML or SVG, quotes too (names land in attributes): shown, never parsed."""
    return escape(str(text), quote=True)


def num(x: float) -> str:
    """SVG coordinates: short and locale-free."""
    return f"{x:.1f}"


def bar_chart(items: Sequence[tuple[str, float | None]], *, title: str) -> str:
    """Horizontal bars, lengths proportional to the values (ratios, shown in %); the longest
    bar is max(1, the largest value) so 100 % is a fixed length unless a value exceeds it."""
    defined = [v for _, v in items if v is not None and math.isfinite(v)]
    scale = max([1.0, *defined])
    height = ROW_H * len(items) + 10
    width = LABEL_W + BAR_W + 80
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" width="{num(width)}" '
        f'height="{num(height)}" viewBox="0 0 {num(width)} {num(height)}" role="img">',
        f"<title>{esc(title)}</title>",
    ]
    for i, (label, value) in enumerate(items):
        y = 5 + i * ROW_H
        out.append(f'<text x="0" y="{num(y + 15)}">{esc(label)}</text>')
        if value is None or not math.isfinite(value):
            out.append(f'<text x="{num(LABEL_W)}" y="{num(y + 15)}">{UNDEFINED}</text>')
            continue
        length = BAR_W * max(value, 0.0) / scale
        out.append(
            f'<rect class="bar" x="{num(LABEL_W)}" y="{num(y + 3)}" width="{length:.3f}" '
            f'height="{num(ROW_H - 6)}" fill="{COLOURS[0]}" data-value="{value!r}"/>'
        )
        out.append(
            f'<text x="{num(LABEL_W + length + 6)}" y="{num(y + 15)}">{percent(value)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def trend_chart(
    hours: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    title: str,
    targets: Sequence[tuple[str, float]] = (),
    label: Callable[[str], str] = hour_label,
) -> str:
    """OEE window by window (hours of a shift, or shifts), one line per machine (and line): a
    point per window with a defined OEE; an undefined window breaks the line rather than
    drawing a false 0. The axis goes to 100 % or the 95th percentile (`axis_top`): a value
    above it (a 710 % hour after a counter fault) sits on the top edge as a triangle with its
    value written, so it cannot flatten the others. `targets` draw dashed lines."""
    n = max(len(hours), 1)
    top = axis_top([v for _, vs in series for v in vs])
    plot_w, plot_h = TREND_W - 2 * PAD, TREND_H - 2 * PAD
    legend_h = ROW_H * (len(series) + len(targets))
    height = TREND_H + legend_h

    def x(i: int) -> float:
        return PAD + (i + 0.5) * plot_w / n

    def y(v: float) -> float:
        return PAD + plot_h * (1 - min(v, top) / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" width="{num(TREND_W)}" '
        f'height="{num(height)}" viewBox="0 0 {num(TREND_W)} {num(height)}" role="img">',
        f"<title>{esc(title)}</title>",
        f'<line x1="{num(PAD)}" y1="{num(y(0))}" x2="{num(PAD + plot_w)}" y2="{num(y(0))}" '
        'stroke="#999"/>',
        f'<text x="2" y="{num(PAD - 12)}" class="axis">OEE (%)</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0) if top <= 1.0 else (0.0, top / 2, top):
        out.append(
            f'<text x="2" y="{num(y(tick) + 4)}">{tick * 100:.0f} %</text>'
            f'<line x1="{num(PAD)}" y1="{num(y(tick))}" x2="{num(PAD + plot_w)}" '
            f'y2="{num(y(tick))}" stroke="#eee"/>'
        )
    step = max(1, math.ceil(n / 12))  # at most 12 labels: they must not overlap
    for i, hour in enumerate(hours):
        if i % step == 0:
            out.append(
                f'<text x="{num(x(i) - 14)}" y="{num(PAD + plot_h + 16)}">{esc(label(hour))}</text>'
            )
    for s, (name, values) in enumerate(series):
        colour = COLOURS[s % len(COLOURS)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(values):
            if v is None or not math.isfinite(v):
                runs.append([])
                continue
            runs[-1].append((x(i), y(v)))
            if v > top:
                a, b = x(i), y(v)
                out.append(
                    f'<polygon class="outlier" points="{num(a - 5)},{num(b + 6)} '
                    f'{num(a + 5)},{num(b + 6)} {num(a)},{num(b - 3)}" fill="{colour}" '
                    f'data-series="{esc(name)}" data-value="{v!r}"/>'
                    f'<text x="{num(a + 7)}" y="{num(b + 4)}">{percent(v)}</text>'
                )
                continue
            out.append(
                f'<circle class="point" cx="{num(x(i))}" cy="{num(y(v))}" r="3" '
                f'fill="{colour}" data-series="{esc(name)}" data-value="{v!r}"/>'
            )
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{num(a)},{num(b)}" for a, b in run)
                out.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
        ly = TREND_H + s * ROW_H
        out.append(
            f'<rect x="{num(PAD)}" y="{num(ly + 4)}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{num(PAD + 18)}" y="{num(ly + 14)}">{esc(name)}</text>'
        )
    for k, (name, value) in enumerate(targets):
        drawn = [n for n, _ in series]
        colour = COLOURS[drawn.index(name) % len(COLOURS)] if name in drawn else "#333"
        out.append(
            f'<line class="target" x1="{num(PAD)}" y1="{num(y(value))}" '
            f'x2="{num(PAD + plot_w)}" y2="{num(y(value))}" stroke="{colour}" '
            f'stroke-dasharray="6 4" data-series="{esc(name)}" data-value="{value!r}"/>'
        )
        ly = TREND_H + (len(series) + k) * ROW_H
        out.append(
            f'<line x1="{num(PAD)}" y1="{num(ly + 10)}" x2="{num(PAD + 12)}" '
            f'y2="{num(ly + 10)}" stroke="{colour}" stroke-dasharray="3 2"/>'
            f'<text x="{num(PAD + 18)}" y="{num(ly + 14)}">target {esc(name)} '
            f"{percent(value)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def pareto_chart(
    ranked: Sequence[tuple[str, float, float]],
    *,
    title: str,
    stops: Mapping[str, int] | None = None,
) -> str:
    """Downtime by reason: bars by descending time (heights proportional, left axis in
    minutes), the cumulative share as a line over them (right axis, 0–100 %), each bar's
    reason written slanted below it (up to 24 characters) and, with `stops`, how many
    stops it took."""
    n = max(len(ranked), 1)
    bottom = 96.0  # room for the slanted labels
    # room on the right for the last slanted label and the cumulative axis
    plot_w, plot_h = PARETO_W - 2 * PAD - 100, PARETO_H - PAD - bottom
    top_s = max((s for _, s, _ in ranked), default=1.0) or 1.0
    tick_min = _nice(top_s / 60 / 4)
    top_s = max(top_s, tick_min * 60 * math.ceil(top_s / 60 / tick_min))
    slot = plot_w / n
    left0 = PAD + 20
    base = PAD + plot_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pareto" width="{num(PARETO_W)}" '
        f'height="{num(PARETO_H)}" viewBox="0 0 {num(PARETO_W)} {num(PARETO_H)}" role="img">',
        f"<title>{esc(title)}</title>",
        f'<line x1="{num(left0)}" y1="{num(base)}" x2="{num(left0 + plot_w)}" '
        f'y2="{num(base)}" stroke="#999"/>',
        f'<text x="2" y="{num(PAD - 14)}" class="axis">downtime (min)</text>',
        f'<text x="{num(left0 + plot_w - 70)}" y="{num(PAD - 14)}" class="axis">'
        "cumulative (%)</text>",
    ]
    if ranked:
        minutes = 0.0
        while minutes * 60 <= top_s + 1e-9:
            ty = base - plot_h * minutes * 60 / top_s
            out.append(
                f'<text x="2" y="{num(ty + 4)}">{minutes:g}</text>'
                f'<line x1="{num(left0)}" y1="{num(ty)}" x2="{num(left0 + plot_w)}" '
                f'y2="{num(ty)}" stroke="#eee"/>'
            )
            minutes += tick_min
        for share in (0.5, 1.0):
            ty = base - plot_h * share
            out.append(
                f'<text x="{num(left0 + plot_w + 4)}" y="{num(ty + 4)}">{share * 100:.0f} %</text>'
            )
    points = []
    for i, (reason, seconds, cumulative) in enumerate(ranked):
        h = plot_h * seconds / top_s
        left = left0 + i * slot + slot * 0.15
        centre = left0 + (i + 0.5) * slot
        out.append(
            f'<rect class="bar" x="{num(left)}" y="{base - h:.3f}" width="{num(slot * 0.7)}" '
            f'height="{h:.3f}" fill="{COLOURS[3]}" data-reason="{esc(reason)}" '
            f'data-value="{seconds!r}"><title>{esc(reason)}: {esc(duration(seconds))}'
            "</title></rect>"
        )
        stops_text = ""
        if stops is not None and reason in stops:
            stops_text = f" ×{stops[reason]}"
        out.append(
            f'<text x="{num(left)}" y="{num(base - h - 4)}">{esc(duration(seconds))}'
            f"{esc(stops_text)}</text>"
            f'<text class="reason" transform="translate({num(centre)},{num(base + 10)}) '
            f'rotate(35)">{esc(reason[:24])}</text>'
        )
        points.append((centre, base - plot_h * cumulative, cumulative))
    if points:
        line = " ".join(f"{num(a)},{num(b)}" for a, b, _ in points)
        out.append(
            f'<polyline class="cumulative" points="{line}" fill="none" stroke="#333" '
            'stroke-width="1.5"/>'
        )
        for a, b, share in points:
            out.append(
                f'<circle cx="{num(a)}" cy="{num(b)}" r="2.5" fill="#333" data-value="{share!r}"/>'
            )
    else:
        out.append(f'<text x="{num(PAD)}" y="{num(PAD + 20)}">no downtime</text>')
    out.append("</svg>")
    return "\n".join(out)


def _nice(x: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) of at least `x`."""
    if x <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * power >= x:
            return float(m * power)
    return float(10 * power)


def axis_top(values: Iterable[float | None], floor: float = 1.0) -> float:
    """The top of a value axis that one outlier cannot flatten: the 95th percentile (nearest
    rank, rounded down) of the defined values, at least `floor`. Values above it are drawn at
    the top edge and marked, with their value written out."""
    defined = sorted(v for v in values if v is not None and math.isfinite(v))
    if not defined:
        return floor
    rank = math.floor(0.95 * (len(defined) - 1))
    return max(floor, defined[rank])


def waterfall_chart(steps: Sequence[tuple[str, float]], *, title: str) -> str:
    """Horizontal waterfall: the first and last bars from 0, each loss a bar hanging from
    where the previous step left off; time in hours and the share of planned time."""
    planned = steps[0][1] if steps else 0.0
    width, label_w, bar_w = 640.0, 150.0, 330.0
    height = ROW_H * len(steps) + 30
    scale = bar_w / planned if planned > 0 else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" width="{num(width)}" '
        f'height="{num(height)}" viewBox="0 0 {num(width)} {num(height)}" role="img">',
        f"<title>{esc(title)}</title>",
    ]
    level = 0.0
    for i, (label, seconds) in enumerate(steps):
        y = 5 + i * ROW_H
        last = i == len(steps) - 1
        if i == 0 or last:
            left, size, colour = 0.0, seconds, "#2ca02c" if last else "#7f7f7f"
            level = seconds
        else:
            left, size, colour = level + seconds, -seconds, "#d62728"
            level += seconds
        share = f" ({abs(seconds) / planned * 100:.1f} %)" if planned > 0 else ""
        out.append(
            f'<text x="0" y="{num(y + 15)}">{esc(label)}</text>'
            f'<rect class="step" x="{num(label_w + left * scale)}" y="{num(y + 3)}" '
            f'width="{size * scale:.3f}" height="{num(ROW_H - 6)}" fill="{colour}" '
            f'data-step="{esc(label)}" data-value="{seconds!r}"/>'
            f'<text x="{num(label_w + bar_w + 8)}" y="{num(y + 15)}">'
            f"{'−' if seconds < 0 else ''}{esc(duration(abs(seconds)))}{share}</text>"
        )
    axis_y = 5 + len(steps) * ROW_H + 14
    out.append(
        f'<text x="{num(label_w)}" y="{num(axis_y)}" class="axis">time (h:min), share of '
        "known planned time</text></svg>"
    )
    return "\n".join(out)

"""The shift report (`lineside report`): one self-contained HTML file. Pure: windows in, text out.

The file must open anywhere, years later, on a PC without network: no script, no external
style sheet, font or image; the charts are inline SVG drawn here. Every name that came from a
config or a PLC (machines, lines, stop reasons) is escaped, so a reason label like "<b>" shows
as text. Undefined figures show as "—" and draw no bar, never a bar of 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from html import escape

from agent.kpi.losses import pareto
from agent.kpi.replay import KpiWindow
from agent.kpi.view import (
    UNDEFINED,
    count,
    duration,
    flag_texts,
    local_time,
    percent,
    unknown_text,
)

# Chart geometry, in SVG user units (the page scales them).
BAR_W = 420.0  # longest bar of a bar chart
ROW_H = 22.0
LABEL_W = 160.0
TREND_W, TREND_H = 640.0, 240.0
PARETO_W, PARETO_H = 640.0, 260.0
PAD = 40.0
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.line td { font-weight: bold; background: #f4f4f4; }
.flags { color: #a15c00; text-align: left; }
.note { color: #666; font-size: 0.9em; }
svg text { font-size: 11px; fill: #333; }
"""


def hour_label(name: str) -> str:
    """An hour window's axis label: "08h"; the hour that occurs twice when clocks go back
    keeps its UTC offset ("02h+02", "02h+01"), so the two are told apart."""
    clock = name.partition("T")[2]  # "08" or "02+02:00"
    hour, offset = clock[:2], clock[2:5]
    return f"{hour}h{offset}"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _num(x: float) -> str:
    """SVG coordinates: short and locale-free."""
    return f"{x:.1f}"


# ---------------------------------------------------------------------------------------------
# Charts


def bar_chart(items: Sequence[tuple[str, float | None]], *, title: str) -> str:
    """Horizontal bars, lengths proportional to the values (ratios, shown in %); the longest
    bar is max(1, the largest value) so 100 % is a fixed length unless a value exceeds it."""
    defined = [v for _, v in items if v is not None and math.isfinite(v)]
    scale = max([1.0, *defined])
    height = ROW_H * len(items) + 10
    width = LABEL_W + BAR_W + 80
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" role="img">',
        f"<title>{_e(title)}</title>",
    ]
    for i, (label, value) in enumerate(items):
        y = 5 + i * ROW_H
        out.append(f'<text x="0" y="{_num(y + 15)}">{_e(label)}</text>')
        if value is None or not math.isfinite(value):
            out.append(f'<text x="{_num(LABEL_W)}" y="{_num(y + 15)}">{UNDEFINED}</text>')
            continue
        length = BAR_W * max(value, 0.0) / scale
        out.append(
            f'<rect class="bar" x="{_num(LABEL_W)}" y="{_num(y + 3)}" width="{length:.3f}" '
            f'height="{_num(ROW_H - 6)}" fill="{COLOURS[0]}" data-value="{value!r}"/>'
        )
        out.append(
            f'<text x="{_num(LABEL_W + length + 6)}" y="{_num(y + 15)}">{percent(value)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def trend_chart(
    hours: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, title: str
) -> str:
    """OEE hour by hour, one line per machine (and line): a point per hour with a defined
    OEE; an undefined hour breaks the line rather than drawing a false 0."""
    n = max(len(hours), 1)
    defined = [v for _, vs in series for v in vs if v is not None and math.isfinite(v)]
    top = max([1.0, *defined])
    plot_w, plot_h = TREND_W - 2 * PAD, TREND_H - 2 * PAD
    legend_h = ROW_H * len(series)
    height = TREND_H + legend_h

    def x(i: int) -> float:
        return PAD + (i + 0.5) * plot_w / n

    def y(v: float) -> float:
        return PAD + plot_h * (1 - v / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" width="{_num(TREND_W)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(TREND_W)} {_num(height)}" role="img">',
        f"<title>{_e(title)}</title>",
        f'<line x1="{_num(PAD)}" y1="{_num(y(0))}" x2="{_num(PAD + plot_w)}" y2="{_num(y(0))}" '
        'stroke="#999"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        out.append(
            f'<text x="2" y="{_num(y(tick) + 4)}">{tick * 100:.0f} %</text>'
            f'<line x1="{_num(PAD)}" y1="{_num(y(tick))}" x2="{_num(PAD + plot_w)}" '
            f'y2="{_num(y(tick))}" stroke="#eee"/>'
        )
    for i, hour in enumerate(hours):
        out.append(
            f'<text x="{_num(x(i) - 12)}" y="{_num(PAD + plot_h + 16)}">'
            f"{_e(hour_label(hour))}</text>"
        )
    for s, (label, values) in enumerate(series):
        colour = COLOURS[s % len(COLOURS)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(values):
            if v is None or not math.isfinite(v):
                runs.append([])
                continue
            runs[-1].append((x(i), y(v)))
            out.append(
                f'<circle class="point" cx="{_num(x(i))}" cy="{_num(y(v))}" r="3" '
                f'fill="{colour}" data-series="{_e(label)}" data-value="{v!r}"/>'
            )
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{_num(a)},{_num(b)}" for a, b in run)
                out.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
        ly = TREND_H + s * ROW_H
        out.append(
            f'<rect x="{_num(PAD)}" y="{_num(ly + 4)}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{_num(PAD + 18)}" y="{_num(ly + 14)}">{_e(label)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def pareto_chart(ranked: Sequence[tuple[str, float, float]], *, title: str) -> str:
    """Downtime by reason: bars by descending seconds (heights proportional), and the
    cumulative share as a line over them (right axis, 0–100 %)."""
    n = max(len(ranked), 1)
    plot_w, plot_h = PARETO_W - 2 * PAD, PARETO_H - 2 * PAD - 40
    top = max((s for _, s, _ in ranked), default=1.0) or 1.0
    slot = plot_w / n
    base = PAD + plot_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pareto" width="{_num(PARETO_W)}" '
        f'height="{_num(PARETO_H)}" viewBox="0 0 {_num(PARETO_W)} {_num(PARETO_H)}" role="img">',
        f"<title>{_e(title)}</title>",
        f'<line x1="{_num(PAD)}" y1="{_num(base)}" x2="{_num(PAD + plot_w)}" y2="{_num(base)}" '
        'stroke="#999"/>',
        f'<text x="{_num(PAD + plot_w + 4)}" y="{_num(PAD + 4)}">100 %</text>',
    ]
    points = []
    for i, (reason, seconds, cumulative) in enumerate(ranked):
        h = plot_h * seconds / top
        left = PAD + i * slot + slot * 0.15
        out.append(
            f'<rect class="bar" x="{_num(left)}" y="{base - h:.3f}" width="{_num(slot * 0.7)}" '
            f'height="{h:.3f}" fill="{COLOURS[3]}" data-reason="{_e(reason)}" '
            f'data-value="{seconds!r}"/>'
        )
        out.append(
            f'<text x="{_num(left)}" y="{_num(base - h - 4)}">{_e(duration(seconds))}</text>'
            f'<text x="{_num(left)}" y="{_num(base + 14)}">{_e(reason[:18])}</text>'
        )
        points.append((PAD + (i + 0.5) * slot, PAD + plot_h * (1 - cumulative), cumulative))
    if points:
        line = " ".join(f"{_num(a)},{_num(b)}" for a, b, _ in points)
        out.append(
            f'<polyline class="cumulative" points="{line}" fill="none" stroke="#333" '
            'stroke-width="1.5"/>'
        )
        for a, b, share in points:
            out.append(
                f'<circle cx="{_num(a)}" cy="{_num(b)}" r="2.5" fill="#333" '
                f'data-value="{share!r}"/>'
            )
    else:
        out.append(f'<text x="{_num(PAD)}" y="{_num(PAD + 20)}">no downtime</text>')
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The page


def _summary(rows: Sequence[KpiWindow]) -> str:
    head = ("", "A", "P", "Q", "OEE", "total", "good", "reject", "run", "down", "setup", "idle",
            "unknown", "flags")  # fmt: skip
    out = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for w in rows:
        k, c = w.classic, w.components
        cells = [
            w.label if w.scope == "machine" else f"line {w.line}",
            percent(k["availability"]),
            percent(k["performance"]),
            percent(k["quality"]),
            percent(k["oee"]),
            count(c["total"]),
            count(c["good"]),
            count(c["reject"]),
            duration(c["running_s"]),
            duration(c["down_s"]),
            duration(c["setup_s"]),
            duration(c["idle_s"]),
            unknown_text(w),
        ]
        row = "".join(f"<td>{_e(x)}</td>" for x in cells)
        row += f'<td class="flags">{_e(", ".join(flag_texts(w)))}</td>'
        cls = ' class="line"' if w.scope == "line" else ""
        out.append(f"<tr{cls}>{row}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _losses(rows: Sequence[KpiWindow]) -> str:
    names = ("breakdowns", "setup_adjustments", "small_stops", "reduced_speed",
             "process_defects", "reduced_yield")  # fmt: skip
    out = [
        "<table>",
        "<tr><th></th>" + "".join(f"<th>{n.replace('_', ' ')}</th>" for n in names) + "</tr>",
    ]
    for w in rows:
        label = w.label if w.scope == "machine" else f"line {w.line}"
        cells = "".join(f"<td>{_e(duration(w.losses.get(n, 0.0)))}</td>" for n in names)
        out.append(f"<tr><td>{_e(label)}</td>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def downtime(rows: Iterable[KpiWindow]) -> list[tuple[str, float, float]]:
    """The Pareto of the machines' downtime together (lines are sums of machines: skipped)."""
    summed: dict[str, float] = {}
    for w in rows:
        if w.scope != "machine":
            continue
        for reason, seconds in w.components.get("down_by_reason", {}).items():
            summed[reason] = summed.get(reason, 0.0) + float(seconds)
    return pareto(summed)


def _series(
    shift: KpiWindow, hours: Sequence[KpiWindow]
) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    inside = [h for h in hours if shift.start_ns <= h.start_ns < shift.end_ns]
    names = sorted(
        {h.name for h in inside}, key=lambda n: min(h.start_ns for h in inside if h.name == n)
    )
    labels: list[tuple[str, str]] = []
    for h in inside:
        key = (h.scope, h.label)
        if key not in labels:
            labels.append(key)
    labels.sort(key=lambda k: (k[0] != "machine", k[1]))
    by = {(h.scope, h.label, h.name): h.classic["oee"] for h in inside}
    series = [
        (
            label if scope == "machine" else f"line {label}",
            [by.get((scope, label, n)) for n in names],
        )
        for scope, label in labels
    ]
    return names, series


def render(
    title: str,
    shifts: Sequence[KpiWindow],
    hours: Sequence[KpiWindow],
    zone: tzinfo,
    generated_ns: int,
) -> str:
    """The HTML report of one or more shifts: per shift a summary table, the hourly OEE trend,
    OEE per machine, the downtime Pareto and the six big losses."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">Generated {_e(local_time(generated_ns, zone))} ({_e(str(zone))}). '
        "OEE is the classic definition (availability × performance × quality); lines sum "
        "their machines' times and counts. — marks a figure that is undefined (no planned time "
        "or no count), not zero.</p>",
    ]
    if not shifts:
        parts.append("<p>No figures for this period: no readings were stored.</p>")
    order: list[tuple[int, str]] = []
    for w in shifts:
        if (w.start_ns, w.name) not in order:
            order.append((w.start_ns, w.name))
    for start_ns, name in sorted(order):
        rows = [w for w in shifts if w.name == name and w.start_ns == start_ns]
        rows.sort(key=lambda w: (w.scope != "machine", w.label))
        first = rows[0]
        span = f"{local_time(first.start_ns, zone)} – {local_time(first.end_ns, zone)}"
        state = "" if first.complete else " (in progress)"
        parts.append(f"<h2>{_e(first.kind)} {_e(name)}: {_e(span)}{state}</h2>")
        parts.append(_summary(rows))
        names, series = _series(first, hours)
        parts.append("<h3>OEE hour by hour</h3>")
        if names:
            parts.append(trend_chart(names, series, title=f"Hourly OEE, {name}"))
        else:
            parts.append('<p class="note">No hour of this shift has closed yet.</p>')
        parts.append("<h3>OEE per machine over the shift</h3>")
        bars = [
            (w.label if w.scope == "machine" else f"line {w.line}", w.classic["oee"]) for w in rows
        ]
        parts.append(bar_chart(bars, title=f"OEE per machine, {name}"))
        parts.append("<h3>Downtime by reason</h3>")
        parts.append(pareto_chart(downtime(rows), title=f"Downtime Pareto, {name}"))
        parts.append("<h3>Six big losses</h3>")
        parts.append(_losses(rows))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

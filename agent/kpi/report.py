"""The shift report (`lineside report`): one self-contained HTML file. Pure: windows in, text out.

The file must open anywhere, years later, on a PC without network: no script, no external
style sheet, font or image; the charts are inline SVG drawn here. Every name that came from a
config or a PLC (machines, lines, stop reasons) is escaped, so a reason label like "<b>" shows
as text. Undefined figures show as "—" and draw no bar, never a bar of 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from html import escape

from agent.kpi.config import product_name
from agent.kpi.losses import pareto
from agent.kpi.replay import KpiWindow
from agent.kpi.timeline import Count, Segment, Timeline, per_product, stop_counts
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
HOUR_NS = 3600 * 1_000_000_000
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")

STYLE = """
@page { size: A4; margin: 12mm; }
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 186mm; }
svg { max-width: 100%; height: auto; }
figure { margin: 0.5em 0; break-inside: avoid; }
table { font-size: 0.85em; max-width: 100%; }
td { white-space: nowrap; } td:first-child, td.flags { white-space: normal; }
@media print { body { margin: 0; font-size: 9pt; } table { font-size: 7.5pt; }
  th, td { padding: 1px 3px; } h2 { break-before: page; } h2.first { break-before: auto; }
  h3 { break-after: avoid; } table, svg { break-inside: avoid; } }
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
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" width="{_num(TREND_W)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(TREND_W)} {_num(height)}" role="img">',
        f"<title>{_e(title)}</title>",
        f'<line x1="{_num(PAD)}" y1="{_num(y(0))}" x2="{_num(PAD + plot_w)}" y2="{_num(y(0))}" '
        'stroke="#999"/>',
        f'<text x="2" y="{_num(PAD - 12)}" class="axis">OEE (%)</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0) if top <= 1.0 else (0.0, top / 2, top):
        out.append(
            f'<text x="2" y="{_num(y(tick) + 4)}">{tick * 100:.0f} %</text>'
            f'<line x1="{_num(PAD)}" y1="{_num(y(tick))}" x2="{_num(PAD + plot_w)}" '
            f'y2="{_num(y(tick))}" stroke="#eee"/>'
        )
    step = max(1, math.ceil(n / 12))  # at most 12 labels: they must not overlap
    for i, hour in enumerate(hours):
        if i % step == 0:
            out.append(
                f'<text x="{_num(x(i) - 14)}" y="{_num(PAD + plot_h + 16)}">'
                f"{_e(label(hour))}</text>"
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
                    f'<polygon class="outlier" points="{_num(a - 5)},{_num(b + 6)} '
                    f'{_num(a + 5)},{_num(b + 6)} {_num(a)},{_num(b - 3)}" fill="{colour}" '
                    f'data-series="{_e(name)}" data-value="{v!r}"/>'
                    f'<text x="{_num(a + 7)}" y="{_num(b + 4)}">{percent(v)}</text>'
                )
                continue
            out.append(
                f'<circle class="point" cx="{_num(x(i))}" cy="{_num(y(v))}" r="3" '
                f'fill="{colour}" data-series="{_e(name)}" data-value="{v!r}"/>'
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
            f'<text x="{_num(PAD + 18)}" y="{_num(ly + 14)}">{_e(name)}</text>'
        )
    for k, (name, value) in enumerate(targets):
        drawn = [n for n, _ in series]
        colour = COLOURS[drawn.index(name) % len(COLOURS)] if name in drawn else "#333"
        out.append(
            f'<line class="target" x1="{_num(PAD)}" y1="{_num(y(value))}" '
            f'x2="{_num(PAD + plot_w)}" y2="{_num(y(value))}" stroke="{colour}" '
            f'stroke-dasharray="6 4" data-series="{_e(name)}" data-value="{value!r}"/>'
        )
        ly = TREND_H + (len(series) + k) * ROW_H
        out.append(
            f'<line x1="{_num(PAD)}" y1="{_num(ly + 10)}" x2="{_num(PAD + 12)}" '
            f'y2="{_num(ly + 10)}" stroke="{colour}" stroke-dasharray="3 2"/>'
            f'<text x="{_num(PAD + 18)}" y="{_num(ly + 14)}">target {_e(name)} '
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
        f'<svg xmlns="http://www.w3.org/2000/svg" class="pareto" width="{_num(PARETO_W)}" '
        f'height="{_num(PARETO_H)}" viewBox="0 0 {_num(PARETO_W)} {_num(PARETO_H)}" role="img">',
        f"<title>{_e(title)}</title>",
        f'<line x1="{_num(left0)}" y1="{_num(base)}" x2="{_num(left0 + plot_w)}" '
        f'y2="{_num(base)}" stroke="#999"/>',
        f'<text x="2" y="{_num(PAD - 14)}" class="axis">downtime (min)</text>',
        f'<text x="{_num(left0 + plot_w - 70)}" y="{_num(PAD - 14)}" class="axis">'
        "cumulative (%)</text>",
    ]
    if ranked:
        minutes = 0.0
        while minutes * 60 <= top_s + 1e-9:
            ty = base - plot_h * minutes * 60 / top_s
            out.append(
                f'<text x="2" y="{_num(ty + 4)}">{minutes:g}</text>'
                f'<line x1="{_num(left0)}" y1="{_num(ty)}" x2="{_num(left0 + plot_w)}" '
                f'y2="{_num(ty)}" stroke="#eee"/>'
            )
            minutes += tick_min
        for share in (0.5, 1.0):
            ty = base - plot_h * share
            out.append(
                f'<text x="{_num(left0 + plot_w + 4)}" y="{_num(ty + 4)}">{share * 100:.0f} %'
                "</text>"
            )
    points = []
    for i, (reason, seconds, cumulative) in enumerate(ranked):
        h = plot_h * seconds / top_s
        left = left0 + i * slot + slot * 0.15
        centre = left0 + (i + 0.5) * slot
        out.append(
            f'<rect class="bar" x="{_num(left)}" y="{base - h:.3f}" width="{_num(slot * 0.7)}" '
            f'height="{h:.3f}" fill="{COLOURS[3]}" data-reason="{_e(reason)}" '
            f'data-value="{seconds!r}"><title>{_e(reason)}: {_e(duration(seconds))}</title></rect>'
        )
        stops_text = ""
        if stops is not None and reason in stops:
            stops_text = f" ×{stops[reason]}"
        out.append(
            f'<text x="{_num(left)}" y="{_num(base - h - 4)}">{_e(duration(seconds))}'
            f"{_e(stops_text)}</text>"
            f'<text class="reason" transform="translate({_num(centre)},{_num(base + 10)}) '
            f'rotate(35)">{_e(reason[:24])}</text>'
        )
        points.append((centre, base - plot_h * cumulative, cumulative))
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


def _nice(x: float) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) of at least `x`."""
    if x <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * power >= x:
            return float(m * power)
    return float(10 * power)


# ---------------------------------------------------------------------------------------------
# What the plant manager acts on: targets, the loss waterfall, the timeline, outlier-proof axes


@dataclass(frozen=True, slots=True)
class Target:
    """A machine's targets (`[machines.kpi] target_oee`, `target_output`); None: not set."""

    oee: float | None = None
    output: float | None = None  # good units per shift


@dataclass(frozen=True, slots=True)
class Extras:
    """What the report shows beyond the windows: targets per machine, the state timeline, the
    shifts before (for the comparison) and the names of product codes per machine."""

    targets: Mapping[str, Target] = field(default_factory=dict)
    timeline: Timeline | None = None
    history: Sequence[KpiWindow] = ()
    products: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    counters: Mapping[str, Collection[str]] = field(default_factory=dict)  # configured, per machine


def axis_top(values: Iterable[float | None], floor: float = 1.0) -> float:
    """The top of a value axis that one outlier cannot flatten: the 95th percentile (nearest
    rank, rounded down) of the defined values, at least `floor`. Values above it are drawn at
    the top edge and marked, with their value written out."""
    defined = sorted(v for v in values if v is not None and math.isfinite(v))
    if not defined:
        return floor
    rank = math.floor(0.95 * (len(defined) - 1))
    return max(floor, defined[rank])


def waterfall(w: KpiWindow) -> list[tuple[str, float]]:
    """The loss waterfall of a window in seconds: known planned time, then each loss (negative)
    and what is left, fully productive time (good units at the ideal cycle time). The steps add
    up: planned + losses = fully productive, and fully productive / planned is the OEE."""
    c, losses = w.components, w.losses
    planned = max(float(c["planned_s"]) - float(c["unknown_s"]), 0.0)
    steps = [
        ("breakdowns", losses.get("breakdowns", 0.0)),
        ("setup, changeover", losses.get("setup_adjustments", 0.0)),
        ("small stops, waiting", losses.get("small_stops", 0.0)),
        ("reduced speed", losses.get("reduced_speed", 0.0)),
        ("quality losses", losses.get("process_defects", 0.0) + losses.get("reduced_yield", 0.0)),
    ]
    out = [("planned (known)", planned)]
    left = planned
    for label, seconds in steps:
        take = min(float(seconds), left)  # never below zero (P > 100 % adds no time)
        out.append((label, -take))
        left -= take
    out.append(("fully productive", left))
    return out


def waterfall_chart(steps: Sequence[tuple[str, float]], *, title: str) -> str:
    """Horizontal waterfall: the first and last bars from 0, each loss a bar hanging from
    where the previous step left off; time in hours and the share of planned time."""
    planned = steps[0][1] if steps else 0.0
    width, label_w, bar_w = 640.0, 150.0, 330.0
    height = ROW_H * len(steps) + 30
    scale = bar_w / planned if planned > 0 else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" width="{_num(width)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(width)} {_num(height)}" role="img">',
        f"<title>{_e(title)}</title>",
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
            f'<text x="0" y="{_num(y + 15)}">{_e(label)}</text>'
            f'<rect class="step" x="{_num(label_w + left * scale)}" y="{_num(y + 3)}" '
            f'width="{size * scale:.3f}" height="{_num(ROW_H - 6)}" fill="{colour}" '
            f'data-step="{_e(label)}" data-value="{seconds!r}"/>'
            f'<text x="{_num(label_w + bar_w + 8)}" y="{_num(y + 15)}">'
            f"{'−' if seconds < 0 else ''}{_e(duration(abs(seconds)))}{share}</text>"
        )
    axis_y = 5 + len(steps) * ROW_H + 14
    out.append(
        f'<text x="{_num(label_w)}" y="{_num(axis_y)}" class="axis">time (h:min), share of '
        "known planned time</text></svg>"
    )
    return "\n".join(out)


# Colours of the timeline: running green, planned stops grey, unknown pale; each stop reason
# its own colour (reds for breakdowns, blues for setup, ambers for waiting) so a repeated
# stop stands out.
STATE_COLOURS = {"running": "#2ca02c", "planned_stop": "#9e9e9e", "unknown": "#e6e6e6"}
STOP_PALETTES = {
    "down": ("#d62728", "#8c1a1a", "#ff6f61", "#e377c2", "#b2182b", "#f4a582"),
    "setup": ("#1f77b4", "#6baed6", "#08519c", "#9467bd"),
    "idle": ("#ff9f1c", "#ffd166", "#c07a00", "#bcbd22"),
}
GANTT_W, GANTT_LABEL = 640.0, 110.0


def first_local_hour(t_ns: int, zone: tzinfo) -> int:
    """The first instant at or after `t_ns` where the local clock shows a whole hour."""
    local = datetime.fromtimestamp(t_ns // 1_000_000_000, tz=UTC).astimezone(zone)
    past = (local.minute * 60 + local.second) * 1_000_000_000 + t_ns % 1_000_000_000
    return t_ns if past == 0 else t_ns - past + HOUR_NS


def timeline_colours(rows: Mapping[str, Sequence[Segment]]) -> dict[str, str]:
    """A colour per key of the segments ("running", "down: die jam"): stops by reason, the
    reason with the most time getting the first colour of its category."""
    seconds: dict[str, float] = {}
    for segments in rows.values():
        for s in segments:
            seconds[s.key] = seconds.get(s.key, 0.0) + s.seconds
    out = {k: STATE_COLOURS[k] for k in seconds if k in STATE_COLOURS}
    used: dict[str, int] = {}
    for key in sorted(seconds, key=lambda k: (-seconds[k], k)):
        category = key.split(":", 1)[0]
        if category in STOP_PALETTES:
            palette = STOP_PALETTES[category]
            out[key] = palette[used.get(category, 0) % len(palette)]
            used[category] = used.get(category, 0) + 1
    return out


def gantt_chart(
    rows: Mapping[str, Sequence[Segment]],
    start_ns: int,
    end_ns: int,
    zone: tzinfo,
    *,
    title: str,
    products: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """A row per machine over the shift, a bar per stretch in the colour of its state or stop
    reason, a thin band below naming the product (when the machine has a product tag); hour
    ticks in local time, then the legend with the time of each colour."""
    colours = timeline_colours(rows)
    plot_w = GANTT_W - GANTT_LABEL - 20  # room for the last hour's label
    span = max(end_ns - start_ns, 1)
    row_h = 30.0
    top = 18.0

    def x(t: int) -> float:
        return GANTT_LABEL + plot_w * (t - start_ns) / span

    keys = sorted(colours, key=lambda k: (k.split(":")[0], k))
    legend_rows = math.ceil(len(keys) / 2)
    height = top + row_h * len(rows) + 22 + legend_rows * 16 + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{_num(GANTT_W)}" '
        f'height="{_num(height)}" viewBox="0 0 {_num(GANTT_W)} {_num(height)}" role="img">',
        f"<title>{_e(title)}</title>",
    ]
    # Hour ticks on the local clock's whole hours (a +05:30 zone's are at UTC half hours).
    hour = HOUR_NS
    for t in range(first_local_hour(start_ns, zone), end_ns + 1, hour):
        label = datetime.fromtimestamp(t / 1e9, tz=UTC).astimezone(zone).strftime("%H:%M")
        out.append(
            f'<line x1="{_num(x(t))}" y1="{_num(top - 4)}" x2="{_num(x(t))}" '
            f'y2="{_num(top + row_h * len(rows))}" stroke="#ddd"/>'
            f'<text x="{_num(x(t))}" y="{_num(top - 6)}" text-anchor="middle">{label}</text>'
        )
    names = products or {}
    for i, (machine, segments) in enumerate(rows.items()):
        y = top + i * row_h
        out.append(f'<text x="0" y="{_num(y + 14)}">{_e(machine[:16])}</text>')
        for s in segments:
            what = s.key if s.planned else f"{s.key} (outside planned time)"
            known = names.get(machine, {}).get(str(s.product)) if s.product is not None else None
            product = "" if s.product is None else f", {known or f'product {s.product}'}"
            tip = f"{what}{product}: {duration(s.seconds)}"
            out.append(
                f'<rect class="segment" x="{_num(x(s.start_ns))}" y="{_num(y + 2)}" '
                f'width="{x(s.end_ns) - x(s.start_ns):.3f}" height="18" '
                f'fill="{colours.get(s.key, "#e6e6e6")}" '
                f'fill-opacity="{"1" if s.planned else "0.45"}" data-key="{_e(s.key)}" '
                f'data-machine="{_e(machine)}"><title>{_e(tip)}</title></rect>'
            )
        # The product band: alternating shades, the product's name where it fits.
        band: list[tuple[int, int, int | None]] = []
        for s in segments:
            if s.product is None:
                continue
            if band and band[-1][2] == s.product and band[-1][1] == s.start_ns:
                band[-1] = (band[-1][0], s.end_ns, s.product)
            else:
                band.append((s.start_ns, s.end_ns, s.product))
        for j, (a, b, code) in enumerate(band):
            name = names.get(machine, {}).get(str(code), f"product {code}")
            out.append(
                f'<rect class="product" x="{_num(x(a))}" y="{_num(y + 21)}" '
                f'width="{x(b) - x(a):.3f}" height="6" fill="{"#555" if j % 2 else "#999"}">'
                f"<title>{_e(name)}</title></rect>"
            )
    legend_y = top + row_h * len(rows) + 14
    out.append(f'<text x="0" y="{_num(legend_y)}" class="axis">time of day (local)</text>')
    for k, key in enumerate(keys):
        lx = GANTT_LABEL + (k % 2) * (plot_w / 2)
        ly = legend_y + 6 + (k // 2) * 16
        total = sum(s.seconds for segs in rows.values() for s in segs if s.key == key)
        out.append(
            f'<rect x="{_num(lx)}" y="{_num(ly)}" width="10" height="10" '
            f'fill="{colours[key]}"/>'
            f'<text x="{_num(lx + 14)}" y="{_num(ly + 9)}">{_e(key[:34])} '
            f"{_e(duration(total))}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)


def targets_table(rows: Sequence[KpiWindow], targets: Mapping[str, Target]) -> str:
    """Plan against actual per machine: OEE and its target, good units and the plan (pro rata
    while the shift runs), energy per good unit where an energy counter is mapped."""
    head = ("", "OEE", "target", "vs target", "good", "plan", "vs plan", "energy / good unit")
    out = ['<table class="targets">', "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for w in rows:
        if w.scope != "machine":
            continue
        t = targets.get(w.label, Target())
        oee = w.classic.get("oee")
        gap = (
            f"{(oee - t.oee) * 100:+.1f} pp" if oee is not None and t.oee is not None else UNDEFINED
        )
        plan = t.output
        if plan is not None and not w.complete and w.as_of_ns is not None:
            plan *= max(0.0, min(1.0, (w.as_of_ns - w.start_ns) / (w.end_ns - w.start_ns)))
        good = w.components.get("good")
        versus = f"{(good - plan) / plan * 100:+.1f} %" if plan and good is not None else UNDEFINED
        energy = w.classic.get("energy_per_good")
        cells = [
            w.label,
            percent(oee),
            percent(t.oee),
            gap,
            count(good),
            count(round(plan)) if plan is not None else UNDEFINED,
            versus,
            f"{energy:.3f} kWh" if energy is not None else UNDEFINED,
        ]
        cls = ""
        if oee is not None and t.oee is not None:
            cls = ' class="below"' if oee < t.oee else ' class="above"'
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


ISO_ROWS = (
    ("availability", "availability", "%"),
    ("effectiveness", "effectiveness", "%"),
    ("quality_ratio", "quality ratio", "%"),
    ("oee_index", "OEE index", "%"),
    ("nee_index", "NEE index", "%"),
    ("teep", "TEEP", "%"),
    ("utilization_efficiency", "utilisation efficiency", "%"),
    ("allocation_efficiency", "allocation efficiency", "%"),
    ("allocation_ratio", "allocation ratio", "%"),
    ("production_process_ratio", "production process ratio", "%"),
    ("technical_efficiency", "technical efficiency", "%"),
    ("setup_rate", "setup rate", "%"),
    ("scrap_ratio", "scrap ratio", "%"),
    ("rework_ratio", "rework ratio", "%"),
    ("first_pass_yield", "first pass yield", "%"),
    ("throughput_rate", "throughput rate (units/h)", "n"),
    ("mtbf_s", "MTBF", "t"),
    ("mttr_s", "MTTR", "t"),
)


def iso_table(rows: Sequence[KpiWindow], stops: Mapping[str, int]) -> str:
    """The ISO 22400-2 set, a column per machine and line, with the stops counted."""
    out = ['<table class="iso">', "<tr><th>ISO 22400-2</th>"]
    out[-1] += "".join(f"<th>{_e(_row_name(w))}</th>" for w in rows) + "</tr>"
    for key, label, unit in ISO_ROWS:
        cells = []
        for w in rows:
            v = w.iso22400.get(key)
            if unit == "%":
                cells.append(percent(v))
            elif unit == "t":
                cells.append(duration(v))
            else:
                cells.append(UNDEFINED if v is None or w.scope != "machine" else f"{v:,.1f}")
        out.append(
            f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
        )
    failures = [str(int(w.components.get("failures", 0))) for w in rows]
    out.append("<tr><td>failures (into down)</td>" + "".join(f"<td>{f}</td>" for f in failures))
    counted = [str(stops.get(_row_name(w), 0)) if stops else UNDEFINED for w in rows]
    out.append("<tr><td>stops (all reasons)</td>" + "".join(f"<td>{c}</td>" for c in counted))
    out.append("</table>")
    return "\n".join(out)


def _row_name(w: KpiWindow) -> str:
    return w.label if w.scope == "machine" else f"line {w.line}"


def split_stops(down_by_reason: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """The stops of a window as (unplanned: breakdowns and waiting, changeovers: setup), keyed
    as the engine keys them ("down: die jam")."""
    unplanned = {k: v for k, v in down_by_reason.items() if not k.startswith("setup:")}
    changeovers = {k: v for k, v in down_by_reason.items() if k.startswith("setup:")}
    return unplanned, changeovers


def products_table(
    machine: str,
    segments: Sequence[Segment],
    counts: Sequence[Count],
    counters: Collection[str],
    names: Mapping[str, str],
) -> str:
    """One machine's figures per product in planned time: time per state, counts, A, P, Q, OEE
    of the time each product ran."""
    table = per_product(segments, counts, counters)
    head = ("product", "run", "down", "setup", "idle", "unknown", "total", "good", "A", "P",
            "Q", "OEE")  # fmt: skip
    out = [
        f'<table class="products" data-machine="{_e(machine)}">',
        "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>",
    ]
    for code in sorted(table, key=lambda c: (c is None, c or 0)):
        t = table[code]
        name = "no product" if code is None else product_name(code, names)
        cells = [
            name,
            *(duration(t.get(k) or 0.0) for k in ("running", "down", "setup", "idle", "unknown")),
            count(t["total"]),
            count(t["good"]),
            *(percent(t[k]) for k in ("availability", "performance", "quality", "oee")),
        ]
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The page


def _summary(rows: Sequence[KpiWindow]) -> str:
    """Two tables so each fits an A4 page: the figures and counts, then where the time went
    with the flags."""
    figures = ("", "A", "P", "Q", "OEE", "total", "good", "reject", "rework")
    times = ("", "run", "down", "setup", "idle", "unknown", "flags")
    out = ['<table class="summary">', "<tr>" + "".join(f"<th>{h}</th>" for h in figures) + "</tr>"]
    second = ['<table class="times">', "<tr>" + "".join(f"<th>{h}</th>" for h in times) + "</tr>"]
    for w in rows:
        k, c = w.classic, w.components
        cls = ' class="line"' if w.scope == "line" else ""
        cells = [
            _row_name(w),
            percent(k["availability"]),
            percent(k["performance"]),
            percent(k["quality"]),
            percent(k["oee"]),
            count(c["total"]),
            count(c["good"]),
            count(c["reject"]),
            count(c.get("rework")),
        ]
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
        cells = [
            _row_name(w),
            duration(c["running_s"]),
            duration(c["down_s"]),
            duration(c["setup_s"]),
            duration(c["idle_s"]),
            unknown_text(w),
        ]
        row = "".join(f"<td>{_e(x)}</td>" for x in cells)
        row += f'<td class="flags">{_e(", ".join(flag_texts(w)))}</td>'
        second.append(f"<tr{cls}>{row}</tr>")
    return "\n".join([*out, "</table>", *second, "</table>"])


def _losses(rows: Sequence[KpiWindow]) -> str:
    """The six big losses in time and as a share of known planned time."""
    names = ("breakdowns", "setup_adjustments", "small_stops", "reduced_speed",
             "process_defects", "reduced_yield")  # fmt: skip
    out = [
        '<table class="losses">',
        "<tr><th></th>" + "".join(f"<th>{n.replace('_', ' ')}</th>" for n in names) + "</tr>",
    ]
    for w in rows:
        label = w.label if w.scope == "machine" else f"line {w.line}"
        planned = float(w.components["planned_s"]) - float(w.components["unknown_s"])
        cells = []
        for n in names:
            seconds = w.losses.get(n, 0.0)
            share = f" ({seconds / planned * 100:.1f} %)" if planned > 0 else ""
            cells.append(f"<td>{_e(duration(seconds))}{share}</td>")
        out.append(f"<tr><td>{_e(label)}</td>{''.join(cells)}</tr>")
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


def _changeovers(rows: Sequence[KpiWindow], stops: Mapping[str, Mapping[str, int]]) -> str:
    """Planned changeovers and setup, apart from the breakdowns: time and count per reason."""
    out = ['<table class="changeovers">', "<tr><th></th><th>reason</th><th>time</th>"
           "<th>stops</th></tr>"]  # fmt: skip
    found = False
    for w in rows:
        _, setups = split_stops(w.components.get("down_by_reason", {}))
        for reason, seconds, _ in pareto(setups):
            found = True
            n = stops.get(_row_name(w), {}).get(reason)
            cells = [_row_name(w), reason.removeprefix("setup: "), duration(seconds),
                     UNDEFINED if n is None else str(n)]  # fmt: skip
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out) if found else '<p class="note">No changeover or setup time.</p>'


def _stop_counts(
    rows: Sequence[KpiWindow], segments: Mapping[str, Sequence[Segment]]
) -> dict[str, dict[str, int]]:
    """Stops per reason key per row name (a line sums its machines)."""
    out: dict[str, dict[str, int]] = {}
    for w in rows:
        if w.scope == "machine":
            out[_row_name(w)] = stop_counts(segments.get(w.label, []))
    for w in rows:
        if w.scope == "line":
            summed: dict[str, int] = {}
            for m in rows:
                if m.scope == "machine" and m.line == w.line:
                    for k, v in out.get(_row_name(m), {}).items():
                        summed[k] = summed.get(k, 0) + v
            out[_row_name(w)] = summed
    return out


def _history(
    shift: KpiWindow, rows: Sequence[KpiWindow], extras: Extras
) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """OEE of the same rows in the windows of the same kind before this one, then this one."""
    before = [h for h in extras.history if h.kind == shift.kind and h.start_ns < shift.start_ns]
    windows = [*sorted({(h.start_ns, h.name) for h in before}), (shift.start_ns, shift.name)]
    names = [n for _, n in windows]
    by = {(h.scope, h.label, h.name): h.classic["oee"] for h in [*before, *rows]}
    series = [(_row_name(w), [by.get((w.scope, w.label, n)) for n in names]) for w in rows]
    return names, series


def _shift_label(name: str) -> str:
    """A shift's axis label: "11-23/A" (a day: "11-23")."""
    return name[5:]


def _section(
    rows: Sequence[KpiWindow], hours: Sequence[KpiWindow], zone: tzinfo, extras: Extras
) -> list[str]:
    """Everything about one shift (or day)."""
    first = rows[0]
    name = first.name
    end = first.end_ns if first.complete or first.as_of_ns is None else first.as_of_ns
    segments: dict[str, list[Segment]] = {}
    if extras.timeline is not None:
        for w in rows:
            if w.scope == "machine":
                segments[w.label] = extras.timeline.between(w.label, first.start_ns, end)
    stops = _stop_counts(rows, segments) if extras.timeline is not None else {}
    targets: list[tuple[str, float]] = []
    for w in rows:
        goal = extras.targets.get(w.label, Target()).oee if w.scope == "machine" else None
        if goal is not None:
            targets.append((_row_name(w), goal))
    parts = [_summary(rows), "<h3>Targets: plan against actual</h3>",
             targets_table(rows, extras.targets)]  # fmt: skip
    if segments:
        parts.append("<h3>Machine states over the shift</h3>")
        parts.append(
            gantt_chart(
                segments,
                first.start_ns,
                first.end_ns,
                zone,
                title=f"Machine states, {name}",
                products=extras.products,
            )
        )
    parts.append("<h3>Where the planned time went</h3>")
    for w in rows:
        parts.append(
            f'<figure><figcaption class="note">{_e(_row_name(w))}: OEE '
            f"{percent(w.classic['oee'])}</figcaption>"
            f"{waterfall_chart(waterfall(w), title=f'Losses, {_row_name(w)}')}</figure>"
        )
    parts.append("<h4>Six big losses</h4>")
    parts.append(_losses(rows))
    parts.append("<h3>Breakdowns and waiting by reason</h3>")
    for w in rows:
        unplanned, _ = split_stops(w.components.get("down_by_reason", {}))
        chart = pareto_chart(
            pareto(unplanned), title=f"Stops, {_row_name(w)}", stops=stops.get(_row_name(w))
        )
        parts.append(
            f'<figure><figcaption class="note">{_e(_row_name(w))}</figcaption>{chart}</figure>'
        )
    parts.append("<h3>Changeovers and setup</h3>")
    parts.append(_changeovers(rows, stops))
    parts.append("<h3>ISO 22400-2 KPIs, MTBF, MTTR, stops</h3>")
    parts.append(iso_table(rows, {k: sum(v.values()) for k, v in stops.items()}))
    names, series = _series(first, hours)
    parts.append("<h3>OEE hour by hour</h3>")
    if names:
        parts.append(trend_chart(names, series, title=f"Hourly OEE, {name}", targets=targets))
    else:
        parts.append('<p class="note">No hour of this shift has closed yet.</p>')
    parts.append("<h3>OEE per machine over the shift</h3>")
    bars = [(_row_name(w), w.classic["oee"]) for w in rows]
    parts.append(bar_chart(bars, title=f"OEE per machine, {name}"))
    if extras.history:
        names, series = _history(first, rows, extras)
        parts.append(f"<h3>This {_e(first.kind)} against the last 7 days</h3>")
        parts.append(
            trend_chart(
                names, series, title=f"OEE by {first.kind}", targets=targets, label=_shift_label
            )
        )
    if any(s.product is not None for segs in segments.values() for s in segs):
        parts.append("<h3>Per product</h3>")
        for machine, segs in segments.items():
            if any(s.product is not None for s in segs):
                parts.append(f"<h4>{_e(machine)}</h4>")
                assert extras.timeline is not None  # segments come from it
                counts = extras.timeline.counts_between(machine, first.start_ns, end)
                counters = extras.counters.get(machine, ("total", "good", "reject"))
                labels = extras.products.get(machine, {})
                parts.append(products_table(machine, segs, counts, counters, labels))
    return parts


def render(
    title: str,
    shifts: Sequence[KpiWindow],
    hours: Sequence[KpiWindow],
    zone: tzinfo,
    generated_ns: int,
    extras: Extras | None = None,
) -> str:
    """The HTML report of one or more shifts: per shift a summary table, targets against
    actual, the machine states over time, the loss waterfall and the six big losses, the stops
    by reason (breakdowns apart from changeovers), the ISO 22400 set, the hourly OEE trend,
    OEE per machine, the last 7 days and the time per product."""
    extras = extras or Extras()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">Generated {_e(local_time(generated_ns, zone))} ({_e(str(zone))}). '
        "OEE is the classic definition (availability × performance × quality); lines add "
        "their machines' times and ideal times. — marks a figure that is undefined (no planned "
        "time or no count), not zero. Times are h:min; shares are of known planned time.</p>",
    ]
    if not shifts:
        parts.append("<p>No figures for this period: no readings were stored.</p>")
    order: list[tuple[int, str]] = []
    for w in shifts:
        if (w.start_ns, w.name) not in order:
            order.append((w.start_ns, w.name))
    for i, (start_ns, name) in enumerate(sorted(order)):
        rows = [w for w in shifts if w.name == name and w.start_ns == start_ns]
        rows.sort(key=lambda w: (w.scope != "machine", w.label))
        first = rows[0]
        span = f"{local_time(first.start_ns, zone)} – {local_time(first.end_ns, zone)}"
        state = "" if first.complete else " (in progress)"
        cls = ' class="first"' if i == 0 else ""
        parts.append(f"<h2{cls}>{_e(first.kind)} {_e(name)}: {_e(span)}{state}</h2>")
        parts += _section(rows, hours, zone, extras)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

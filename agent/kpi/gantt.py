"""The shift report's timeline: a row per machine over the shift, a bar per stretch in the
colour of its state or stop reason, the product band below, hour ticks in local time. Pure:
segments in, SVG text out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, tzinfo

from agent.kpi.charts import esc, num
from agent.kpi.timeline import Segment
from agent.kpi.view import duration

HOUR_NS = 3600 * 1_000_000_000

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
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" width="{num(GANTT_W)}" '
        f'height="{num(height)}" viewBox="0 0 {num(GANTT_W)} {num(height)}" role="img">',
        f"<title>{esc(title)}</title>",
    ]
    # Hour ticks on the local clock's whole hours (a +05:30 zone's are at UTC half hours).
    hour = HOUR_NS
    for t in range(first_local_hour(start_ns, zone), end_ns + 1, hour):
        label = datetime.fromtimestamp(t / 1e9, tz=UTC).astimezone(zone).strftime("%H:%M")
        out.append(
            f'<line x1="{num(x(t))}" y1="{num(top - 4)}" x2="{num(x(t))}" '
            f'y2="{num(top + row_h * len(rows))}" stroke="#ddd"/>'
            f'<text x="{num(x(t))}" y="{num(top - 6)}" text-anchor="middle">{label}</text>'
        )
    names = products or {}
    for i, (machine, segments) in enumerate(rows.items()):
        y = top + i * row_h
        out.append(f'<text x="0" y="{num(y + 14)}">{esc(machine[:16])}</text>')
        for s in segments:
            what = s.key if s.planned else f"{s.key} (outside planned time)"
            known = names.get(machine, {}).get(str(s.product)) if s.product is not None else None
            product = "" if s.product is None else f", {known or f'product {s.product}'}"
            tip = f"{what}{product}: {duration(s.seconds)}"
            out.append(
                f'<rect class="segment" x="{num(x(s.start_ns))}" y="{num(y + 2)}" '
                f'width="{x(s.end_ns) - x(s.start_ns):.3f}" height="18" '
                f'fill="{colours.get(s.key, "#e6e6e6")}" '
                f'fill-opacity="{"1" if s.planned else "0.45"}" data-key="{esc(s.key)}" '
                f'data-machine="{esc(machine)}"><title>{esc(tip)}</title></rect>'
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
                f'<rect class="product" x="{num(x(a))}" y="{num(y + 21)}" '
                f'width="{x(b) - x(a):.3f}" height="6" fill="{"#555" if j % 2 else "#999"}">'
                f"<title>{esc(name)}</title></rect>"
            )
    legend_y = top + row_h * len(rows) + 14
    out.append(f'<text x="0" y="{num(legend_y)}" class="axis">time of day (local)</text>')
    for k, key in enumerate(keys):
        lx = GANTT_LABEL + (k % 2) * (plot_w / 2)
        ly = legend_y + 6 + (k // 2) * 16
        total = sum(s.seconds for segs in rows.values() for s in segs if s.key == key)
        out.append(
            f'<rect x="{num(lx)}" y="{num(ly)}" width="10" height="10" '
            f'fill="{colours[key]}"/>'
            f'<text x="{num(lx + 14)}" y="{num(ly + 9)}">{esc(key[:34])} '
            f"{esc(duration(total))}</text>"
        )
    out.append("</svg>")
    return "\n".join(out)

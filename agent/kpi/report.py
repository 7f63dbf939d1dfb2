"""The shift report (`lineside report`): one self-contained HTML file. Pure: windows in, text out.

The file must open anywhere, years later, on a PC without network: no script, no external
style sheet, font or image; the charts are inline SVG (charts.py, gantt.py), the tables HTML
(tables.py). This module assembles the document: per shift, which figures go where and in
what order. Every name that came from a config or a PLC (machines, lines, stop reasons) is
escaped, so a reason label like "<b>" shows as text. Undefined figures show as "—" and draw no
bar, never a bar of 0.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from agent.kpi.charts import (
    BAR_W,
    axis_top,
    bar_chart,
    esc,
    hour_label,
    pareto_chart,
    trend_chart,
    waterfall_chart,
)
from agent.kpi.gantt import first_local_hour, gantt_chart
from agent.kpi.losses import pareto
from agent.kpi.replay import KpiWindow
from agent.kpi.tables import (
    Target,
    changeovers_table,
    iso_table,
    losses_table,
    products_table,
    row_name,
    split_stops,
    summary_tables,
    targets_table,
)
from agent.kpi.timeline import Segment, Timeline, stop_counts
from agent.kpi.view import local_time, percent

# Where other modules and the tests import them from since the report was one module.
__all__ = [
    "BAR_W",
    "Extras",
    "Target",
    "axis_top",
    "bar_chart",
    "downtime",
    "first_local_hour",
    "gantt_chart",
    "hour_label",
    "pareto_chart",
    "render",
    "split_stops",
    "targets_table",
    "trend_chart",
    "waterfall",
    "waterfall_chart",
]

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


@dataclass(frozen=True, slots=True)
class Extras:
    """What the report shows beyond the windows: targets per machine, the state timeline, the
    shifts before (for the comparison) and the names of product codes per machine."""

    targets: Mapping[str, Target] = field(default_factory=dict)
    timeline: Timeline | None = None
    history: Sequence[KpiWindow] = ()
    products: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    counters: Mapping[str, Collection[str]] = field(default_factory=dict)  # configured, per machine


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


def _stop_counts(
    rows: Sequence[KpiWindow], segments: Mapping[str, Sequence[Segment]]
) -> dict[str, dict[str, int]]:
    """Stops per reason key per row name (a line sums its machines)."""
    out: dict[str, dict[str, int]] = {}
    for w in rows:
        if w.scope == "machine":
            out[row_name(w)] = stop_counts(segments.get(w.label, []))
    for w in rows:
        if w.scope == "line":
            summed: dict[str, int] = {}
            for m in rows:
                if m.scope == "machine" and m.line == w.line:
                    for k, v in out.get(row_name(m), {}).items():
                        summed[k] = summed.get(k, 0) + v
            out[row_name(w)] = summed
    return out


def _history(
    shift: KpiWindow, rows: Sequence[KpiWindow], extras: Extras
) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """OEE of the same rows in the windows of the same kind before this one, then this one."""
    before = [h for h in extras.history if h.kind == shift.kind and h.start_ns < shift.start_ns]
    windows = [*sorted({(h.start_ns, h.name) for h in before}), (shift.start_ns, shift.name)]
    names = [n for _, n in windows]
    by = {(h.scope, h.label, h.name): h.classic["oee"] for h in [*before, *rows]}
    series = [(row_name(w), [by.get((w.scope, w.label, n)) for n in names]) for w in rows]
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
            targets.append((row_name(w), goal))
    parts = [summary_tables(rows), "<h3>Targets: plan against actual</h3>",
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
            f'<figure><figcaption class="note">{esc(row_name(w))}: OEE '
            f"{percent(w.classic['oee'])}</figcaption>"
            f"{waterfall_chart(waterfall(w), title=f'Losses, {row_name(w)}')}</figure>"
        )
    parts.append("<h4>Six big losses</h4>")
    parts.append(losses_table(rows))
    parts.append("<h3>Breakdowns and waiting by reason</h3>")
    for w in rows:
        unplanned, _ = split_stops(w.components.get("down_by_reason", {}))
        chart = pareto_chart(
            pareto(unplanned), title=f"Stops, {row_name(w)}", stops=stops.get(row_name(w))
        )
        parts.append(
            f'<figure><figcaption class="note">{esc(row_name(w))}</figcaption>{chart}</figure>'
        )
    parts.append("<h3>Changeovers and setup</h3>")
    parts.append(changeovers_table(rows, stops))
    parts.append("<h3>ISO 22400-2 KPIs, MTBF, MTTR, stops</h3>")
    parts.append(iso_table(rows, {k: sum(v.values()) for k, v in stops.items()}))
    names, series = _series(first, hours)
    parts.append("<h3>OEE hour by hour</h3>")
    if names:
        parts.append(trend_chart(names, series, title=f"Hourly OEE, {name}", targets=targets))
    else:
        parts.append('<p class="note">No hour of this shift has closed yet.</p>')
    parts.append("<h3>OEE per machine over the shift</h3>")
    bars = [(row_name(w), w.classic["oee"]) for w in rows]
    parts.append(bar_chart(bars, title=f"OEE per machine, {name}"))
    if extras.history:
        names, series = _history(first, rows, extras)
        parts.append(f"<h3>This {esc(first.kind)} against the last 7 days</h3>")
        parts.append(
            trend_chart(
                names, series, title=f"OEE by {first.kind}", targets=targets, label=_shift_label
            )
        )
    if any(s.product is not None for segs in segments.values() for s in segs):
        parts.append("<h3>Per product</h3>")
        for machine, segs in segments.items():
            if any(s.product is not None for s in segs):
                parts.append(f"<h4>{esc(machine)}</h4>")
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
        f"<title>{esc(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">Generated {esc(local_time(generated_ns, zone))} ({esc(str(zone))}). '
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
        parts.append(f"<h2{cls}>{esc(first.kind)} {esc(name)}: {esc(span)}{state}</h2>")
        parts += _section(rows, hours, zone, extras)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"

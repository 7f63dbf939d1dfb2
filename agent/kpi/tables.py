"""The shift report's tables as HTML: the summary, targets against actual, the six big losses,
the changeovers, the ISO 22400-2 set and the figures per product. Pure: windows in, HTML out;
names from a config or a PLC are escaped, undefined figures show as "—".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from agent.kpi.charts import esc
from agent.kpi.config import product_name
from agent.kpi.losses import pareto
from agent.kpi.replay import KpiWindow
from agent.kpi.timeline import Count, Segment, per_product
from agent.kpi.view import UNDEFINED, count, duration, flag_texts, percent, unknown_text


@dataclass(frozen=True, slots=True)
class Target:
    """A machine's targets (`[machines.kpi] target_oee`, `target_output`); None: not set."""

    oee: float | None = None
    output: float | None = None  # good units per shift


def row_name(w: KpiWindow) -> str:
    """A row's name: the machine, or "line L" for a line's sum."""
    return w.label if w.scope == "machine" else f"line {w.line}"


def split_stops(down_by_reason: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """The stops of a window as (unplanned: breakdowns and waiting, changeovers: setup), keyed
    as the engine keys them ("down: die jam")."""
    unplanned = {k: v for k, v in down_by_reason.items() if not k.startswith("setup:")}
    changeovers = {k: v for k, v in down_by_reason.items() if k.startswith("setup:")}
    return unplanned, changeovers


def summary_tables(rows: Sequence[KpiWindow]) -> str:
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
            row_name(w),
            percent(k["availability"]),
            percent(k["performance"]),
            percent(k["quality"]),
            percent(k["oee"]),
            count(c["total"]),
            count(c["good"]),
            count(c["reject"]),
            count(c.get("rework")),
        ]
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>")
        cells = [
            row_name(w),
            duration(c["running_s"]),
            duration(c["down_s"]),
            duration(c["setup_s"]),
            duration(c["idle_s"]),
            unknown_text(w),
        ]
        row = "".join(f"<td>{esc(x)}</td>" for x in cells)
        row += f'<td class="flags">{esc(", ".join(flag_texts(w)))}</td>'
        second.append(f"<tr{cls}>{row}</tr>")
    return "\n".join([*out, "</table>", *second, "</table>"])


def losses_table(rows: Sequence[KpiWindow]) -> str:
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
            cells.append(f"<td>{esc(duration(seconds))}{share}</td>")
        out.append(f"<tr><td>{esc(label)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
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
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
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
    out[-1] += "".join(f"<th>{esc(row_name(w))}</th>" for w in rows) + "</tr>"
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
            f"<tr><td>{esc(label)}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
        )
    failures = [str(int(w.components.get("failures", 0))) for w in rows]
    out.append("<tr><td>failures (into down)</td>" + "".join(f"<td>{f}</td>" for f in failures))
    counted = [str(stops.get(row_name(w), 0)) if stops else UNDEFINED for w in rows]
    out.append("<tr><td>stops (all reasons)</td>" + "".join(f"<td>{c}</td>" for c in counted))
    out.append("</table>")
    return "\n".join(out)


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
        f'<table class="products" data-machine="{esc(machine)}">',
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
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def changeovers_table(rows: Sequence[KpiWindow], stops: Mapping[str, Mapping[str, int]]) -> str:
    """Planned changeovers and setup, apart from the breakdowns: time and count per reason."""
    out = ['<table class="changeovers">', "<tr><th></th><th>reason</th><th>time</th>"
           "<th>stops</th></tr>"]  # fmt: skip
    found = False
    for w in rows:
        _, setups = split_stops(w.components.get("down_by_reason", {}))
        for reason, seconds, _ in pareto(setups):
            found = True
            n = stops.get(row_name(w), {}).get(reason)
            cells = [row_name(w), reason.removeprefix("setup: "), duration(seconds),
                     UNDEFINED if n is None else str(n)]  # fmt: skip
            out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out) if found else '<p class="note">No changeover or setup time.</p>'

"""The shift report of a period, from the store: what `lineside report` writes and the status
page serves at `/reports/<shift>` (one code path, so both show the same figures).

One replay covers the period asked for, its hours and the 7 days before it (the comparison),
with the engine's timeline traced for the Gantt chart; `agent.kpi.report.render` draws it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC
from pathlib import Path

from agent.config.sections import Config
from agent.kpi.config import COUNTER_ROLES
from agent.kpi.period import Selection, hours_of, on_line, previous, select
from agent.kpi.replay import replay
from agent.kpi.report import Extras, Target, render
from agent.kpi.timeline import Timeline


def extras_of(config: Config) -> Extras:
    """The targets, product names and counters of every machine with KPIs (its
    `[machines.kpi]`)."""
    targets: dict[str, Target] = {}
    products: dict[str, dict[str, str]] = {}
    counters: dict[str, tuple[str, ...]] = {}
    for m in config.machines:
        if m.kpi is None:
            continue
        targets[m.name] = Target(m.kpi.target_oee, m.kpi.target_output)
        products[m.name] = dict(m.kpi.product_names)
        counters[m.name] = tuple(r for r in COUNTER_ROLES if getattr(m.kpi, r) is not None)
    return Extras(targets=targets, products=products, counters=counters)


def shift_report(
    config: Config,
    shift: str,
    now_ns: int,
    *,
    line: str | None = None,
    title: str | None = None,
    data_dir: Path | None = None,
) -> str:
    """The HTML report of `shift` (as `lineside report --shift` takes it: today, yesterday,
    current, a date or DATE/NAME). Raises SelectionError for a period that does not exist,
    StoreError for a store that cannot be read, ValueError without `[machines.kpi]`."""
    selection = select(config, shift, None, now_ns)
    hours = hours_of(config, selection, now_ns)
    before = previous(config, selection)
    timeline = Timeline()
    everything = Selection(selection.windows + hours.windows + before.windows)
    result = replay(config, everything, now_ns, data_dir=data_dir, trace=timeline)
    wanted = {(w.kind, w.name) for w in selection.windows}
    earlier = {(w.kind, w.name) for w in before.windows}
    # The report shows machines and lines (areas and the site are in `lineside oee`).
    picked = [w for w in result.windows if w.line is not None and on_line(line, w.line)]
    periods = [w for w in picked if (w.kind, w.name) in wanted]
    history = [w for w in picked if (w.kind, w.name) in earlier]
    hour_rows = [w for w in picked if w.kind == "hour"]
    extras = replace(extras_of(config), timeline=timeline, history=history)
    zone = config.calendar.zone if config.calendar is not None else UTC
    if title is None:
        title = f"{config.agent.id}: shift report {shift}" + (f", line {line}" if line else "")
    return render(title, periods, hour_rows, zone, now_ns, extras)

"""The KPIs on the command line: `oee` (tables or JSON) and `report` (one HTML file), both
replayed from the store for the period agent/kpi/period.py selects."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.exits import Refused, refusing, writing
from agent.cli.options import KpiConfig, LineOption, ShiftOption
from agent.cli.output import console, err_console, print_json
from agent.cli.store import store_here

if TYPE_CHECKING:
    from agent.config.sections import Config
    from agent.kpi.period import Scope, Selection
    from agent.kpi.replay import KpiWindow


def _replayed(
    config: Config, selection: Selection, scope: Scope, now_ns: int
) -> tuple[list[KpiWindow], list[str]]:
    """The windows selected, replayed from the store (a bar on long ranges) and kept to the
    scope, and the machines of the scope without readings."""
    from rich.progress import Progress

    from agent.kpi.replay import replay

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("replaying stored readings", total=None, visible=False)

        def progress(done: int, total: int) -> None:
            # Only long ranges get a bar: a short one is over before it could be read.
            bar.update(task, completed=done, total=total, visible=total > 20_000)

        result = replay(config, selection, now_ns, progress=progress)
    picked = [w for w in result.windows if scope.keeps(w)]
    return picked, [m for m in result.missing if m in scope.machines]


def oee(
    config_file: KpiConfig = Path("lineside.toml"),
    line: LineOption = None,
    machine: Annotated[str | None, typer.Option("--machine", help="Only this machine.")] = None,
    shift: ShiftOption = "today",
    window: Annotated[
        str | None,
        typer.Option("--window", help="shift, day or hour (default: shift; day without shifts)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Both definitions, as JSON.")] = False,
) -> None:
    """OEE per machine and line (A, P, Q, counts, times, top losses), replayed from the store."""
    import time

    from agent.config.loader import load_config
    from agent.kpi.period import SelectionError, scope_of, select, window_kind
    from agent.kpi.view import json_rows, tables
    from agent.timerange import plant_zone, zone_name

    config = load_config(config_file)
    with refusing(SelectionError):
        scope = scope_of(config, line, machine)
        kind = window_kind(window)
    store_here(config.agent.data_dir, "has the agent run with this config?", whole=True)
    now_ns = time.time_ns()
    with refusing(SelectionError):
        selection = select(config, shift, kind, now_ns)
    windows, missing = _replayed(config, selection, scope, now_ns)
    if as_json:
        print_json({"windows": json_rows(windows), "no_readings": missing})
        return
    zone = plant_zone(config)
    for part in tables(windows, zone):
        console.print(part)
    console.print(f"times in {zone_name(zone)}", markup=False, style="dim")
    if not windows:
        console.print("no KPI figures for this period")
    for name in missing:
        console.print(f"{name}: no readings stored for this period", markup=False)


def report(
    config_file: KpiConfig = Path("lineside.toml"),
    shift: ShiftOption = "today",
    line: LineOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
) -> None:
    """Write a shift report as one HTML file: targets, machine states, losses, Pareto, trends."""
    import time

    from agent.config.loader import load_config
    from agent.kpi.document import shift_report
    from agent.kpi.period import SelectionError, scope_of

    config = load_config(config_file)
    if not out.parent.is_dir():
        raise Refused(f"{out}: no such directory: {out.parent}")
    with refusing(SelectionError):
        scope_of(config, line)
    store_here(config.agent.data_dir, "has the agent run with this config?", whole=True)
    with refusing(SelectionError):
        html = shift_report(config, shift, time.time_ns(), line=line)
    with writing(out):
        out.write_text(html, encoding="utf-8")
    console.print(str(out), markup=False, highlight=False, soft_wrap=True)

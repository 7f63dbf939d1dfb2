"""The `lineside oee` table and JSON rows, from windows built with the real KPI maths."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from agent.kpi.formulas import Components
from agent.kpi.replay import KpiWindow
from agent.kpi.view import count, duration, json_row, json_rows, percent, tables, top_losses
from tests.agent.kpi.windows import kpi_window

S = 1_000_000_000
START = 1_795_384_800 * S  # 2026-11-23 06:00 Asia/Shanghai


def window(
    c: Components, machine: str | None = "press1", name: str = "2026-11-23/A", **kw: object
) -> KpiWindow:
    end = START + 8 * 3600 * S
    return kpi_window(c, machine, "stamping/body-line-1", "shift", name, START, end, **kw)


# The oee.com shift (docs/kpi.md, "Worked example") with two stop reasons.
OEE_COM = Components(
    calendar_s=28_800,
    planned_s=25_200,
    running_s=22_380,
    down_s=2_820,
    total=19_271,
    good=18_848,
    reject=423,
    ideal_s=19_271,
    down_by_reason={"die jam": 1_800, "feeder": 720, "<script>": 300},
)


def render(windows: list[KpiWindow], width: int = 260) -> str:
    console = Console(record=True, width=width, color_system=None)
    for t in tables(windows, ZoneInfo("Asia/Shanghai")):
        console.print(t)
    return console.export_text()


def test_table_shows_the_classic_figures_counts_and_times() -> None:
    text = render([window(OEE_COM)])
    assert "shift 2026-11-23/A (2026-11-23 06:00 – 2026-11-23 14:00)" in text
    row, time = (line for line in text.splitlines() if "press1" in line)
    for cell in ("88.8 %", "86.1 %", "97.8 %", "74.8 %", "19,271", "18,848", "423"):
        assert cell in row, cell
    assert "6h 13m" in time  # 22 380 s run
    assert "47m 00s" in time  # down
    # Top 3 losses, largest first, each with its share of the downtime.
    assert "die jam 30m 00s (64 %); feeder 12m 00s (26 %); <script> 5m 00s (11 %)" in time


def test_undefined_figures_show_a_dash_never_zero() -> None:
    nothing = Components(calendar_s=3600)  # no planned time: A, P, Q, OEE undefined
    text = render([window(nothing)])
    row = next(line for line in text.splitlines() if "press1" in line)
    assert row.count("—") == 4
    assert "0.0 %" not in row
    assert "press1: no planned time" in text
    # Planned time and no part: OEE is a true 0 while P and Q stay undefined.
    idle = Components(calendar_s=3600, planned_s=3600, idle_s=3600)
    row = next(line for line in render([window(idle)]).splitlines() if "press1" in line)
    assert "0.0 %" in row and row.count("—") == 2


def test_flags_are_shown_next_to_the_figures() -> None:
    fast = Components(
        calendar_s=3600, planned_s=3600, running_s=3000, unknown_s=600, total=4000, good=4000,
        ideal_s=4000,
    )  # fmt: skip
    text = render([window(fast)])
    row = next(line for line in text.splitlines() if "press1" in line)
    assert "133.3 % !" in row  # uncapped, marked
    assert "press1: P > 100 %, unknown time" in text
    time = [line for line in text.splitlines() if "press1" in line][1]
    assert "10m 00s" in time  # how much is unknown


def test_one_table_per_window_machines_then_the_line() -> None:
    other = window(OEE_COM, name="2026-11-24/A")
    rows = [window(OEE_COM), window(OEE_COM, machine="press2"), window(OEE_COM, machine=None)]
    text = render([*rows, other])
    assert text.count("shift 2026-11-23/A") == 1 and text.count("shift 2026-11-24/A") == 1
    first = text.split("shift 2026-11-24/A")[0]
    assert first.index("press1") < first.index("press2") < first.index("line body-line-1")


def test_in_progress_windows_say_so() -> None:
    live = window(OEE_COM, complete=False, as_of_ns=START + 3600 * S)
    assert "in progress as of 2026-11-23 07:00" in render([live])


def test_json_rows_carry_both_definitions_and_null_for_undefined() -> None:
    rows = json_rows([window(OEE_COM), window(Components())])
    text = json.dumps(rows)  # plain JSON data
    back = json.loads(text)
    assert back[0]["kpis"]["classic"]["oee"] == pytest.approx(0.747937, abs=1e-6)
    assert back[0]["kpis"]["iso22400"]["oee_index"] == pytest.approx(0.747937, abs=1e-6)
    assert back[0]["window"] == {
        "kind": "shift", "name": "2026-11-23/A", "start_ns": START,
        "end_ns": START + 8 * 3600 * S,
    }  # fmt: skip
    assert back[0]["pareto"][0] == {
        "reason": "die jam", "seconds": 1800.0, "cumulative_share": pytest.approx(1800 / 2820)
    }  # fmt: skip
    assert back[1]["kpis"]["classic"]["oee"] is None
    assert back[1]["flags"] == ["no_planned_time"]
    assert json_row(window(OEE_COM, machine=None))["scope"] == "line"


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "—"), (float("nan"), "—"), (0.0, "0.0 %"), (0.747937, "74.8 %"), (1.3, "130.0 %")],
)
def test_percent(value: float | None, text: str) -> None:
    assert percent(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (59.6, "1m 00s"), (3599.0, "59m 59s"), (22_380.0, "6h 13m"), (None, "—")],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_counts_and_top_losses() -> None:
    assert count(19_271.0) == "19,271" and count(12.345) == "12.35"
    assert count(float("inf")) == "—"
    assert top_losses(window(OEE_COM), top=1) == ["die jam 30m 00s (64 %)"]
    assert top_losses(window(Components())) == []


def test_tables_fit_an_80_column_terminal() -> None:
    text = render([window(OEE_COM)], width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    figures = next(line for line in text.splitlines() if "press1" in line)
    for cell in ("88.8 %", "86.1 %", "97.8 %", "74.8 %", "19,271", "18,848", "423"):
        assert cell in figures, cell  # nothing cut short

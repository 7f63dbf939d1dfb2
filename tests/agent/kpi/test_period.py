"""Which period and which machines a KPI command computes (agent/kpi/period.py): pure, from a
config and the time now, no store."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import Config, load_config
from agent.kpi.period import (
    Scope,
    SelectionError,
    hours_of,
    local_date,
    previous,
    scope_of,
    select,
    window_kind,
)

S = 1_000_000_000
ZONE = ZoneInfo("Asia/Shanghai")
NOW = int(datetime(2026, 11, 27, 12, 0, tzinfo=ZONE).timestamp()) * S
CALENDAR = """[calendar]
timezone = "Asia/Shanghai"
days_off = ["2026-11-24"]

[[calendar.shifts]]
name = "A"
start = "06:00"
end = "08:00"
days = ["mon", "tue", "wed", "thu", "fri"]
breaks = [{ start = "07:00", end = "07:10" }]

[[calendar.shifts]]
name = "N"
start = "22:00"
end = "02:00"
days = ["mon", "tue", "wed", "thu", "fri"]
"""
KPI = """[machines.kpi]
state = "state"
states = { running = [1], idle = [2], down = [3] }
total = "parts"
good = "good"
ideal_cycle_time = "2s"
"""


def machine(name: str, line: str, kpi: bool) -> str:
    text = f'[[machines]]\nname = "{name}"\narea = "stamping"\nline = "{line}"\n'
    return text + (KPI if kpi else "")


def source(name: str, unit: int) -> str:
    return (
        f'[[sources]]\nname = "plc-{name}"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
        f'[[sources.units]]\nunit_id = {unit}\nmachine = "{name}"\ntags = [\n'
        '  { name = "state", address = "hr:0", type = "uint16" },\n'
        '  { name = "parts", address = "hr:2", type = "uint32" },\n'
        '  { name = "good", address = "hr:4", type = "uint32" },\n]\n'
    )


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """press1 and press2 with KPIs on line-1 and line-2, press3 without on line-3."""
    text = 'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
    text += machine("press1", "line-1", True) + machine("press2", "line-2", True)
    text += machine("press3", "line-3", False)
    text += source("press1", 1) + source("press2", 2) + source("press3", 3) + CALENDAR
    path = tmp_path_factory.mktemp("period") / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def names(config: Config, shift: str, kind: Any, now: int = NOW) -> list[str]:
    return [w.name for w in select(config, shift, kind, now).windows]


# -- the period ---------------------------------------------------------------------------------


def test_a_date_gives_its_shifts_including_the_night_one(plant: Config) -> None:
    sel = select(plant, "2026-11-23", None, NOW)
    assert [w.name for w in sel.windows] == ["2026-11-23/A", "2026-11-23/N"]
    night = sel.windows[1]
    assert (night.end_ns - night.start_ns) // S == 4 * 3600  # into the next day
    assert names(plant, "2026-11-23", "day") == ["2026-11-23"]
    assert names(plant, "2026-11-23/A", "hour") == ["2026-11-23T06", "2026-11-23T07"]


def test_today_and_yesterday_follow_the_plant_clock(plant: Config) -> None:
    # 2026-11-27 01:00 in Shanghai is still 2026-11-26 in UTC: the plant's date counts.
    at = int(datetime(2026, 11, 27, 1, 0, tzinfo=ZONE).timestamp()) * S
    assert local_date(plant, at).isoformat() == "2026-11-27"
    assert names(plant, "today", "day", at) == ["2026-11-27"]
    assert names(plant, "yesterday", "day", at) == ["2026-11-26"]
    # The night shift of the 26th is running at 01:00 on the 27th.
    assert names(plant, "current", None, at) == ["2026-11-26/N"]


@pytest.mark.parametrize(
    ("shift", "kind", "message"),
    [
        ("2026-11-24", None, r"no shift on 2026-11-24 \(Tuesday\) \(a day off\)"),
        ("2026-11-22", None, r"no shift on 2026-11-22 \(Sunday\)"),
        ("2026-11-23/C", None, r"no shift 'C' on 2026-11-23 .*the shifts: A, N"),
        ("23.11.2026", None, "expected today, yesterday, current, a date"),
        ("2026-02-30", None, "expected today"),
    ],
)
def test_periods_that_do_not_exist_are_refused(
    plant: Config, shift: str, kind: Any, message: str
) -> None:
    with pytest.raises(SelectionError, match=message):
        select(plant, shift, kind, NOW)


def test_current_outside_shifts_is_the_day_unless_a_shift_is_asked(plant: Config) -> None:
    at = int(datetime(2026, 11, 25, 12, 0, tzinfo=ZONE).timestamp()) * S  # between A and N
    assert names(plant, "current", None, at) == ["2026-11-25"]
    with pytest.raises(SelectionError, match="no shift is running now"):
        select(plant, "current", "shift", at)


def test_without_shifts_windows_are_days_and_hours(plant: Config) -> None:
    bare = plant.model_copy(update={"calendar": None})
    assert names(bare, "2026-11-23", None) == ["2026-11-23"]
    assert len(select(bare, "2026-11-23", "hour", NOW).windows) == 24
    with pytest.raises(SelectionError, match="no shifts"):
        select(bare, "2026-11-23", "shift", NOW)
    with pytest.raises(SelectionError, match="no shifts"):
        select(bare, "2026-11-23/A", None, NOW)


def test_hours_that_have_not_begun_are_left_out(plant: Config) -> None:
    at = int(datetime(2026, 11, 23, 7, 30, tzinfo=ZONE).timestamp()) * S  # in shift A
    shift = select(plant, "current", None, at)
    assert [w.name for w in hours_of(plant, shift, at).windows] == [
        "2026-11-23T06",
        "2026-11-23T07",
    ]
    early = int(datetime(2026, 11, 23, 5, 0, tzinfo=ZONE).timestamp()) * S
    with pytest.raises(SelectionError, match="no hour of that period has begun yet"):
        select(plant, "2026-11-23/A", "hour", early)


def test_previous_is_the_same_kind_in_the_week_before(plant: Config) -> None:
    before = previous(plant, select(plant, "2026-11-27/A", None, NOW))
    # Mon 23 A, (Tue 24 off), Wed 25, Thu 26, and the night shifts; Fri 20 and before too.
    found = [w.name for w in before.windows]
    assert "2026-11-26/N" in found and "2026-11-23/A" in found
    assert not any(n.startswith("2026-11-24/") for n in found)
    assert all(w.kind == "shift" for w in before.windows)


@pytest.mark.parametrize(("text", "kind"), [(None, None), ("hour", "hour"), ("day", "day")])
def test_window_kind_reads_the_option(text: str | None, kind: str | None) -> None:
    assert window_kind(text) == kind


def test_an_unknown_window_is_refused() -> None:
    with pytest.raises(SelectionError, match="unknown window 'week'; choose shift, day or hour"):
        window_kind("week")


# -- the machines -------------------------------------------------------------------------------


class Placed:
    def __init__(self, machine: str | None, line: str) -> None:
        self.machine, self.line = machine, line
        self.scope = "line" if machine is None else "machine"


def test_the_scope_is_every_machine_with_kpis_by_default(plant: Config) -> None:
    scope = scope_of(plant)
    assert scope == Scope(frozenset({"press1", "press2"}))
    assert scope.keeps(Placed("press1", "stamping/line-1"))
    assert scope.keeps(Placed(None, "stamping/line-2"))  # a line's figures
    assert not scope.keeps(Placed("press3", "stamping/line-3"))  # no [machines.kpi]


def test_a_line_keeps_its_machines_and_its_own_figures(plant: Config) -> None:
    for line in ("line-1", "stamping/line-1"):
        scope = scope_of(plant, line)
        assert scope.machines == {"press1"}
        assert scope.keeps(Placed("press1", "stamping/line-1"))
        assert scope.keeps(Placed(None, "stamping/line-1"))
        assert not scope.keeps(Placed("press2", "stamping/line-2"))
        assert not scope.keeps(Placed(None, "stamping/line-2"))


def test_a_machine_keeps_only_its_figures_not_its_lines(plant: Config) -> None:
    scope = scope_of(plant, machine="press2")
    assert scope.machines == {"press2"}
    assert scope.keeps(Placed("press2", "stamping/line-2"))
    assert not scope.keeps(Placed(None, "stamping/line-2"))
    assert scope_of(plant, "line-1", "press2").machines == frozenset()


@pytest.mark.parametrize(
    ("line", "machine", "message"),
    [
        (None, "press3", "unknown machine 'press3'; the machines with KPIs: press1, press2"),
        ("line-9", None, "unknown line 'line-9'; the lines: stamping/line-1, stamping/line-2"),
    ],
)
def test_unknown_lines_and_machines_are_refused(
    plant: Config, line: str | None, machine: str | None, message: str
) -> None:
    with pytest.raises(SelectionError) as raised:
        scope_of(plant, line, machine)
    assert str(raised.value) == message


def test_a_config_without_kpis_is_refused(plant: Config) -> None:
    bare = plant.model_copy(
        update={"machines": tuple(m.model_copy(update={"kpi": None}) for m in plant.machines)}
    )
    with pytest.raises(SelectionError, match=r"no machine has a \[machines.kpi\] section"):
        scope_of(bare)

"""Replaying the store: the windows asked for, and exactly the figures the live engine stored.

The store is filled by the real Agent polling a simulated plant (two presses on one line, a
cement mill on another) faster than real time, with timestamps on the simulator's clock, over a
2 h shift on Monday 2026-11-23 (Asia/Shanghai) with a 10 min break.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import Config, load_config
from agent.errors import StoreError
from agent.kpi.engine import KpiEngine
from agent.kpi.period import Selection, hours_of, select
from agent.kpi.replay import KpiWindow, lead_ns, replay
from agent.runtime import Agent
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import MachineSpec
from tests.kpi_plant import (
    clock_at,
    latest_kpis,
    modbus_plant,
    run_until,
    stored_events,
    write_config,
)

S = 1_000_000_000
SPEED = 1200.0  # simulated seconds per real second: the 2 h shift takes 6 s
LEAD_S = 300  # simulated seconds of readings before the shift starts
ZONE = ZoneInfo("Asia/Shanghai")
SHIFT_START = datetime(2026, 11, 23, 6, 0, tzinfo=ZONE)  # a Monday, in the past
SHIFT_S = 2 * 3600
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
NOW = int(datetime(2026, 11, 27, 12, 0, tzinfo=ZONE).timestamp()) * S  # long after the run


async def fill_store(tmp: Path) -> Path:
    """Run the plant and the agent over the shift plus a few minutes; the config's path."""
    sim = ScaledClock(SPEED)
    plant = modbus_plant(
        "replay",
        sim,
        MachineSpec(name="press1", kind="press", seed=21),
        MachineSpec(name="press2", kind="press", seed=22),
        MachineSpec(name="mill1", kind="mill", seed=23),
    )
    async with plant:
        path = write_config(plant, tmp, calendar=CALENDAR, poll_interval="10ms")
        t0 = sim.now() + LEAD_S
        agent = Agent(load_config(path), clock=clock_at(sim, SHIFT_START, t0))
        # Until four simulated minutes after the shift: readings past its end close it live.
        await run_until(agent, sim, t0 + SHIFT_S + 240)
    return path


@pytest.fixture(scope="module")
def filled(shift_store: Path) -> Config:
    return load_config(shift_store)


def tree(path: Path) -> dict[str, str]:
    """The store's content: the database file and a non-empty write-ahead log (SQLite may
    create an empty WAL and its index for a read-only reader: nothing is written)."""
    files = [path / "lineside.db", path / "lineside.db-wal"]
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.exists() and p.stat().st_size
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal figures: a tick may split one fold into two, so float sums may differ in the
    last bits (never more)."""
    assert a.keys() == b.keys()
    for k, v in a.items():
        if isinstance(v, dict):
            same(v, b[k])
        elif isinstance(v, float) and isinstance(b[k], float):
            assert v == pytest.approx(b[k], rel=1e-9, abs=1e-6), k
        else:
            assert v == b[k], k


# -- against the live engine --------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_replayed_shift_and_hours_equal_what_the_live_engine_stored(filled: Config) -> None:
    config = filled
    before = tree(config.agent.data_dir)
    selection = select(config, "2026-11-23/A", None, NOW)
    selection = Selection(selection.windows + hours_of(config, selection, NOW).windows)
    calls: list[tuple[int, int]] = []
    result = replay(config, selection, NOW, progress=lambda d, t: calls.append((d, t)))
    assert tree(config.agent.data_dir) == before, "replay must not change the store"
    assert calls and calls[-1][0] == calls[-1][1] == result.records > 0
    got = {(w.kind, w.name, w.label) for w in result.windows}
    names = ["2026-11-23/A", "2026-11-23T06", "2026-11-23T07"]
    who = ["press1", "press2", "mill1", "stamping/body-line-1", "grinding/cement-mill-1"]
    who += ["stamping", "grinding", config.plant.site]  # the areas and the site
    kinds = {"2026-11-23/A": "shift", "2026-11-23T06": "hour", "2026-11-23T07": "hour"}
    assert got == {(kinds[n], n, w) for n in names for w in who}
    assert result.missing == []
    live = latest_kpis(stored_events(config.agent.data_dir))
    for w in result.windows:
        for definition, kpis in (("classic", w.classic), ("iso22400", w.iso22400)):
            stored = live[(w.scope, w.label, w.name, definition)]
            same(kpis, stored["kpis"])
            same(w.components, stored["components"])
            assert w.flags == stored["flags"]
            same(w.losses, stored["losses"])
            assert [p[0] for p in w.pareto] == [p[0] for p in stored["pareto"]]
            for (_, seconds, share), (_, s2, f2) in zip(w.pareto, stored["pareto"], strict=True):
                assert (seconds, share) == pytest.approx((s2, f2), rel=1e-9)
    shift = {w.label: w for w in result.windows if w.kind == "shift"}
    # The break is not planned; the presses ran most of the shift and made parts.
    for name in ("press1", "press2", "mill1"):
        c = shift[name].components
        assert c["planned_s"] + c["planned_stop_s"] == pytest.approx(110 * 60, abs=1)
        assert c["total"] > 0 and shift[name].classic["oee"] is not None
    line = shift["stamping/body-line-1"].components
    assert line["total"] is None  # the line adds ideal time, never units
    presses = shift["press1"].components["ideal_s"] + shift["press2"].components["ideal_s"]
    assert line["ideal_s"] == pytest.approx(presses)


def test_replay_equals_an_engine_fed_the_stored_batches_directly(filled: Config) -> None:
    """The day window is not closed live before the run stops; compare it with a fresh engine
    fed every stored batch and ticked past the day's end."""
    config = filled
    selection = select(config, "2026-11-23", "day", NOW)
    [result] = [w for w in replay(config, selection, NOW).windows if w.label == "press1"]
    with Store(config.agent.data_dir) as store:
        ids = {info.path: tag_id for tag_id, info in store.tags().items()}
        engine = KpiEngine(config, ids)
        events = []
        after = 0
        while batches := store.read_telemetry(after, 500):
            after = batches[-1].seq
            for b in batches:
                events += engine.on_batch(b.batch)
    events += engine.tick(result.end_ns + lead_ns(config))
    [direct] = [
        e.data
        for e in events
        if e.machine == "press1"
        and e.data["window"]["name"] == "2026-11-23"
        and e.data["definition"] == "classic"
    ]
    same(result.components, direct["components"])
    same(result.classic, direct["kpis"])
    assert result.complete and "unknown_time" in result.flags  # no readings before 05:55


def test_a_window_in_progress_comes_from_the_live_snapshot(filled: Config) -> None:
    config = filled
    middle = int(SHIFT_START.timestamp()) * S + 3900 * S  # 07:05, the shift half done
    selection = select(config, "current", None, middle)
    assert [(w.kind, w.name) for w in selection.windows] == [("shift", "2026-11-23/A")]
    result = replay(config, selection, middle)
    press = [w for w in result.windows if w.label == "press1"]
    assert len(press) == 1 and not press[0].complete and press[0].as_of_ns == middle
    c = press[0].components
    assert c["calendar_s"] == pytest.approx(3900, abs=1)  # only the time that has passed
    # Hours: the one that closed at 07:00, and the one in progress as of now.
    hours = replay(config, select(config, "current", "hour", middle), middle).windows
    assert {w.name for w in hours} == {"2026-11-23T06", "2026-11-23T07"}
    [now] = [w for w in hours if w.label == "press1" and w.name == "2026-11-23T07"]
    assert not now.complete and now.as_of_ns == middle
    assert now.components["calendar_s"] == pytest.approx(300, abs=1)
    [done] = [w for w in hours if w.label == "press1" and w.name == "2026-11-23T06"]
    assert done.complete and done.components["calendar_s"] == pytest.approx(3600)
    assert any(w.scope == "line" and w.name == "2026-11-23T07" for w in hours)


def test_a_period_without_readings_names_the_machines(filled: Config) -> None:
    result = replay(filled, select(filled, "2026-11-25/A", None, NOW), NOW)
    assert result.windows == []
    assert result.missing == ["press1", "press2", "mill1"]


def test_no_store_is_a_store_error(filled: Config, tmp_path: Path) -> None:
    config = filled.model_copy(
        update={"agent": filled.agent.model_copy(update={"data_dir": tmp_path / "none"})}
    )
    with pytest.raises(StoreError, match="no store here"):
        replay(config, select(config, "2026-11-23", None, NOW), NOW)
    assert not (tmp_path / "none").exists(), "reading must not create a store"


def test_kpi_window_label_is_the_machine_or_the_line() -> None:
    base: dict[str, Any] = dict(
        kind="shift", name="d/A", start_ns=0, end_ns=1, classic={}, iso22400={},
        components={}, flags=[], losses={}, pareto=[],
    )  # fmt: skip
    assert KpiWindow(scope="machine", machine="m1", line="a/l", **base).label == "m1"
    assert KpiWindow(scope="line", machine=None, line="a/l", **base).label == "a/l"

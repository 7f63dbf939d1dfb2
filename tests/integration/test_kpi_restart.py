"""A restart mid-shift: the agent rebuilds its open KPI windows from the store.

The real Agent polls a simulated press (faster than real time) over Modbus TCP, is stopped in
the middle of the shift and started again ten simulated minutes later. The shift's KPI event it
stores must equal the replay of `lineside oee` over the same store: the restart stores its
outage as a fact, so the replay also takes the agent's real downtime (from the last reading
before the stop to the first one after the restart) as unknown time instead of carrying the last
state on. KPI windows the first run stored are not stored again.

A press whose quality is a camera's verdicts keeps, after a restart, the verdicts of the first
run: the replay merges the stored verdicts with the readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from agent.config import Config, load_config
from agent.kpi.period import select
from agent.kpi.replay import replay as replay_store
from agent.model import EventKind
from agent.runtime import Agent
from agent.store import DB_NAME, Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import MachineSpec
from tests.kpi_plant import (
    NS,
    clock_at,
    modbus_plant,
    run_until,
    stored_events,
    tally,
    verdicts,
    wall_s,
    write_config,
)

SPEED = 1200.0  # simulated seconds per wall-clock second
SHIFT_S = 4 * 3600
LEAD_S = 400  # simulated seconds between the agent starting and the shift starting
STOP_AT_S = 5400  # into the shift: the agent is stopped at 07:30
DOWN_S = 600  # simulated seconds the agent stays stopped
ZONE = ZoneInfo("Asia/Shanghai")
SHIFT_START = datetime(2026, 11, 23, 6, 0, tzinfo=ZONE)  # a Monday
SHIFT = "2026-11-23/A"
CALENDAR = """[calendar]
timezone = "Asia/Shanghai"

[[calendar.shifts]]
name = "A"
start = "06:00"
end = "10:00"

"""
PRESS = MachineSpec(name="press1", kind="press", seed=21)
KNOWN = ("running_s", "idle_s", "down_s", "setup_s")


def kpi_events(data_dir: Path) -> list[dict[str, Any]]:
    return [e.data for e in stored_events(data_dir) if e.kind is EventKind.KPI]


def first_kpi_reading_after(store: Store, config: Config, after_ns: int) -> int:
    """The time of the first reading of one of press1's KPI tags after `after_ns`."""
    kpi = config.machines[0].kpi
    assert kpi is not None
    paths = {config.tag_path("press1", name) for _, name in kpi.tag_roles()}
    ids = [i for i, info in store.tags().items() if info.path in paths]
    first: int | None = None
    seq = 0
    while batches := store.read_telemetry(seq, 500):
        seq = batches[-1].seq
        for b in batches:
            ts = b.batch.timestamps()[np.isin(b.batch.tag_ids, ids)]
            ts = ts[ts > after_ns]
            if ts.size and (first is None or int(ts.min()) < first):
                first = int(ts.min())
    assert first is not None
    return first


@pytest.mark.timeout(180)
@pytest.mark.slow
async def test_a_restart_mid_shift_loses_only_the_downtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = ScaledClock(SPEED)
    async with modbus_plant("kpi-restart", sim, PRESS) as plant:
        # The state vouches across the ten minutes the agent is down: the engine that never
        # stopped carries it on, the restarted one must not (it cannot know).
        path = write_config(plant, tmp_path, calendar=CALENDAR, max_gap="30m", poll_interval="10ms")
        config = load_config(path)
        t0 = sim.now() + LEAD_S  # simulated time at which the shift starts
        clock = clock_at(sim, SHIFT_START, t0)
        await run_until(Agent(config, clock=clock), sim, t0 + STOP_AT_S)
        before = kpi_events(config.agent.data_dir)
        with contextlib.closing(sqlite3.connect(config.agent.data_dir / DB_NAME)) as db:
            (last_ns,) = db.execute("SELECT max(ts_last_ns) FROM telemetry").fetchone()
        await asyncio.sleep(wall_s(sim, t0 + STOP_AT_S + DOWN_S))  # the agent is down
        with caplog.at_level(logging.INFO, logger="lineside.agent"):
            await run_until(Agent(config, clock=clock), sim, t0 + SHIFT_S + 120)
        now_ns = clock.time_ns()
    assert any("kpi: resumed from" in r.getMessage() for r in caplog.records)
    # The first run closed the hours before the stop, not the shift.
    assert {d["window"]["name"] for d in before if d["window"]["kind"] == "hour"} >= {
        "2026-11-23T06"
    }
    assert not [d for d in before if d["window"]["name"] == SHIFT]

    after = kpi_events(config.agent.data_dir)
    with Store(config.agent.data_dir) as store:
        first_ns = first_kpi_reading_after(store, config, int(last_ns))
    # Nothing stored twice: one record per window, definition and revision.
    keys = [
        (d["scope"], d["machine"], d["window"]["kind"], d["window"]["name"], d["definition"],
         d["revision"])
        for d in after
    ]  # fmt: skip
    assert len(keys) == len(set(keys))
    [restarted] = [
        d
        for d in after
        if d["window"]["name"] == SHIFT and d["machine"] == "press1"
        and d["definition"] == "classic"
    ]  # fmt: skip

    # `lineside oee` replays every stored reading, and the outage the restart stored as a
    # fact: it gives exactly the KPI record sent upstream.
    [reference] = [
        w
        for w in replay_store(config, select(config, SHIFT, "shift", now_ns), now_ns).windows
        if w.label == "press1"
    ]
    got, want = restarted["components"], reference.components
    downtime_s = (first_ns - int(last_ns)) / NS
    # Starting the second agent takes a few hundred simulated seconds; the state would vouch
    # across the whole gap (max_gap 30m) had the outage not been recorded.
    assert DOWN_S - 60 < downtime_s < 1500
    for k in (*KNOWN, "unknown_s", "calendar_s", "planned_s", "planned_stop_s", "total",
              "good", "reject", "ideal_s", "unknown_count"):  # fmt: skip
        assert got[k] == pytest.approx(want[k], abs=1e-6), k
    assert got["failures"] == want["failures"]
    assert restarted["kpis"] == pytest.approx(reference.classic)
    assert got["unknown_s"] >= downtime_s - 1e-3  # the time the agent was down is unknown
    outages = [
        e.data
        for e in stored_events(config.agent.data_dir)
        if e.kind is EventKind.CONNECTION and e.data.get("state") == "outage"
    ]
    assert [(o["start_ns"], o["cause"]) for o in outages] == [(int(last_ns), "agent stopped")]
    # Without the rebuild the 90 minutes before the restart would be unknown.
    assert got["unknown_s"] < downtime_s + 300
    assert got["total"] > 0 and restarted["kpis"]["oee"] is not None


CAMERA_SPEED = 20.0  # a stroke (2.5 s) every 125 ms, part_present polled every 10 ms
CAMERA_RUN_S = 60.0  # simulated seconds each run inspects parts
CAMERA_START = datetime(2026, 11, 23, 7, 10, tzinfo=ZONE)  # in shift A, inside one hour


@pytest.mark.timeout(120)
@pytest.mark.slow
async def test_camera_verdicts_before_and_after_a_restart_both_count(tmp_path: Path) -> None:
    """A press whose quality is a camera's verdicts (the real model on the simulated camera):
    after a restart its open windows hold the verdicts of both runs, read back from the store."""
    from tests.vision import onnx_graphs as graphs

    model = graphs.anomaly_model(tmp_path / "surface.onnx")
    sim = ScaledClock(CAMERA_SPEED)
    async with modbus_plant("camera-restart", sim, PRESS) as plant:
        # A threshold that passes most parts, so both verdicts occur (test_inspection_quality).
        path = write_config(
            plant,
            tmp_path,
            calendar=CALENDAR,
            threshold=0.65,
            camera_model=str(model),
            camera_poll="10ms",
        )
        config = load_config(path)
        assert config.machines[0].kpi is not None
        assert config.machines[0].kpi.inspection == "press1-surface"
        clock = clock_at(sim, CAMERA_START, sim.now())
        await run_until(Agent(config, clock=clock), sim, sim.now() + CAMERA_RUN_S)
        first = tally(verdicts(stored_events(config.agent.data_dir)))
        await asyncio.sleep(wall_s(sim, sim.now() + 5))  # five simulated seconds down
        restarted = Agent(config, clock=clock)
        await run_until(restarted, sim, sim.now() + CAMERA_RUN_S)
        now_ns = clock.time_ns()
    both = tally(verdicts(stored_events(config.agent.data_dir)))
    assert sum(first[:2]) > 10 and sum(both[:2]) - sum(first[:2]) > 10, (first, both)
    assert restarted.kpi is not None
    for kind in ("hour", "shift"):
        c = restarted.kpi.snapshot(now_ns, kind=kind)["machines"]["press1"]["components"]
        assert (c["good"], c["reject"], c["not_decidable"]) == both, kind

"""End to end: the simulated plant's ground truth against the agent's OEE over one shift.

A press (PackML), a cement mill (t/h) and a loom (picks/min) run faster than real time; the real
Agent polls them over Modbus TCP with a clock whose timestamps follow the simulator's time, so a
simulated 8 h shift passes in well under a minute. The shift's classic OEE in the agent's store
must agree with the simulator's ground truth within 0.2 percentage points for every machine.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import load_config
from agent.runtime import Agent
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import MachineSpec
from tests.kpi_plant import clock_at, latest_kpis, modbus_plant, stored_events, write_config

SPEED = 1200.0  # simulated seconds per wall-clock second
SHIFT_S = 8 * 3600
LEAD_S = 400  # simulated seconds between the agent starting and the shift starting
TOLERANCE = 0.002  # 0.2 percentage points
ZONE = ZoneInfo("Asia/Shanghai")
SHIFT_START = datetime(2026, 11, 23, 6, 0, tzinfo=ZONE)  # a Monday
CALENDAR = """[calendar]
timezone = "Asia/Shanghai"

[[calendar.shifts]]
name = "A"
start = "06:00"
end = "14:00"

"""


@pytest.mark.timeout(180)
async def test_shift_oee_agrees_with_ground_truth(tmp_path: Path) -> None:
    sim = ScaledClock(SPEED)
    plant = modbus_plant(
        "kpi-e2e",
        sim,
        MachineSpec(name="press1", kind="press", seed=11),
        MachineSpec(name="mill1", kind="mill", seed=12),
        MachineSpec(name="loom1", kind="loom", seed=13),
    )
    async with plant:
        # One 8 h shift without breaks: the simulator's truth knows only its own planned stops.
        # A busy shared CPU may stall the poller for a few hundred simulated seconds (max_gap).
        path = write_config(plant, tmp_path, calendar=CALENDAR, max_gap="30m", poll_interval="10ms")
        config = load_config(path)
        assert all(m.kpi is not None for m in config.machines)
        t0 = sim.now() + LEAD_S  # simulated time at which the shift starts
        agent = Agent(config, clock=clock_at(sim, SHIFT_START, t0))
        t1 = t0 + SHIFT_S
        stop = asyncio.Event()
        run = asyncio.create_task(agent.run(stop))
        live: dict[str, Any] | None = None
        while sim.now() < t1 + 120 and not run.done():
            if live is None and sim.now() > t0 + SHIFT_S / 2:
                live = agent.kpi_snapshot()  # the shift in progress, for `lineside oee`
            await asyncio.sleep(0.1)
        stop.set()
        await run
        truths = {name: m.ground_truth() for name, m in plant.machines.items()}
    assert live is not None and live["window"]["name"] == "2026-11-23/A"
    assert sorted(live["machines"]) == ["loom1", "mill1", "press1"]
    assert all(m["classic"]["oee"] is not None for m in live["machines"].values())
    latest = latest_kpis(stored_events(tmp_path / "data"))
    found = {
        who: d
        for (scope, who, window, definition), d in latest.items()
        if (scope, window, definition) == ("machine", "2026-11-23/A", "classic")
    }
    assert sorted(found) == ["loom1", "mill1", "press1"]
    report = []
    for name, data in sorted(found.items()):
        truth = truths[name].true_oee(t0, t1)
        agent_oee = data["kpis"]["oee"]
        assert truth.oee is not None and agent_oee is not None
        k = data["kpis"]
        report.append(
            f"{name}: OEE agent {agent_oee:.5f} truth {truth.oee:.5f}; A/P/Q agent "
            f"{k['availability']:.4f}/{k['performance']:.4f}/{k['quality']:.4f} truth "
            f"{truth.availability:.4f}/{truth.performance:.4f}/{truth.quality:.4f}; "
            f"unknown {data['components']['unknown_s']:.0f} s"
        )
        c = data["components"]
        assert c["planned_s"] - c["unknown_s"] == pytest.approx(truth.planned_s, abs=300), name
        assert c["total"] > 0 and 0.3 < agent_oee < 1.0, name
    print("\n".join(report))
    for name, data in found.items():
        truth = truths[name].true_oee(t0, t1)
        assert truth.oee is not None
        assert abs(data["kpis"]["oee"] - truth.oee) < TOLERANCE, report

"""End to end: the simulated plant's ground truth against the agent's OEE over one shift.

A press (PackML), a cement mill (t/h) and a loom (picks/min) run faster than real time; the real
Agent polls them over Modbus TCP with a clock whose timestamps follow the simulator's time, so a
simulated 8 h shift passes in well under a minute. The shift's classic OEE in the agent's store
must agree with the simulator's ground truth within 0.2 percentage points for every machine.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.config import load_config
from agent.model import EventKind
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock, SimulatedWallClock
from firmware_sim.plant import MachineSpec, Plant, PlantSpec

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


def shift_events(store: Store) -> dict[str, dict[str, Any]]:
    """The latest classic KPI record of shift A per machine."""
    out: dict[str, dict[str, Any]] = {}
    after = 0
    while events := store.read_events(after, 1000):
        after = events[-1].seq or after
        for e in events:
            d = e.data
            if e.kind is not EventKind.KPI or d["scope"] != "machine" or e.machine is None:
                continue
            latest = d["revision"] >= out.get(e.machine, {}).get("revision", -1)
            if d["definition"] == "classic" and d["window"]["name"] == "2026-11-23/A" and latest:
                out[e.machine] = d
    return out


@pytest.mark.timeout(180)
async def test_shift_oee_agrees_with_ground_truth(tmp_path: Path) -> None:
    spec = PlantSpec(
        name="kpi-e2e",
        machines=(
            MachineSpec(name="press1", kind="press", seed=11),
            MachineSpec(name="mill1", kind="mill", seed=12),
            MachineSpec(name="loom1", kind="loom", seed=13),
        ),
        ephemeral=True,
    )
    sim = ScaledClock(SPEED)
    plant = Plant(spec, sim, opcua=False, rtu=False, tick_interval=0.004)
    async with plant:
        text = plant_config(
            plant_machines(plant.endpoints()), data_dir=str(tmp_path / "data"), poll_interval="10ms"
        )
        # One 8 h shift without breaks: the simulator's truth knows only its own planned stops.
        text = re.sub(r"\[calendar\].*?(?=# Forward)", CALENDAR, text, flags=re.S)
        # A busy shared CPU may stall the poller for a few hundred simulated seconds.
        text = text.replace('reason = "stop_reason"', 'reason = "stop_reason"\nmax_gap = "30m"')
        path = tmp_path / "lineside.toml"
        path.write_text(text, encoding="utf-8")
        config = load_config(path)
        assert all(m.kpi is not None for m in config.machines)
        clock = SimulatedWallClock(sim)
        agent = Agent(config, clock=clock)
        t0 = sim.now() + LEAD_S  # simulated time at which the shift starts
        clock.epoch_ns = int(SHIFT_START.timestamp()) * 1_000_000_000 - round(t0 * 1e9)
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
    with Store(tmp_path / "data") as store:
        found = shift_events(store)
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

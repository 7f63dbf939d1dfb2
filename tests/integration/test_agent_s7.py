"""The agent end to end over S7: the simulated plant's CPUs → S7Source → pipeline → SQLite, with
the status page, `read` and the KPI engine working as they do for Modbus."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from agent.config import load_config
from agent.export import export_readings
from agent.model import Quality
from agent.oneshot import read_once
from agent.runtime import Agent
from agent.starter import PlantMachine, plant_config
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


def s7_machines(plant: Plant) -> list[PlantMachine]:
    out = []
    for e in plant.endpoints():
        assert e.s7 is not None
        host, _, port = e.s7.rpartition(":")
        out.append(PlantMachine(e.machine, e.kind, host, int(port), protocol="s7"))
    return out


async def test_agent_polls_s7_cpus_into_sqlite_with_page_and_kpis(tmp_path: Path) -> None:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False, s7=True) as plant:
        path = tmp_path / "lineside.toml"
        text = plant_config(s7_machines(plant), poll_interval="100ms", report="all")
        path.write_text(f"{text}\n[web]\nport = 0\n", encoding="utf-8")
        config = load_config(path)
        assert {s.type for s in config.sources} == {"s7"}
        agent = Agent(config)
        server = await agent.start_web()
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await until(lambda: all(link.polls > 2 for link in agent.links.values()))
            async with httpx.AsyncClient() as client:
                state = (await client.get(f"{server.url}api/state?machine=press1")).json()
                metrics = (await client.get(f"{server.url}metrics")).text
            one = await read_once(config)
        finally:
            stop.set()
            await task
        truth = plant.machines["press1"].values()
    # the KPI engine computes from S7 readings as from Modbus ones
    oee = {row["name"]: row for row in state["oee"]["rows"] if row["scope"] == "machine"}
    assert oee["press1"]["availability"] == pytest.approx(1.0)  # running all along
    assert {v["quality"] for v in state["values"]} == {"good"}, state["values"]
    sources = {s["name"]: s for s in state["sources"]}
    assert sources["press1-plc"]["endpoint"].endswith("rack 0 slot 1")
    assert 'source="press1-plc"' in metrics
    assert one.errors == {} and not one.bad
    rows = list(export_readings(tmp_path / "data", tag_glob="*/press1/part_count"))
    assert rows and all(r.quality is Quality.GOOD for r in rows)
    counts = [r.value for r in rows]
    assert counts == sorted(counts) and counts[-1] <= float(truth["part_count"])
    stats = agent.statistics()["sources"]["press1-plc"]
    assert stats["requests"] == stats["polls"]  # one multi-read per poll: the planner's minimum

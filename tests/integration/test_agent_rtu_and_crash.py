"""The agent on an RTU bus shared by several machines, and the store after kill -9 of the agent."""

import asyncio
import csv
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.export import export_readings
from agent.model import Quality
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from firmware_sim.profile import load_profile


def rtu_config(tmp_path: Path, plant: Plant) -> Path:
    units = []
    for e in plant.endpoints():
        tags_file = tmp_path / f"{e.kind}.csv"
        with tags_file.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "address", "type", "order", "scale", "offset", "unit"])
            for tag in load_profile(e.kind).tags:
                if tag.type != "string":
                    row = [tag.name, tag.address, tag.type, tag.order, tag.scale, tag.offset]
                    writer.writerow([*row, tag.unit])
        units.append(
            f'[[sources.units]]\nunit_id = {e.rtu_unit_id}\nmachine = "{e.machine}"\n'
            f'poll_interval = "200ms"\ntags_file = "{tags_file.name}"\n'
        )
    machines = "".join(
        f'[[machines]]\nname = "{e.machine}"\narea = "a"\nline = "l"\n' for e in plant.endpoints()
    )
    text = (
        'config_version = 1\n[agent]\nid = "rtu-edge"\nreport = "all"\n[plant]\nsite = "s"\n'
        + machines
        + f'[[sources]]\nname = "bus"\ntype = "modbus_rtu"\nport = "{plant.rtu_path}"\n'
        + 'baudrate = 115200\nparity = "N"\ntimeout = "200ms"\nframe_pause = "2ms"\n'
        + "".join(units)
    )
    path = tmp_path / "lineside.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
async def test_agent_polls_every_unit_on_an_rtu_bus_and_survives_a_dead_one(
    tmp_path: Path,
) -> None:
    spec = load_plant("demo").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=True) as plant:
        config = load_config(rtu_config(tmp_path, plant))
        plant.units["mill1"].faults.set("refuse")  # silent on the bus
        agent = Agent(config)
        await agent.run(duration=2.0)
    rows = list(export_readings(tmp_path / "data"))
    by_machine: dict[str, list[Quality]] = {}
    for r in rows:
        by_machine.setdefault(r.path.split("/")[3], []).append(r.quality)
    assert set(by_machine) == {"press1", "press2", "mill1", "loom1", "loom2"}
    assert all(q == Quality.BAD for q in by_machine["mill1"])
    for machine in ("press1", "press2", "loom1", "loom2"):
        assert all(q == Quality.GOOD for q in by_machine[machine]), machine
    stats = agent.statistics()["sources"]["bus"]
    # the dead unit is isolated: a handful of timeouts in 2 s, not one per 200 ms poll
    assert 1 <= stats["timeouts"] <= 3, stats
    polls = stats["polls"]
    press1_state = [r for r in rows if r.path.endswith("/press1/state")]
    assert len(press1_state) >= polls - 1


@pytest.mark.slow
async def test_kill_9_mid_write_leaves_a_sound_store_that_carries_on(tmp_path: Path) -> None:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        machines = plant_machines(plant.endpoints())
        path = tmp_path / "lineside.toml"
        path.write_text(plant_config(machines, poll_interval="20ms", report="all"))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "-c",
            str(path),
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(2.5)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        db = tmp_path / "data" / "lineside.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            seqs = [s for (s,) in conn.execute("SELECT seq FROM telemetry ORDER BY seq")]
        assert seqs, "the agent committed before it was killed"
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no holes in the sequence"
        # the agent starts again on the same store and numbering carries on
        agent = Agent(load_config(path))
        await agent.run(duration=0.5)
    with Store(tmp_path / "data") as store:
        after = [b.seq for b in store.read_telemetry(0, 1_000_000)]
    assert after[: len(seqs)] == seqs
    assert len(after) > len(seqs)
    assert after == sorted(after)

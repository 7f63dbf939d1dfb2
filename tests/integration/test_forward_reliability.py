"""Delivery to a real HTTP MES survives kill -9 of the agent: nothing lost, duplicates bounded.

The short variant (3 kills) runs with the suite; `make soak` runs the long one (10 kills).
"""

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from agent.starter import plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.connectors.http.mes_server import MesServer
from tests.waiting import until

BATCH = 50


def sink_text(mes_url: str) -> str:
    return (
        f'\n[[sinks]]\nname = "mes"\ntype = "http"\nurl = "{mes_url}"\ntimeout = "2s"\n'
        f"batch_size = {BATCH}\n\n[forward]\nbatch_size = {BATCH}\n"
    )


def config_text(plant: Plant, mes_url: str) -> str:
    machines = plant_machines(plant.endpoints())
    return plant_config(machines, poll_interval="50ms", report="all") + sink_text(mes_url)


def telemetry_stored(db: Path) -> int:
    """The last telemetry seq committed to the store file (0 before the first)."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT max(seq) FROM telemetry").fetchone()
    except sqlite3.Error:  # the file is being created
        return 0
    return int(row[0] or 0)


async def agent_run(path: Path, seconds: float, kill: bool) -> None:
    """Run the agent for `seconds`; when killing, for `seconds` after it stored a record of
    its own, so the kill lands while it polls and forwards however slow its start was."""
    db = path.parent / "data" / "lineside.db"
    before = telemetry_stored(db)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "-c",
        str(path),
        stderr=asyncio.subprocess.DEVNULL,
    )
    if kill:
        await until(lambda: telemetry_stored(db) > before)
    await asyncio.sleep(seconds)
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == (-9 if kill else 0)


async def kill_and_restart(tmp_path: Path, kills: int) -> None:
    with MesServer().running() as mes:
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
            path = tmp_path / "lineside.toml"
            path.write_text(config_text(plant, mes.url))
            for _ in range(kills):
                await agent_run(path, 1.0, kill=True)
        # a last run with no sources: nothing new is produced, the forwarder catches up
        drain = tmp_path / "drain.toml"
        head = 'config_version = 1\n[agent]\nid = "demo-edge-1"\n[plant]\nsite = "demo"\n'
        drain.write_text(head + sink_text(mes.url))
        await agent_run(drain, 3.0, kill=False)
        db = tmp_path / "data" / "lineside.db"
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        with Store(tmp_path / "data") as store:
            last = store.stats().streams["telemetry"].last_seq
            acked = store.cursor("mes", "telemetry")
        stored = mes.stored()
        totals = mes.totals()
    delivered = sorted(seq for (_, stream, seq) in stored if stream == "telemetry")
    assert last > 0
    assert acked == last, "the forwarder caught up"
    assert delivered == list(range(1, last + 1)), "every committed record arrived, no gaps"
    duplicates = totals.deliveries - totals.records
    # each kill can cost at most the batch in flight, sent again after the restart
    assert 0 <= duplicates <= kills * BATCH


@pytest.mark.slow
async def test_kill_9_three_times_loses_nothing(tmp_path: Path) -> None:
    await kill_and_restart(tmp_path, kills=3)


@pytest.mark.soak
async def test_kill_9_ten_times_loses_nothing(tmp_path: Path) -> None:
    await kill_and_restart(tmp_path, kills=10)

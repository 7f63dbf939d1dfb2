"""The agent end to end: the simulated plant → Modbus TCP → pipeline → SQLite → export."""

import asyncio
import contextlib
import json
import logging
import math
import re
import signal
import socket
import sqlite3
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from agent.export import export_readings
from agent.model import EventKind, Quality
from agent.oneshot import read_once
from agent.pipeline import NON_FINITE_REASON
from agent.runtime import Agent
from agent.starter import PlantMachine, plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.image import Table
from firmware_sim.plant import Plant, load_plant
from tests.waiting import until


def machines_of(plant: Plant) -> list[PlantMachine]:
    return plant_machines(plant.endpoints())


def write_config(tmp_path: Path, machines: list[PlantMachine], **kw: str) -> Path:
    path = tmp_path / "lineside.toml"
    path.write_text(plant_config(machines, **kw), encoding="utf-8")
    return path


async def test_agent_polls_the_plant_into_sqlite(tmp_path: Path) -> None:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as plant:
        config = load_config(
            write_config(tmp_path, machines_of(plant), poll_interval="100ms", report="all")
        )
        agent = Agent(config)
        await agent.run(duration=1.0)
        truth = plant.machines["press1"].values()
    stats = agent.statistics()
    polls = stats["sources"]["press1-plc"]["polls"]
    assert 1 <= polls <= 12, polls  # 10 due in 1 s; a loaded machine may run fewer, never more
    assert stats["store"]["readings_written"] == agent.samples  # report = "all": every sample
    rows = list(export_readings(tmp_path / "data", tag_glob="*/press1/die_id"))
    assert [r.text for r in rows] == [truth["die_id"]]  # a string: stored once, on change
    rows = list(export_readings(tmp_path / "data", tag_glob="*/press1/part_count"))
    assert polls - 1 <= len(rows) <= polls  # the poll under way at the stop may be cut short
    counts = [r.value for r in rows]
    assert counts == sorted(counts), "a counter only goes up"
    assert counts[-1] <= float(truth["part_count"])
    assert all(r.quality is Quality.GOOD for r in rows)
    with Store(tmp_path / "data") as store:
        events = store.read_events(0, 100)
    assert {(e.kind, e.data.get("state")) for e in events if e.kind is not EventKind.TEXT} == {
        (EventKind.CONNECTION, "connected")
    }


async def test_report_by_exception_stores_changes_only(tmp_path: Path) -> None:
    spec = load_plant("cement").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        config = load_config(write_config(tmp_path, machines_of(plant), poll_interval="50ms"))
        agent = Agent(config)
        await agent.run(duration=0.6)
    stats = agent.statistics()
    assert stats["pipeline"]["rows_in"] == agent.samples
    # constant tags (state, stop reason, grade ...) are stored once, not every poll
    assert stats["store"]["readings_written"] < agent.samples / 2
    rows = list(export_readings(tmp_path / "data", tag_glob="*/mill1/state"))
    assert len(rows) == 1


async def test_nan_and_inf_float_registers_are_stored_bad_with_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        unit = plant.units["press1"]
        unit.faults.set("freeze")  # the plant no longer overwrites the registers set here
        unit.image.set_registers(Table.HOLDING_REGISTERS, 2, struct.pack(">f", math.nan))
        unit.image.set_registers(Table.HOLDING_REGISTERS, 12, struct.pack(">f", math.inf))
        config = load_config(
            write_config(tmp_path, machines_of(plant), poll_interval="100ms", report="all")
        )
        agent = Agent(config)
        with caplog.at_level(logging.WARNING, logger="lineside.agent"):
            await agent.run(duration=0.6)
    speed = list(export_readings(tmp_path / "data", tag_glob="*/press1/strokes_per_min"))
    tonnage = list(export_readings(tmp_path / "data", tag_glob="*/press1/tonnage"))
    assert speed and tonnage
    assert all(r.quality is Quality.BAD and math.isnan(r.value) for r in speed)
    assert all(r.quality is Quality.BAD and r.value == math.inf for r in tonnage)
    counts = list(export_readings(tmp_path / "data", tag_glob="*/press1/part_count"))
    assert counts and all(r.quality is Quality.GOOD for r in counts)
    # the reason: counted per source, and one log line naming both tags (once per run)
    link = agent.statistics()["sources"]["press1-plc"]["link"]
    assert link["non_finite"] == len(speed) + len(tonnage)
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "press1/strokes_per_min = nan" in warnings[0]
    assert "press1/tonnage = inf" in warnings[0]


@pytest.mark.slow
async def test_read_gives_the_reason_of_a_non_finite_value(tmp_path: Path) -> None:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        unit = plant.units["press1"]
        unit.faults.set("freeze")
        unit.image.set_registers(Table.HOLDING_REGISTERS, 12, struct.pack(">f", -math.inf))
        config = load_config(write_config(tmp_path, machines_of(plant)))
        result = await read_once(config, "*/press1/*")
    by_name = {r.tag.path.rsplit("/", 1)[-1]: r for r in result.readings}
    assert by_name["tonnage"].quality is Quality.BAD
    assert by_name["tonnage"].reason == NON_FINITE_REASON
    assert by_name["part_count"].quality is Quality.GOOD and by_name["part_count"].reason == ""


async def test_dead_plc_gives_bad_quality_and_the_others_go_on(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nobody listens here once the socket closes
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        machines = machines_of(plant)
        machines[1] = PlantMachine("press2", "press", "127.0.0.1", dead_port)
        config = load_config(write_config(tmp_path, machines, poll_interval="100ms"))
        agent = Agent(config)
        await agent.run(duration=0.8)
    stats = agent.statistics()
    assert stats["sources"]["press1-plc"]["link"]["state"] == "connected"
    assert stats["sources"]["press2-plc"]["link"]["state"] == "lost"
    assert "refused" in stats["sources"]["press2-plc"]["link"]["last_error"].lower()
    rows = list(export_readings(tmp_path / "data", tag_glob="*/press2/*"))
    assert rows and all(r.quality is Quality.BAD and np.isnan(r.value) for r in rows)
    assert any(r.quality is Quality.GOOD for r in export_readings(tmp_path / "data"))


@pytest.mark.slow
async def test_plant_outage_marks_bad_then_restores(tmp_path: Path) -> None:
    spec = load_plant("loom").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        config = load_config(write_config(tmp_path, machines_of(plant), poll_interval="50ms"))
        agent = Agent(config)
        task = asyncio.create_task(agent.run(duration=3.0))
        await asyncio.sleep(0.4)
        plant.units["loom1"].faults.set("reboot", down_time=0.5)
        await task
    with Store(tmp_path / "data") as store:
        states = [
            e.data["state"]
            for e in store.read_events(0, 100)
            if e.kind is EventKind.CONNECTION and e.data["source"] == "loom1-plc"
        ]
    assert states[0] == "connected"
    assert "lost" in states
    assert states[-1] == "restored"
    picks = list(export_readings(tmp_path / "data", tag_glob="*/loom1/pick_count"))
    qualities = [r.quality for r in picks]
    assert Quality.BAD in qualities
    assert qualities[-1] is Quality.GOOD
    after = [r.value for r in picks if r.quality is Quality.GOOD][-1]
    assert after < 100, "the reboot reset the PLC's counter"


def stored_batches(db: Path) -> int:
    """Telemetry records committed so far, read-only from another process's store (0: none yet)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM telemetry").fetchone()[0])
    except sqlite3.Error:
        return 0  # not created yet, or not migrated yet


@pytest.mark.slow
async def test_lineside_run_drains_on_sigterm(tmp_path: Path) -> None:
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        path = write_config(tmp_path, machines_of(plant), poll_interval="100ms", report="all")
        stats_file = tmp_path / "stats.json"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            "-c",
            str(path),
            "--stats",
            str(stats_file),
            stderr=asyncio.subprocess.PIPE,
        )
        db = tmp_path / "data" / "lineside.db"
        await until(lambda: stored_batches(db) > 0, 60)  # started and polling, however slowly
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert b"stopped, store drained" in stderr
    stats = json.loads(stats_file.read_text())
    written = stats["store"]["readings_written"]
    assert written == stats["samples"] > 0
    assert len(list(export_readings(tmp_path / "data"))) == written


def test_lineside_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "bad.toml"
    path.write_text("config_version = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "missing section [agent]" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("speed", [20.0])
@pytest.mark.slow
def test_demo_runs_the_agent_and_stores_readings(tmp_path: Path, speed: float) -> None:
    import subprocess

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--duration",
            "3",
            "--speed",
            str(speed),
            "--port",
            "0",  # the demo's default is 8470, which another run may hold
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(r"status page: http://127\.0\.0\.1:\d+/", first), first
    assert first != "status page: http://127.0.0.1:8470/"
    for name in ("press1", "press2", "mill1", "loom1", "loom2"):
        assert name in result.stdout
    assert "stored" in result.stdout
    rows = list(export_readings(tmp_path / "demo" / "data"))
    assert {r.path.split("/")[3] for r in rows} == {"press1", "press2", "mill1", "loom1", "loom2"}

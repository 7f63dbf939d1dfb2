"""`lineside plan`, `read` and `export` as a user runs them, against a running simulated plant."""

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.codenames import PACKML_STATES, PACKML_UNIT_MODES
from agent.starter import PlantMachine, plant_config
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant


async def lineside(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


LIGHT: dict[str, Any] = {"opcua": False, "rtu": False}  # Modbus TCP is all these commands use


def config_for(tmp_path: Path, plant: Plant, dead: str | None = None) -> Path:
    machines = []
    for e in plant.endpoints():
        host, _, port = e.modbus_tcp.rpartition(":")
        if e.machine == dead:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = str(s.getsockname()[1])
        machines.append(PlantMachine(e.machine, e.kind, host, int(port), e.unit_id))
    path = tmp_path / "lineside.toml"
    path.write_text(plant_config(machines, poll_interval="200ms"), encoding="utf-8")
    return path


@pytest.mark.slow
async def test_read_json_gives_the_plant_values(tmp_path: Path) -> None:
    async with Plant(
        load_plant("press").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        path = config_for(tmp_path, plant)
        code, out, err = await lineside("read", "-c", str(path), "--tag", "*/press1/*", "--json")
        truth = plant.machines["press1"].values()
    assert code == 0, err
    result = json.loads(out)
    assert result["errors"] == {}
    values = {r["path"].rsplit("/", 1)[1]: r for r in result["readings"]}
    assert "die_temp" in values
    assert not any("press2" in r["path"] for r in result["readings"])
    assert values["tonnage"]["quality"] == "good"
    assert values["state"]["value"] == truth["state"]


async def test_read_names_state_codes_and_prints_no_float_noise(tmp_path: Path) -> None:
    async with Plant(
        load_plant("press").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        path = config_for(tmp_path, plant)
        code, out, err = await lineside("read", "-c", str(path), "--tag", "*/press1/*", "--json")
        table_code, table, _ = await lineside("read", "-c", str(path), "--tag", "*/press1/*")
    assert code == 0 and table_code == 0, err
    values = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(out)["readings"]}
    state = values["state"]
    assert isinstance(state["value"], int)
    assert state["name"] == PACKML_STATES[state["value"]]
    assert values["unit_mode"]["name"] == PACKML_UNIT_MODES[values["unit_mode"]["value"]]
    assert values["die_temp"]["name"] is None
    # Every value is the shortest text of its type: a float32 has at most 9 significant digits.
    for r in values.values():
        if isinstance(r["value"], str):  # the text tag, die_id
            continue
        assert r["value"] is None or len(repr(r["value"]).replace(".", "").lstrip("-0")) <= 9, r
    row = next(line for line in table.splitlines() if "/press1/state " in line)
    assert f"{state['name']} ({state['value']})" in row, table
    # A text tag is read with the rest: its string, good.
    assert values["die_id"]["value"].startswith("DR-") and values["die_id"]["quality"] == "good"
    row = next(line for line in table.splitlines() if "/press1/die_id " in line)
    assert values["die_id"]["value"] in row, table


@pytest.mark.slow
async def test_read_with_a_dead_plc_exits_1_and_shows_bad_quality(tmp_path: Path) -> None:
    async with Plant(
        load_plant("press").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        path = config_for(tmp_path, plant, dead="press2")
        code, out, _ = await lineside("read", "-c", str(path), "--json")
    assert code == 1
    result = json.loads(out)
    assert list(result["errors"]) == ["press2-plc"]
    assert "connection refused" in result["errors"]["press2-plc"]
    press2 = [r for r in result["readings"] if "/press2/" in r["path"]]
    assert press2 and all(r["quality"] == "bad" and r["value"] is None for r in press2)
    assert all("connection refused" in r["reason"] for r in press2)
    assert all(r["reason"] is None for r in result["readings"] if "/press1/" in r["path"])


@pytest.mark.slow
async def test_read_names_the_exception_of_each_bad_tag(tmp_path: Path) -> None:
    async with Plant(
        load_plant("press").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        plant.units["press1"].faults.set("exception", code=2)
        path = config_for(tmp_path, plant)
        code, out, _ = await lineside("read", "-c", str(path), "--json")
        table_code, table, table_err = await lineside("read", "-c", str(path))
    assert code == 1 and table_code == 1
    result = json.loads(out)
    assert result["errors"] == {}  # the link is fine: the PLC answers, with an exception
    press1 = [r for r in result["readings"] if "/press1/" in r["path"]]
    assert press1 and all(r["quality"] == "bad" for r in press1)
    assert {r["reason"] for r in press1} == {"illegal data address (02)"}
    press2 = [r for r in result["readings"] if "/press2/" in r["path"]]
    assert press2 and all(r["quality"] == "good" and r["reason"] is None for r in press2)
    rows = [line for line in table.splitlines() if "/press1/" in line]
    assert len(rows) == len(press1)
    assert all("bad" in row and "illegal data address (02)" in row for row in rows), table
    assert f"{len(press1)} of {len(result['readings'])} tags read bad" in table_err


async def test_read_unknown_tag_pattern_exits_2(tmp_path: Path) -> None:
    async with Plant(
        load_plant("cement").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        code, _, err = await lineside("read", "-c", str(config_for(tmp_path, plant)), "--tag", "x*")
    assert code == 2
    assert "no tag matches 'x*'" in err


async def test_plan_shows_requests_per_unit(tmp_path: Path) -> None:
    async with Plant(load_plant("loom").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT) as plant:
        path = config_for(tmp_path, plant)
    code, out, err = await lineside("plan", "-c", str(path), "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["machine"] for r in rows] == ["loom1", "loom2"]
    assert all(r["requests"] >= 1 and r["bytes"] > 0 for r in rows)
    code, out, _ = await lineside("plan", "-c", str(path))
    assert code == 0
    assert "Modbus read plan" in out
    assert "loom1-plc unit 1 every 200ms: co:0" in out


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.slow
async def test_run_then_export(tmp_path: Path, fmt: str) -> None:
    async with Plant(
        load_plant("cement").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        path = config_for(tmp_path, plant)
        code, _, err = await lineside("run", "-c", str(path), "--duration", "1")
    assert code == 0, err
    out_file = tmp_path / f"out.{fmt}"
    code, _, err = await lineside(
        "export", "-c", str(path), "--tag", "*/feed_rate", "--format", fmt, "-o", str(out_file)
    )
    assert code == 0, err
    lines = out_file.read_text().strip().splitlines()
    if fmt == "csv":
        assert lines[0] == "time,ts_ns,path,value,quality,unit,name,reason"
        lines = lines[1:]
        assert lines[0].split(",")[5] == "t/h"
    else:
        assert json.loads(lines[0])["path"].endswith("/mill1/feed_rate")
        assert json.loads(lines[0])["unit"] == "t/h"
    assert lines
    # The starter's calendar is the plant's zone: export reads times in it, and says so.
    assert f"{len(lines)} readings exported (times read in Asia/Shanghai)" in err


async def test_export_names_the_reason_of_each_bad_row(tmp_path: Path) -> None:
    async with Plant(
        load_plant("press").with_ephemeral_ports(), ScaledClock(1.0), **LIGHT
    ) as plant:
        plant.units["press1"].faults.set("exception", code=2)
        path = config_for(tmp_path, plant)
        code, _, err = await lineside("run", "-c", str(path), "--duration", "2.5")
    assert code == 0, err
    code, out, err = await lineside("export", "-c", str(path), "--format", "jsonl")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    press1 = [r for r in rows if "/press1/" in r["path"]]
    press2 = [r for r in rows if "/press2/" in r["path"]]
    assert press1 and all(r["quality"] == "bad" for r in press1)
    named = [r for r in press1 if r.get("reason") == "illegal data address (02)"]
    # Every bad row from the first poll on has its reason (the event carries the change's time).
    assert len(named) == len(press1), [r for r in press1 if "reason" not in r][:3]
    assert press2 and not any("reason" in r for r in press2)
    code, csv_out, err = await lineside("export", "-c", str(path), "--tag", "*/press1/state")
    assert code == 0, err
    header, first = csv_out.splitlines()[:2]
    assert header.endswith(",unit,name,reason")
    assert first.endswith(",illegal data address (02)")


@pytest.mark.slow
async def test_export_bad_arguments() -> None:
    code, _, err = await lineside("export", "--format", "csv")
    assert code == 2
    assert "give either --config FILE or --data DIR" in err
    code, _, err = await lineside("export", "--data", "/nonexistent", "--format", "xml")
    assert code == 2
    assert "unknown format 'xml'" in err
    code, _, err = await lineside("export", "--data", "/nonexistent")
    assert code == 2
    assert "no store here" in err
    code, _, err = await lineside("export", "--data", "/tmp", "--from", "the day before")
    assert code == 2
    assert err.strip() == (
        "'the day before' is not a time: write an ISO-8601 time (2026-03-01T06:00), "
        'today, yesterday, now, or a time back from now ("-2h")'
    )

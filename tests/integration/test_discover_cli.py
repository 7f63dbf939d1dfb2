"""`lineside discover modbus` as a user runs it, against a simulated gateway."""

import asyncio
import csv
import json
import socket
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from firmware_sim.clock import ManualClock, ScaledClock
from firmware_sim.plant import Plant, PlantSpec


async def lineside(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


GATEWAY = """
name = 'gw'
[[machines]]
name = 'press1'
kind = 'press'
port = 5020
unit_id = 1
[[machines]]
name = 'loom1'
kind = 'loom'
port = 5020
unit_id = 2
"""


@pytest.mark.slow
async def test_discover_a_gateway_and_validate_its_tag_lists(tmp_path: Path) -> None:
    spec = PlantSpec.model_validate(tomllib.loads(GATEWAY)).with_ephemeral_ports()
    async with Plant(spec, ManualClock(), opcua=False, rtu=False) as plant:
        (endpoint,) = {e.modbus_tcp for e in plant.endpoints()}
        code, out, err = await lineside(
            "discover",
            "modbus",
            endpoint,
            "--units",
            "1-3",
            "--max-address",
            "1999",
            "--out",
            str(tmp_path / "map.csv"),
            "--json",
        )
    assert code == 0, err
    assert err == ""  # no progress bar with --json
    result = json.loads(out)
    assert result["answering"] == [1, 2]
    assert [p["present"] for p in result["probes"]] == [True, True, False]
    for unit in result["units"]:
        for table in ("co", "di", "ir", "hr"):
            # The simulator's register images hold 1024 addresses per table.
            assert unit["tables"][table]["readable"] == [{"first": 0, "last": 1023, "count": 1024}]
    files = {f["unit_id"]: f for f in result["tags_files"]}
    assert files[1]["rows"] == 2000 and files[1]["left_out"] == 4 * 1024 - 2000
    assert Path(files[2]["path"]) == tmp_path / "map_unit2.csv"

    config = tmp_path / "lineside.toml"
    config.write_text(
        "config_version = 1\n[agent]\nid = 'edge-1'\n[plant]\nsite = 'test'\n"
        "[[machines]]\nname = 'press1'\narea = 'a'\nline = 'l'\nkind = 'press'\n"
        "[[machines]]\nname = 'loom1'\narea = 'a'\nline = 'l'\nkind = 'loom'\n"
        "[[sources]]\nname = 'gw'\ntype = 'modbus_tcp'\nhost = '127.0.0.1'\n"
        "[[sources.units]]\nunit_id = 1\nmachine = 'press1'\ntags_file = 'map_unit1.csv'\n"
        "[[sources.units]]\nunit_id = 2\nmachine = 'loom1'\ntags_file = 'map_unit2.csv'\n",
        encoding="utf-8",
    )
    code, out, err = await lineside("validate", str(config), "--json")
    assert code == 0, err
    assert json.loads(out)["sources"][0]["tags"] == 2 * 2000  # two units, each at the cap


async def test_discover_a_range_of_one_unit_with_values_and_guesses(tmp_path: Path) -> None:
    spec = PlantSpec.model_validate(tomllib.loads(GATEWAY)).with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        (endpoint,) = {e.modbus_tcp for e in plant.endpoints()}
        rate = float(plant.machines["press1"].values()["strokes_per_min"])
        state = plant.machines["press1"].values()["state"]
        code, out, err = await lineside(
            "discover", "modbus", endpoint, "--unit", "1", "--range", "hr:0-19",
            "--out", str(tmp_path / "map.csv"), "--json",
        )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert [p["unit_id"] for p in result["probes"]] == [1]
    (unit,) = result["units"]
    assert unit["tables"]["hr"]["readable"] == [{"first": 0, "last": 19, "count": 20}]
    rows = {
        r["address"]: r["description"]
        for r in csv.DictReader((tmp_path / "map.csv").open(encoding="utf-8"))
    }
    assert list(rows) == [f"hr:{a}" for a in range(20)]
    assert rows["hr:0"] == f"readable on unit 1 (lineside discover); value {state}"
    # The press keeps its stroke rate as a float32 ABCD at hr:2: guessed, with its value.
    assert rate > 0
    shortest = np.format_float_positional(np.float32(rate), trim="-")
    assert f"guess: float32 ABCD = {shortest}" in rows["hr:2"], rows
    assert "guess" not in rows["hr:3"]  # the float's second register


async def test_discover_a_dead_port_exits_1_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = await lineside("discover", "modbus", f"127.0.0.1:{port}", "--units", "1")
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [f"lineside: 127.0.0.1:{port}: connection refused"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["opcua", "host"], 'expected an endpoint like "opc.tcp://host:4840"'),
        (["modbus", "host:99999"], "bad port"),
        (["modbus", "host", "--units", "1-300"], "unit ids are 0..255"),
        (["modbus", "host", "--units", "a"], "bad unit ids"),
        (["modbus", "host", "--timeout", "300"], "durations need a unit"),
        (["modbus", "host", "--max-address", "70000"], "--max-address must be 0..65535"),
        (["modbus", "host", "--out", "/no/such/dir/map.csv"], "no such directory"),
        (["modbus", "host", "--range", "hr:9-3"], "--range 'hr:9-3': addresses run from 0"),
        (["modbus", "host", "--range", "x"], "--range 'x': write a table and addresses"),
    ],
)
async def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    code, out, err = await lineside("discover", *args)
    assert out == ""
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1

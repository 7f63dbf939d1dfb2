"""The running plant, read from outside by independent clients (pymodbus, asyncua)."""

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from firmware_sim.clock import ManualClock
from firmware_sim.faults import FaultMode
from firmware_sim.plant import Plant, PlantError, PlantSpec, load_plant
from firmware_sim.watch import read_machine


def spec_of(text: str) -> PlantSpec:
    import tomllib

    return PlantSpec.model_validate(tomllib.loads(text))


async def tcp_read(plant: Plant, machine: str) -> dict[str, Any]:
    endpoint = next(e for e in plant.endpoints() if e.machine == machine)
    host, _, port = endpoint.modbus_tcp.rpartition(":")
    client = AsyncModbusTcpClient(host, port=int(port), timeout=2, retries=0)
    await client.connect()
    try:
        return await read_machine(client, plant.machines[machine].profile, endpoint.unit_id)
    finally:
        client.close()


async def test_tcp_serves_each_machine_its_model_values() -> None:
    clock = ManualClock()
    plant = Plant(load_plant("demo").with_ephemeral_ports(), clock, opcua=False, rtu=False)
    async with plant:
        clock.advance(1800.0)
        plant.tick()
        for name, machine in plant.machines.items():
            got = await tcp_read(plant, name)
            want = machine.values()
            for tag in machine.profile.tags:
                if isinstance(want[tag.name], float):
                    assert got[tag.name] == pytest.approx(want[tag.name], abs=tag.scale), tag.name
                else:
                    assert got[tag.name] == want[tag.name], (name, tag.name)


async def test_same_seed_same_values_over_the_wire() -> None:
    readings = []
    for _ in range(2):
        clock = ManualClock()
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, clock, opcua=False, rtu=False) as plant:
            clock.advance(5_000.0)
            plant.tick()
            readings.append(await tcp_read(plant, "press1"))
    assert readings[0] == readings[1]
    assert readings[0]["part_count"] > 0


async def test_gateway_layout_serves_machines_by_unit_id_on_one_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = spec_of(
        f"name='gw'\n[[machines]]\nname='a'\nkind='press'\nport={port}\nunit_id=1\nseed=1\n"
        f"[[machines]]\nname='b'\nkind='loom'\nport={port}\nunit_id=2\nseed=2\n"
    )
    clock = ManualClock()
    async with Plant(spec, clock, opcua=False, rtu=False) as plant:
        assert {e.modbus_tcp for e in plant.endpoints()} == {f"127.0.0.1:{port}"}
        clock.advance(600.0)
        plant.tick()
        a = await tcp_read(plant, "a")
        b = await tcp_read(plant, "b")
        assert a["die_id"] == plant.machines["a"].values()["die_id"]
        assert b["article"] == plant.machines["b"].values()["article"]


async def test_ephemeral_ports_keep_a_gateway_together() -> None:
    spec = spec_of(
        "name='gw'\n[[machines]]\nname='a'\nkind='press'\nport=5020\nunit_id=1\n"
        "[[machines]]\nname='b'\nkind='loom'\nport=5020\nunit_id=2\n"
        "[[machines]]\nname='c'\nkind='mill'\nport=5021\n"
    ).with_ephemeral_ports()
    async with Plant(spec, ManualClock(), opcua=False, rtu=False) as plant:
        ports = {e.machine: e.modbus_tcp for e in plant.endpoints()}
        assert ports["a"] == ports["b"] != ports["c"]
        assert "5020" not in ports["a"]
        assert (await tcp_read(plant, "b"))["article"] == plant.machines["b"].values()["article"]


async def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        spec = spec_of(f"name='x'\n[[machines]]\nname='a'\nkind='mill'\nport={port}\n")
        plant = Plant(spec, ManualClock(), opcua=False, rtu=False)
        with pytest.raises(PlantError, match=f"cannot serve Modbus TCP on 127.0.0.1:{port}"):
            await plant.start()


def test_bad_rates_and_faults_are_plant_errors() -> None:
    spec = spec_of("name='x'\n[[machines]]\nname='a'\nkind='mill'\nrates={warp=1}\n")
    with pytest.raises(PlantError, match="machine 'a': unknown mill rate 'warp'"):
        Plant(spec, ManualClock(), opcua=False, rtu=False)
    spec = spec_of("name='x'\n[[machines]]\nname='a'\nkind='mill'\nfault={mode='melt'}\n")
    with pytest.raises(PlantError, match="machine 'a'"):
        Plant(spec, ManualClock(), opcua=False, rtu=False)


async def test_freeze_stops_register_updates_but_not_the_machine() -> None:
    clock = ManualClock()
    plant = Plant(load_plant("loom").with_ephemeral_ports(), clock, opcua=False, rtu=False)
    async with plant:
        clock.advance(600.0)
        plant.tick()
        before = await tcp_read(plant, "loom1")
        plant.units["loom1"].faults.set(FaultMode.FREEZE)
        clock.advance(600.0)
        plant.tick()
        assert await tcp_read(plant, "loom1") == before
        assert plant.machines["loom1"].values()["pick_count"] != before["pick_count"]
        plant.units["loom1"].faults.clear()
        plant.tick()
        assert (await tcp_read(plant, "loom1"))["pick_count"] != before["pick_count"]


async def test_reboot_resets_counters_seen_over_the_wire() -> None:
    clock = ManualClock()
    plant = Plant(load_plant("press").with_ephemeral_ports(), clock, opcua=False, rtu=False)
    async with plant:
        clock.advance(3_600.0)
        plant.tick()
        assert (await tcp_read(plant, "press1"))["part_count"] > 0
        plant.units["press1"].faults.set(FaultMode.REBOOT, down_time=0.0)
        plant.tick()
        after = await tcp_read(plant, "press1")
        assert after["part_count"] == 0
        assert plant.machines["press1"].ground_truth().reboots


async def test_rtu_bus_serves_every_machine_by_rtu_unit_id() -> None:
    clock = ManualClock()
    plant = Plant(load_plant("demo").with_ephemeral_ports(), clock, opcua=False, rtu=True)
    async with plant:
        clock.advance(900.0)
        plant.tick()
        assert plant.rtu_path is not None
        client = AsyncModbusSerialClient(plant.rtu_path, baudrate=19200, timeout=1, retries=0)
        await client.connect()
        try:
            for e in plant.endpoints():
                assert e.rtu_unit_id is not None
                profile = plant.machines[e.machine].profile
                got = await read_machine(client, profile, e.rtu_unit_id)
                assert got["state"] == plant.machines[e.machine].values()["state"]
        finally:
            client.close()


@pytest.mark.slow
async def test_opcua_serves_the_same_values() -> None:
    from asyncua import Client  # type: ignore[attr-defined]

    clock = ManualClock()
    plant = Plant(load_plant("cement").with_ephemeral_ports(), clock, opcua=True, rtu=False)
    async with plant:
        clock.advance(7_200.0)
        plant.tick()
        assert plant.opcua_server is not None
        await plant.opcua_server.refresh()
        assert plant.opcua_endpoint is not None
        async with Client(plant.opcua_endpoint, timeout=5) as client:
            ns = await client.get_namespace_index("urn:lineside:sim")
            node = client.get_node(f"ns={ns};s=mill1.energy_kwh")
            value = await node.read_value()
        assert value == pytest.approx(plant.machines["mill1"].values()["energy_kwh"])


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "agent", "sim"],
        [sys.executable, "-m", "firmware_sim"],
    ],
    ids=["lineside-sim", "python-m-firmware_sim"],
)
@pytest.mark.slow
def test_sim_commands_print_endpoints(command: list[str]) -> None:
    result = run(*command, "--plant", "loom", "--ephemeral", "--duration", "0.5", "--no-opcua")
    assert result.returncode == 0, result.stderr
    assert "loom1" in result.stdout
    assert "loom2" in result.stdout
    assert "127.0.0.1:" in result.stdout


@pytest.mark.slow
def test_sim_with_a_bad_plant_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "plant.toml"
    bad.write_text("name='x'\n[[machines]]\nname='a'\nkind='lathe'\n")
    result = run(sys.executable, "-m", "agent", "sim", "--plant", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: machines.0.kind" in result.stderr


@pytest.mark.slow
def test_sim_watch_shows_values_read_over_modbus() -> None:
    result = run(
        sys.executable,
        "-m",
        "agent",
        "sim",
        "--plant",
        "demo",
        "--ephemeral",
        "--watch",
        "--duration",
        "2",
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    for name in ("press1", "press2", "mill1", "loom1", "loom2"):
        assert name in result.stdout
    assert "unreachable" not in result.stdout
    assert "feed_rate" in result.stdout

"""`lineside run` as systemd runs it: the notify socket, the watchdog, SIGHUP (a config reload),
one agent per store.

The test binds the datagram socket systemd would (`$NOTIFY_SOCKET`, abstract here) and runs the
real command against a simulated plant.
"""

import asyncio
import json
import os
import signal
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from agent.lock import LOCK_NAME
from agent.notify import socket_address
from agent.starter import PlantMachine, plant_config
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.waiting import until


def config_for(tmp_path: Path, plant: Plant) -> Path:
    machines = []
    for e in plant.endpoints():
        host, _, port = e.modbus_tcp.rpartition(":")
        machines.append(PlantMachine(e.machine, e.kind, host, int(port), e.unit_id))
    path = tmp_path / "lineside.toml"
    text = plant_config(machines, poll_interval="200ms") + "\n[web]\nport = 0\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
async def test_run_notifies_systemd_holds_the_lock_and_reloads_on_sighup(tmp_path: Path) -> None:
    name = f"@lineside-test-{os.getpid()}-{id(tmp_path)}"
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(socket_address(name))
    manager.setblocking(False)
    received: list[tuple[str, bool, bool]] = []  # message, store there, status file there
    data = tmp_path / "data"

    def store_has_tags() -> bool:
        try:
            with sqlite3.connect(data / "lineside.db") as conn:
                return int(conn.execute("SELECT count(*) FROM tags").fetchone()[0]) > 0
        except sqlite3.Error:
            return False

    async def listen() -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = (await loop.sock_recv(manager, 4096)).decode()
            received.append((message, store_has_tags(), (data / "status.json").exists()))

    def said(prefix: str) -> list[str]:
        return [m for m, _, _ in received if m.startswith(prefix)]

    spec = load_plant("press").with_ephemeral_ports()
    listener = asyncio.create_task(listen())
    try:
        async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
            path = config_for(tmp_path, plant)
            env = {**os.environ, "NOTIFY_SOCKET": name, "WATCHDOG_USEC": "400000"}
            with (tmp_path / "stderr").open("wb") as err:
                agent = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "agent", "run", "-c", str(path), stderr=err, env=env
                )
            try:
                await until(lambda: said("READY=1"))
                ready = [r for r in received if r[0].startswith("READY=1")]
                # READY=1 comes once the store is open and every task, the status file's too,
                # has started.
                assert ready == [("READY=1\nSTATUS=polling", True, True)]
                assert (data / LOCK_NAME).read_text() == f"{agent.pid}\n"

                second = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "agent", "run", "-c", str(path),
                    stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                _, second_err = await asyncio.wait_for(second.communicate(), 60)
                assert second.returncode == 2
                assert f"already running (pid {agent.pid})" in second_err.decode()

                # A broken file: refused, the agent polls on with the config it has.
                good = path.read_text(encoding="utf-8")
                path.write_text(good.replace("[web]", "[web]\nbogus = 1"), encoding="utf-8")
                agent.send_signal(signal.SIGHUP)
                await until(lambda: len(said("READY=1")) == 2)
                assert len(said("RELOADING=1")) == 1
                # A changed source (its poll interval): applied, systemd told around it.
                path.write_text(good.replace('"200ms"', '"300ms"', 1), encoding="utf-8")
                agent.send_signal(signal.SIGHUP)
                await until(lambda: len(said("READY=1")) == 3)
                reloading = said("RELOADING=1")
                assert len(reloading) == 2
                assert all("MONOTONIC_USEC=" in m for m in reloading)
                fed = len(said("WATCHDOG=1"))
                await until(lambda: len(said("WATCHDOG=1")) >= fed + 3)
                assert agent.returncode is None  # still running, still feeding the watchdog
                assert len(said("WATCHDOG=1")) >= fed + 3

                agent.send_signal(signal.SIGTERM)
                await asyncio.wait_for(agent.wait(), 60)
            finally:
                if agent.returncode is None:
                    agent.kill()
                    await agent.wait()
        await until(lambda: bool(said("STOPPING=1")), 5)
    finally:
        listener.cancel()
        manager.close()
    stderr = (tmp_path / "stderr").read_text()
    assert agent.returncode == 0, stderr
    assert said("STOPPING=1") == ["STOPPING=1\nSTATUS=draining the store"]
    messages = [m for m, _, _ in received]
    assert messages.index("READY=1\nSTATUS=polling") < messages.index(said("STOPPING=1")[0])
    assert [m.split("\n")[0] for m in messages if m.startswith(("RELOADING", "READY"))] == [
        "READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1"
    ]  # fmt: skip
    assert "reload refused: " in stderr and "web: unknown key 'bogus'" in stderr
    assert "reload refused: 1 problem in" in stderr
    assert "reload: +0 sources, -0, ~1 changed; sinks unchanged; 0 tags added" in stderr
    assert "stopped, store drained" in stderr
    status = json.loads((data / "status.json").read_text())
    assert status["samples"] > 0

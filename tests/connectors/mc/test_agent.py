"""The real agent with MC sources: one PLC that never answers or garbles its answers does not
hold up another, its tags read bad with the reason, and no wrong value is stored as good."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from agent.model import Quality
from agent.runtime import Agent
from agent.starter import PlantMachine, render_config
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from firmware_sim.profile import load_profile
from tests.agent.test_failure_isolation import running
from tests.waiting import until

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 16):
        pass  # reads every request, answers none


async def _garbler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(1 << 16):
        # a 3E header that promises 4 bytes, end code 0 and a word: the length fits no request
        writer.write(bytes.fromhex("d000 00 ff ff03 00 0400 0000 3412"))
        await writer.drain()


@pytest.mark.parametrize("rogue", [_silent, _garbler], ids=["silent", "garbler"])
async def test_a_rogue_plc_does_not_hold_up_the_other(tmp_path: Path, rogue: Handler) -> None:
    server = await asyncio.start_server(rogue, "127.0.0.1", 0)
    rogue_port = server.sockets[0].getsockname()[1]
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        machines = [
            PlantMachine(
                "press1", "press", "127.0.0.1", plant.mc_servers["press1"].port, protocol="mc"
            ),
            PlantMachine("press2", "press", "127.0.0.1", rogue_port, protocol="mc"),
        ]
        text = render_config(["# test"], "edge", "site", machines, poll_interval="100ms")
        text = text.replace('timeout = "1s"', 'timeout = "300ms"')
        path = tmp_path / "lineside.toml"
        path.write_text(text.replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"'))
        agent = Agent(load_config(path))
        async with running(agent):
            await until(lambda: agent.links["press1-plc"].polls > 20)
            read = {t.name for t in load_profile("press").tags if t.type != "string"}
            press1 = [t.id for t in agent.tags if t.source == "press1-plc" and t.name in read]
            press2 = [t.id for t in agent.tags if t.source == "press2-plc" and t.name in read]
            assert set(agent.latest_quality[press1].tolist()) == {Quality.GOOD}
            assert set(agent.latest_quality[press2].tolist()) == {Quality.BAD}
            assert np.isnan(agent.latest_values[press2]).all()
            assert agent.links["press2-plc"].last_good_ns == 0  # never a good poll
    server.close()

"""A real agent polling a real simulated plant over Modbus TCP, with its status page bound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from agent.config import load_config
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.web.server import WebServer
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.waiting import until


@dataclass(frozen=True, slots=True)
class Running:
    agent: Agent
    plant: Plant
    web: WebServer

    @property
    def url(self) -> str:
        return self.web.url


@contextlib.asynccontextmanager
async def running_agent(
    tmp_path: Path,
    *,
    plant: str = "press",
    speed: float = 5.0,
    web: str = "port = 0",
    more: str = "",
    poll_interval: str = "100ms",
    camera_model: str | None = None,
    camera_save: str | None = None,
) -> AsyncIterator[Running]:
    """`more` is TOML added to the plant's config (sinks ...); `web` the body of `[web]`.

    With `camera_model` the first press gets the demo's simulated camera; with `camera_save`
    (a folder) it keeps the images of its rejects there.
    """
    spec = load_plant(plant).with_ephemeral_ports()
    async with Plant(spec, ScaledClock(speed), opcua=False, rtu=False) as sim:
        path = tmp_path / "lineside.toml"
        text = plant_config(
            plant_machines(sim.endpoints()),
            poll_interval=poll_interval,
            camera_model=camera_model,
            camera_save=camera_save,
        )
        path.write_text(f"{text}\n{more}\n[web]\n{web}\n", encoding="utf-8")
        agent = Agent(load_config(path))
        server = await agent.start_web()
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await until(lambda: all(link.polls > 0 for link in agent.links.values()))
            yield Running(agent, sim, server)
        finally:
            stop.set()
            await task

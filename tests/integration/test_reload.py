"""A config reload (SIGHUP) on a running agent, polling a simulated plant into a real store and
a real mosquitto: what changes applies, nothing stored is lost, the open KPI windows go on."""

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from agent.model import Quality
from agent.runtime import Agent
from agent.starter import PlantMachine, plant_config, plant_machines
from agent.web.state import StateBuilder
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.brokers import BrokerFactory
from tests.integration.test_agent_mqtt import Reader
from tests.waiting import until

TONNAGE = '  { name = "tonnage", address = "hr:12", type = "float32", unit = "t", '


def config_text(machines: list[PlantMachine], *, tonnage: bool = True, sink: str = "") -> str:
    """The plant's config; without tonnage on the first press (its line goes, the other's
    stays); `sink` is appended as is."""
    text = plant_config(machines, poll_interval="100ms", report="all")
    if not tonnage:
        start = text.index(TONNAGE)
        text = text[:start] + text[text.index("\n", start) + 1 :]
    return text + "\n[web]\nenabled = false\n" + sink


def readings(agent: Agent, path: str) -> int:
    """How many readings of the tag at `path` the agent's store holds."""
    tag_id = next((i for i, t in agent.store.tags().items() if t.path == path), None)
    return sum(
        int(np.count_nonzero(b.batch.tag_ids == tag_id))
        for b in agent.store.read_telemetry(0, 1_000_000)
    )


def total(agent: Agent) -> float:
    """Parts press1 made in the window in progress, as the KPI engine counts them."""
    snapshot = agent.kpi_snapshot()
    machine = snapshot["machines"].get("press1") if snapshot else None
    return float(machine["components"]["total"]) if machine else 0.0


async def test_reload_adds_a_tag_and_a_sink_removes_a_source_and_refuses_a_bad_file(
    tmp_path: Path, mosquitto: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lineside.agent")
    broker = mosquitto()
    reader = Reader(broker.host, broker.port, "plant/#")
    data = tmp_path / "data"
    path = tmp_path / "lineside.toml"
    base = "demo/stamping/body-line-1"
    sink = (
        f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\n'
        f'port = {broker.port}\ntopic_prefix = "plant"\n'
    )
    try:
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, ScaledClock(20.0), opcua=False, rtu=False) as plant:
            machines = plant_machines(plant.endpoints())
            assert [m.name for m in machines] == ["press1", "press2"]
            path.write_text(config_text(machines, tonnage=False), encoding="utf-8")
            agent = Agent(load_config(path))
            stop = asyncio.Event()
            running = asyncio.create_task(agent.run(stop))
            try:
                await until(lambda: total(agent) > 0)
                before = agent.kpi_snapshot()
                await until(lambda: readings(agent, f"{base}/press2/die_temp") > 5)
                assert readings(agent, f"{base}/press1/tonnage") == 0
                kpi = agent.kpi
                press2_task = agent._tasks["source press2-plc"]

                # A broken file is refused, one line a problem, and polling goes on as it was.
                path.write_text(
                    config_text(machines).replace('poll_interval = "100ms"', 'poll_interval = "x"'),
                    encoding="utf-8",
                )
                assert await agent.reload() is False
                refused = [r.message for r in caplog.records if "reload refused" in r.message]
                assert any("poll_interval" in m for m in refused), refused
                assert "the running config is kept" in refused[-1]
                samples = agent.samples
                await until(lambda: agent.samples > samples + 50)
                assert agent.samples > samples + 50
                assert agent._tasks["source press2-plc"] is press2_task

                # Tonnage on press1 and an MQTT sink: the tag is stored and published, the
                # sink starts at the store's first record, press2 polls on untouched.
                path.write_text(config_text(machines, sink=sink), encoding="utf-8")
                assert await agent.reload() is True
                assert "reload: ~1 changed" not in caplog.text
                assert "reload: +0 sources, -0, ~1 changed; +1 sink, -0, ~0 changed; " in (
                    caplog.text
                )
                assert agent._tasks["source press2-plc"] is press2_task
                assert not press2_task.done()
                assert agent.kpi is kpi
                await until(lambda: readings(agent, f"{base}/press1/tonnage") > 3)
                assert readings(agent, f"{base}/press1/tonnage") > 3

                def published_tonnage() -> bool:
                    return any("tonnage" in p.get("values", {}) for t, p in list(reader.messages))

                await until(published_tonnage)
                assert published_tonnage()
                seqs = {p["seq"] for t, p in list(reader.messages) if t.endswith("/telemetry")}
                assert 1 in seqs, "a new sink gets the store from its first record"

                # press2 and its machine go: press2 is no longer polled (the machine's
                # definition needs a restart and is kept).
                press1 = plant_machines(plant.endpoints())[:1]
                path.write_text(config_text(press1, sink=sink), encoding="utf-8")
                assert await agent.reload() is True
                assert "needs a restart: machines.press2" in caplog.text
                assert "reload: +0 sources, -1, ~0 changed; sinks unchanged; 0 tags added" in (
                    caplog.text
                )
                assert "source press2-plc" not in agent._tasks
                stored = {t.path: t.source for t in agent.store.tags().values()}
                assert stored[f"{base}/press2/die_temp"] == "press2-plc"  # as it was polled
                assert agent.tags_of_source("press1-plc") == 14  # tonnage counted, none of press2
                await agent.writer.flush()
                stopped_at = readings(agent, f"{base}/press2/die_temp")
                polled = readings(agent, f"{base}/press1/die_temp")
                await until(lambda: readings(agent, f"{base}/press1/die_temp") > polled + 10)
                assert readings(agent, f"{base}/press1/die_temp") > polled + 10
                assert readings(agent, f"{base}/press2/die_temp") == stopped_at
                # The page's and the fleet view's figures follow the reloaded sources and sinks.
                figures = await StateBuilder(agent).figures()
                assert [s["name"] for s in figures["sources"]] == ["press1-plc"]
                # The shift's windows went on through the reloads: the same window, counts on.
                after = agent.kpi_snapshot()
                assert agent.kpi is kpi
                assert before is not None and after is not None
                assert after["window"] == before["window"]
                counted = before["machines"]["press1"]["components"]["total"]
                assert after["machines"]["press1"]["components"]["total"] > counted > 0
            finally:
                stop.set()
                await asyncio.wait_for(running, 60)
    finally:
        reader.close()
    with contextlib.closing(sqlite3.connect(data / "lineside.db")) as conn:
        audits = conn.execute("SELECT data FROM events WHERE kind = 'audit'").fetchall()
    assert len(audits) == 2  # the refused reload changed nothing and is only logged
    assert "stopped, store drained" in caplog.text


DIE_ID = '  { name = "die_id", address = "hr:20", type = "string"'
PRODUCT = 'product = "die_id"'


def without_text_tags(text: str) -> str:
    """The config without the presses' text tag (`die_id`) and the KPI lines that name it."""
    return "\n".join(line for line in text.splitlines() if not line.startswith((DIE_ID, PRODUCT)))


async def test_a_reload_that_adds_a_text_tag_stores_its_strings(tmp_path: Path) -> None:
    # With no text tag the recorder of text events waits for the sources to change, not for
    # a timer: the reload that adds one must wake it.
    path = tmp_path / "lineside.toml"
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(20.0), opcua=False, rtu=False) as plant:
        full = config_text(plant_machines(plant.endpoints()))
        assert DIE_ID in full
        path.write_text(without_text_tags(full), encoding="utf-8")
        agent = Agent(load_config(path))
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        try:
            await until(lambda: readings(agent, "demo/stamping/body-line-1/press1/die_temp") > 3)
            assert agent.texts.latest == {}
            path.write_text(full, encoding="utf-8")
            agent.request_reload()
            await until(lambda: len(agent.texts.latest) == 2)  # both presses' die_id
            assert {r.quality for r in agent.texts.latest.values()} == {Quality.GOOD}
        finally:
            stop.set()
            await running

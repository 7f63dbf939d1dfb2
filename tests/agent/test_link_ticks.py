"""Links due at the same instant: one wake-up, one merged batch, and still no waiting on a
slow PLC (a real `Agent`, real Modbus TCP servers, a real store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.config import load_config
from agent.model import Quality
from agent.runtime import Agent
from agent.store import Store
from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

PLCS = 4


@pytest.fixture
async def servers() -> AsyncIterator[list[ModbusTcpServer]]:
    running = [ModbusTcpServer({1: Unit(RegisterImage(size=16), Faults())}) for _ in range(PLCS)]
    for server in running:
        await server.start()
    yield running
    for server in running:
        await server.stop()


def _agent(tmp_path: Path, servers: list[ModbusTcpServer], interval: str, store: str = "") -> Agent:
    text = (
        f'config_version = 1\n[agent]\nid = "t"\ndata_dir = "{tmp_path / "data"}"\n'
        'report = "all"\n[web]\nenabled = false\n[plant]\nsite = "s"\n' + store
    )
    for k, server in enumerate(servers):
        text += f'[[machines]]\nname = "m{k}"\narea = "a"\nline = "l"\n'
        text += (
            f'[[sources]]\nname = "plc{k}"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
            f'port = {server.port}\ntimeout = "2s"\n'
            f'[[sources.units]]\nunit_id = 1\nmachine = "m{k}"\npoll_interval = "{interval}"\n'
            '[[sources.units.tags]]\nname = "a"\naddress = "hr:0"\ntype = "uint16"\n'
        )
    path = tmp_path / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    return Agent(load_config(path))


async def _run_until(agent: Agent, condition: Callable[[], object]) -> None:
    """Run `agent` until `condition()` holds, then stop it and wait for it to end."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(condition)
    finally:
        stop.set()
        await task


def _records(tmp_path: Path) -> list[tuple[str, int]]:
    store = Store(tmp_path / "data")
    try:
        return [(r.batch.source, len(r.batch)) for r in store.read_telemetry(0, 100_000)]
    finally:
        store.close()


async def test_links_due_together_wake_once_and_store_one_record(
    tmp_path: Path, servers: list[ModbusTcpServer]
) -> None:
    agent = _agent(tmp_path, servers, "200ms")
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: min(link.polls for link in agent.links.values()) >= 8)
        # Every link sleeps until the same grid point: one timer between polls, not four.
        await until(lambda: agent.wakeups.timers == 1)
    finally:
        stop.set()
        await task
    records = _records(tmp_path)
    polls = sum(link.polls for link in agent.links.values())
    assert sum(n for _, n in records) >= polls  # every reading stored
    everyone = ",".join(f"plc{k}" for k in range(PLCS))
    merged = [n for source, n in records if source == everyone]
    # The links' polls end in the same turn of the loop: one record holds all four.
    assert len(merged) >= len(records) // 2 and all(n == PLCS for n in merged)
    assert len(records) < polls


async def test_a_plc_answering_a_little_later_is_in_the_same_record(
    tmp_path: Path, servers: list[ModbusTcpServer]
) -> None:
    # Its answer comes turns of the loop after the others', within the hold (the store's
    # flush interval, long here so a loaded machine does not matter).
    servers[0].units[1].faults.set("slow", delay="20ms")
    agent = _agent(tmp_path, servers, "200ms", '[store]\nflush_interval = "300ms"\n')
    await _run_until(agent, lambda: min(link.polls for link in agent.links.values()) >= 6)
    records = _records(tmp_path)
    everyone = {f"plc{k}" for k in range(PLCS)}
    merged = [n for source, n in records if set(source.split(",")) == everyone]
    # One record per tick, the late one's readings in it (a stop may cut the last tick short).
    assert len(merged) >= len(records) - 1 and all(n == PLCS for n in merged)


async def test_a_link_polling_back_to_back_puts_one_poll_in_a_batch(
    tmp_path: Path, servers: list[ModbusTcpServer]
) -> None:
    # While the slow one polls, the others end many polls within the hold: each still goes on
    # before its link's next one begins, so a record holds a tag once, stamped by its poll.
    servers[0].units[1].faults.set("slow", delay="50ms")
    agent = _agent(tmp_path, servers, "0s", '[store]\nflush_interval = "300ms"\n')
    await _run_until(agent, lambda: agent.links["plc0"].polls >= 5)
    store = Store(tmp_path / "data")
    try:
        batches = [r.batch for r in store.read_telemetry(0, 100_000)]
    finally:
        store.close()
    assert sum(len(b) for b in batches) >= sum(link.polls for link in agent.links.values())
    for batch in batches:
        assert len(set(batch.tag_ids.tolist())) == len(batch)  # no tag twice in a record
        assert len(batch.source.split(",")) == len(set(batch.source.split(",")))


async def test_a_slow_plc_delays_neither_the_others_polls_nor_their_records(
    tmp_path: Path, servers: list[ModbusTcpServer]
) -> None:
    servers[0].units[1].faults.set("slow", delay="1s")  # answers within its 2 s timeout
    agent = _agent(tmp_path, servers, "100ms")
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: agent.links["plc1"].polls >= 25)
        slow = agent.links["plc0"].polls
    finally:
        stop.set()
        await task
    # 25 polls of the fast links took 2.5 s: the slow one managed at most three.
    assert slow <= 3
    assert all(agent.links[f"plc{k}"].polls >= 25 for k in range(1, PLCS))
    records = _records(tmp_path)
    fast = ",".join(f"plc{k}" for k in range(1, PLCS))
    assert sum(1 for source, _ in records if source == fast) >= 20  # not held for plc0
    assert int(agent.latest_quality[agent.tags.id_of("m1", "a")]) == Quality.GOOD

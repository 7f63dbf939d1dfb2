"""`agent.heartbeat` on subscribed OPC UA tags: a quiet tag is repeated, so it reaches the store.

A subscription reports a value only when it changes; without the source repeating it, a tag that
never changes would be stored once and could not be told from a dead one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agent.config import load_config
from agent.export import export_readings
from agent.model import Quality, ReadingBatch
from agent.runtime import Agent
from firmware_sim.opcua_server import SimOpcUaServer
from tests.connectors.opcua.sim import make_config, make_source, start_server
from tests.waiting import until

module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[SimOpcUaServer]:
    server = await start_server()
    yield server
    await server.stop()


def rows_of(batches: list[ReadingBatch], tag_id: int) -> list[tuple[float, int, int]]:
    return [
        (float(v), int(q), int(t))
        for b in batches
        for i, v, q, t in zip(b.tag_ids, b.values, b.quality, b.timestamps(), strict=True)
        if i == tag_id
    ]


@module_loop
@pytest.mark.slow
async def test_a_quiet_subscribed_tag_is_repeated_at_the_heartbeat(server: SimOpcUaServer) -> None:
    tags = [{"name": "i16", "node_id": f"ns={server.namespace_index};s=m1.i16"}]
    config = make_config(server.endpoint, tags, interval="100ms")
    beating, table = make_source(config)
    beating.heartbeat = 0.3
    silent, _ = make_source(config)  # heartbeat 0: never repeats
    got: dict[str, list[ReadingBatch]] = {"beating": [], "silent": []}
    for source in (beating, silent):
        await source.connect()

    tag_id = table.tags[0].id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    try:
        while len(rows_of(got["beating"], tag_id)) < 3:
            assert loop.time() < deadline, "fewer than two repeats within 10 s"
            got["beating"] += await beating.poll(list(beating.poll_groups()))
            got["silent"] += await silent.poll(list(silent.poll_groups()))
            await asyncio.sleep(0.05)
    finally:
        for source in (beating, silent):
            await source.close()
    repeated = rows_of(got["beating"], tag_id)
    assert [(v, q) for v, q, _ in repeated] == [(-32768.0, Quality.GOOD)] * len(repeated)
    stamps = [t for _, _, t in repeated]
    # Each repeat is stamped when it was vouched for, at least a heartbeat after the one before.
    assert all(b - a >= 300_000_000 for a, b in itertools.pairwise(stamps))
    assert beating.statistics().extras["heartbeats"] == len(repeated) - 1
    assert len(rows_of(got["silent"], tag_id)) == 1  # the value itself never changed


@module_loop
async def test_the_agent_stores_a_quiet_subscribed_tag_at_its_heartbeat(
    server: SimOpcUaServer, tmp_path: Path
) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(
        "config_version = 1\n[agent]\nid = 'edge'\nreport = 'changes'\nheartbeat = '300ms'\n"
        "[plant]\nsite = 's'\n[[machines]]\nname = 'm1'\narea = 'a'\nline = 'l'\n"
        f"[[sources]]\nname = 'ua'\ntype = 'opcua'\nendpoint = '{server.endpoint}'\n"
        "machine = 'm1'\ninterval = '100ms'\n"
        f"tags = [{{ name = 'i16', node_id = 'ns={server.namespace_index};s=m1.i16' }}]\n",
        encoding="utf-8",
    )
    agent = Agent(load_config(path))
    (source,) = agent.sources
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: source.statistics().extras.get("heartbeats", 0) >= 2, limit=15)
    finally:
        stop.set()
        await task
    rows = [r for r in export_readings(tmp_path / "data") if r.path.endswith("/m1/i16")]
    assert len(rows) >= 3  # the first value, then one per heartbeat: the docs' promise
    assert {r.quality for r in rows} == {Quality.GOOD}

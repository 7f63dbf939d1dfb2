"""S7Source against python-snap7's server over real sockets: values, item errors, PLC states."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from snap7.server import Server

from agent.errors import ConnectError
from agent.model import Quality, ReadingBatch
from agent.tags import TagTable
from connectors.s7.source import STOP_REASON, S7Source
from firmware_sim.faults import Faults
from firmware_sim.s7_server import SimS7Server

from .conftest import db1_image, s7_config, s7_source

pytestmark = pytest.mark.timeout(30)

GOOD, BAD = Quality.GOOD.value, Quality.BAD.value
TAGS = {
    "speed": "DB1.DBD0:REAL",
    "temp": "DB1.DBW4:INT",
    "run": "DB1.DBX6.0",
    "fault": "DB1.DBX6.1",
    "door": "DB1.DBX6.3",
    "count": "DB1.DBD8:DINT",
    "energy": "DB1.DBB16:LREAL",
    "word": "MW10",
    "flag": "M0.1",
}
EXPECTED = {
    "speed": 21.5,
    "temp": -7.0,
    "run": 1.0,
    "fault": 0.0,
    "door": 1.0,
    "count": 123456.0,
    "energy": 2.75,
    "word": 999.0,
    "flag": 1.0,
}


def by_name(
    source: S7Source, batches: list[ReadingBatch], tags: TagTable
) -> dict[str, tuple[float, int]]:
    out = {}
    for batch in batches:
        for tag_id, value, quality in zip(
            batch.tag_ids.tolist(), batch.values.tolist(), batch.quality.tolist(), strict=True
        ):
            out[tags.tags[tag_id].name] = (value, quality)
    return out


def reasons_by_name(source: S7Source, tags: TagTable) -> dict[str, str]:
    return {tags.tags[i].name: r for i, r in source.reasons.by_tag().items()}


async def test_lineside_reads_snap7s_server_in_one_request(
    tmp_path: Path, snap7_server: tuple[Server, int]
) -> None:
    config = s7_config(tmp_path, snap7_server[1], TAGS)
    tags = TagTable.from_config(config)
    source = s7_source(config)
    await source.connect()
    try:
        readings = by_name(source, await source.poll(list(source.poll_groups())), tags)
    finally:
        await source.close()
    assert readings == {name: (value, GOOD) for name, value in EXPECTED.items()}
    stats = source.statistics()
    plan = source.plans()["1s"]
    assert stats.requests == plan.requests_per_poll == plan.minimum_requests == 1
    assert stats.extras["pdu_size"] == 480  # snap7's server grants at most 480
    assert source.reasons.by_tag() == {}


async def test_a_smaller_pdu_grant_makes_the_plan_again(
    tmp_path: Path, snap7_server: tuple[Server, int]
) -> None:
    config = s7_config(tmp_path, snap7_server[1], TAGS, pdu_size="960")
    source = s7_source(config)
    assert source.plans()["1s"].pdu_size == 960
    await source.connect()
    try:
        assert source.plans()["1s"].pdu_size == 480
        batches = await source.poll(["1s"])
    finally:
        await source.close()
    assert all(batch.quality.tolist() == [GOOD] * len(batch.quality) for batch in batches)


async def test_a_db_that_does_not_exist_makes_only_its_tags_bad(
    tmp_path: Path, snap7_server: tuple[Server, int]
) -> None:
    config = s7_config(tmp_path, snap7_server[1], {**TAGS, "ghost": "DB9.DBW0"})
    tags = TagTable.from_config(config)
    source = s7_source(config)
    await source.connect()
    try:
        readings = by_name(source, await source.poll(["1s"]), tags)
    finally:
        await source.close()
    value, quality = readings.pop("ghost")
    assert quality == BAD and math.isnan(value)
    assert readings == {name: (value, GOOD) for name, value in EXPECTED.items()}
    assert reasons_by_name(source, tags) == {
        "ghost": "DB9 does not exist on the CPU (0A): create it or fix the DB number"
    }
    stats = source.statistics()
    assert (stats.extras["item_errors"], stats.exceptions, stats.responses) == (1, 1, 1)
    assert stats.latency_p50_s > 0 and stats.latency is not None and stats.latency.count == 1


async def test_an_offset_past_the_end_of_the_db_costs_only_its_own_tag(
    tmp_path: Path, snap7_server: tuple[Server, int]
) -> None:
    # DB1 has 100 bytes: DBW96 is inside, DBD98 runs past the end; they merge into one item.
    config = s7_config(tmp_path, snap7_server[1], {"last": "DB1.DBW96", "past": "DB1.DBD98"})
    tags = TagTable.from_config(config)
    source = s7_source(config)
    await source.connect()
    try:
        first = by_name(source, await source.poll(["1s"]), tags)
        second = by_name(source, await source.poll(["1s"]), tags)
    finally:
        await source.close()
    assert [q for _, q in first.values()] == [BAD, BAD]  # one item: the CPU refused it whole
    assert second["last"] == (4242.0, GOOD)
    assert second["past"][1] == BAD
    assert source.statistics().extras["replans"] == 1
    assert reasons_by_name(source, tags) == {
        "past": "address out of range (05): DB1 is shorter than byte 101, or it has optimized "
        "block access (TIA Portal: DB properties > Attributes > untick 'Optimized block "
        "access', compile, download)"
    }


@pytest.fixture
def sim_cpu() -> Iterator[tuple[SimS7Server, int]]:
    server = SimS7Server({1: db1_image()}, Faults())
    port = server.start_on("127.0.0.1", 0)
    yield server, port
    server.stop()


async def test_put_get_refused_says_what_to_tick_in_tia_portal(
    tmp_path: Path, sim_cpu: tuple[SimS7Server, int]
) -> None:
    server, port = sim_cpu
    server.faults.set("exception", code=0x04)
    config = s7_config(tmp_path, port, {"speed": "DB1.DBD0:REAL", "temp": "DB1.DBW4:INT"})
    tags = TagTable.from_config(config)
    source = s7_source(config)
    await source.connect()
    try:
        readings = by_name(source, await source.poll(["1s"]), tags)
        server.faults.clear()
        again = by_name(source, await source.poll(["1s"]), tags)
    finally:
        await source.close()
    assert all(q == BAD and math.isnan(v) for v, q in readings.values())
    assert again == {"speed": (21.5, GOOD), "temp": (-7.0, GOOD)}
    assert source.statistics().extras["refused"] == 1


async def test_put_get_reason(tmp_path: Path, sim_cpu: tuple[SimS7Server, int]) -> None:
    server, port = sim_cpu
    server.faults.set("exception", code=0x04)
    config = s7_config(tmp_path, port, {"speed": "DB1.DBD0:REAL"})
    tags = TagTable.from_config(config)
    source = s7_source(config)
    await source.connect()
    try:
        await source.poll(["1s"])
    finally:
        await source.close()
    assert reasons_by_name(source, tags) == {
        "speed": "the CPU refused the read (function not allowed in this context (8104)): on "
        "an S7-1200/1500 tick 'Permit access with PUT/GET communication from remote partner' "
        "(TIA Portal: CPU properties > Protection & Security > Connection mechanisms) and "
        "download"
    }


async def test_a_cpu_in_stop_reads_bad_until_it_runs_again(
    tmp_path: Path, sim_cpu: tuple[SimS7Server, int]
) -> None:
    server, port = sim_cpu
    server.stop_cpu()
    config = s7_config(tmp_path, port, {"speed": "DB1.DBD0:REAL"}, state_check='"1ms"')
    tags = TagTable.from_config(config)
    source = s7_source(config)
    await source.connect()
    try:
        stopped = by_name(source, await source.poll(["1s"]), tags)
        assert reasons_by_name(source, tags) == {"speed": STOP_REASON}
        assert source.statistics().extras["cpu_stopped"] == 1
        server.run()
        # RUN again is seen at the next state check (every 1 ms here), at most a few polls on.
        async with asyncio.timeout(5):
            while True:
                running = by_name(source, await source.poll(["1s"]), tags)
                if running["speed"][1] == GOOD:
                    break
                await asyncio.sleep(0.002)
    finally:
        await source.close()
    assert stopped["speed"][1] == BAD
    assert running["speed"] == (21.5, GOOD)
    assert source.reasons.by_tag() == {}


async def test_nothing_listening_is_a_refused_connection(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = s7_source(s7_config(tmp_path, port, {"speed": "DB1.DBD0:REAL"}))
    with pytest.raises(ConnectError) as caught:
        await source.connect()
    assert str(caught.value) == (
        f"127.0.0.1:{port} refused the connection: is this the CPU's (or its CP's) address, "
        "with port 102 open on the way?"
    )
    bad = source.bad_batches(["1s"], 1)
    assert bad[0].quality.tolist() == [BAD] and np.isnan(bad[0].values).all()

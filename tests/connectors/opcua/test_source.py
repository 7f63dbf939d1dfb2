"""OpcUaSource against the simulated server over real sockets: both modes, every type, limits.

Servers are module fixtures on one module event loop (asyncua's server takes over a second to
load its address space).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from pydantic import ValidationError

from agent.model import Quality, ReadingBatch
from connectors.opcua.source import OpcUaSource
from firmware_sim.opcua_server import SimOpcUaServer
from tests.connectors.opcua.sim import (
    BAD,
    EXPECTED,
    WHEN,
    by_name,
    make_config,
    make_source,
    start_server,
    tag_entries,
)

module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[SimOpcUaServer]:
    server = await start_server()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited() -> AsyncIterator[SimOpcUaServer]:
    server = await start_server(max_nodes_per_read=4, max_monitored_items_per_subscription=5)
    yield server
    await server.stop()


async def read_all(source: OpcUaSource, want: int, within: float = 10.0) -> list[ReadingBatch]:
    """Poll every group until `want` distinct tags have readings."""
    got: list[ReadingBatch] = []

    async def step() -> int:
        got.extend(await source.poll(list(source.poll_groups())))
        return len({int(i) for b in got for i in b.tag_ids})

    seen = 0

    def enough() -> bool:
        return seen >= want

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        seen = await step()
        if enough():
            return got
        if loop.time() > deadline:
            pytest.fail(f"only {seen} of {want} tags read within {within} s")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
@module_loop
@pytest.mark.slow
async def test_every_data_type_reads_as_float64_and_the_rest_reads_bad(
    server: SimOpcUaServer, mode: str
) -> None:
    config = make_config(
        server.endpoint, tag_entries(server.namespace_index), mode=mode, interval="100ms"
    )
    source, table = make_source(config)
    await source.connect()
    try:
        readings = by_name(table, await read_all(source, len(table)))
    finally:
        await source.close()
    for name, expected in EXPECTED.items():
        value, quality, ts = readings[name]
        assert quality == Quality.GOOD, name
        assert value == pytest.approx(expected, rel=1e-15), name
        assert ts > 0
    for name in BAD:
        value, quality, _ = readings[name]
        assert quality == Quality.BAD and math.isnan(value), name
    stats = source.statistics()
    # One error each, of its own kind: String, undeclared array, unknown node.
    assert stats.extras["errors_unsupported_type"] == 1
    assert stats.extras["errors_array_mismatch"] == 1
    assert stats.extras["errors_bad_node"] == 1
    if mode == "subscribe":
        assert stats.extras["subscriptions"] == 1
        assert stats.extras["monitored_items"] == len(table) - len(BAD) - 2  # arr is 1 item, 3 tags
        assert stats.extras["notifications"] >= stats.extras["monitored_items"]
    else:
        assert stats.requests >= 1 and stats.extras["request_errors"] == 0


@module_loop
async def test_problems_are_reported_once_across_reconnects(server: SimOpcUaServer) -> None:
    config = make_config(server.endpoint, tag_entries(server.namespace_index), mode="poll")
    source, _ = make_source(config)
    for _ in range(3):
        await source.connect()
        await source.poll(list(source.poll_groups()))
        await source.close()
    stats = source.statistics()
    assert stats.extras["errors_unsupported_type"] == 1
    assert stats.extras["errors_bad_node"] == 1
    assert stats.reconnects == 2


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
@module_loop
async def test_status_severity_gives_the_quality(server: SimOpcUaServer, mode: str) -> None:
    ns = server.namespace_index
    node = f"ns={ns};s=m1.level"
    config = make_config(
        server.endpoint, [{"name": "level", "node_id": node}], mode=mode, interval="50ms"
    )
    source, table = make_source(config)
    await source.connect()
    try:
        for value, status, quality in (
            (3.0, StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN),
            (4.0, StatusCodes.BadSensorFailure, Quality.BAD),
            (5.0, StatusCodes.Good, Quality.GOOD),
        ):
            await server.write_variable(node, ua.Variant(value, ua.VariantType.Double), status)
            latest: dict[str, tuple[float, int, int]] = {}
            for _ in range(100):
                latest.update(by_name(table, await source.poll(list(source.poll_groups()))))
                if latest.get("level", (0.0, -1, 0))[1] == quality:
                    break
                await asyncio.sleep(0.05)
            got, q, _ = latest["level"]
            assert q == quality
            # A bad reading carries no number; uncertain keeps the value the server gave.
            assert math.isnan(got) if quality == Quality.BAD else got == value
    finally:
        await server.write_variable(node, ua.Variant(0.0, ua.VariantType.Double))
        await source.close()


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
@pytest.mark.parametrize("choice", ["source", "server"])
@module_loop
async def test_the_reading_time_is_the_configured_timestamp(
    server: SimOpcUaServer, mode: str, choice: str
) -> None:
    node = f"ns={server.namespace_index};s=m1.level"
    config = make_config(
        server.endpoint,
        [{"name": "level", "node_id": node}],
        mode=mode,
        interval="50ms",
        timestamp=choice,
    )
    source, table = make_source(config)
    await source.connect()
    try:
        await server.write_variable(node, ua.Variant(42.0, ua.VariantType.Double), source_time=WHEN)
        readings = {}
        for _ in range(100):
            readings.update(by_name(table, await source.poll(list(source.poll_groups()))))
            if readings.get("level", (0.0,))[0] == 42.0:
                break
            await asyncio.sleep(0.05)
        _, _, ts = readings["level"]
        when_ns = int(WHEN.timestamp()) * 10**9 + 250_000_000
        if choice == "source":
            assert ts == when_ns
        else:
            assert ts > when_ns + 86_400 * 10**9  # the server stamped it now, not in 2024
            assert ts <= int(datetime.now(UTC).timestamp() * 1e9) + 10**9
    finally:
        await server.write_variable(node, ua.Variant(0.0, ua.VariantType.Double))
        await source.close()


@module_loop
@pytest.mark.slow
async def test_the_server_refuses_reads_above_its_advertised_limit(
    limited: SimOpcUaServer,
) -> None:
    # What makes the next test meaningful: a client that ignored MaxNodesPerRead would fail.
    async with Client(limited.endpoint, timeout=5) as client:
        nodes = [client.get_node(f"ns={limited.namespace_index};s=m1.i16")] * 5
        with pytest.raises(UaStatusCodeError) as caught:
            await client.read_values(nodes)
        assert caught.value.code == StatusCodes.BadTooManyOperations
        assert len(await client.read_values(nodes[:4])) == 4


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
@module_loop
async def test_reads_and_subscriptions_are_split_at_the_servers_limits(
    limited: SimOpcUaServer, mode: str
) -> None:
    config = make_config(
        limited.endpoint,
        tag_entries(limited.namespace_index),
        mode=mode,
        interval="100ms",
        max_nodes_per_read=100,  # a cap above the server's: the server's 4 wins
    )
    source, table = make_source(config)
    live_nodes = len(config.tags) - len(BAD)  # 14 nodes monitored or read
    await source.connect()
    try:
        readings = by_name(table, await read_all(source, len(table)))
        stats = source.statistics()
        if mode == "poll":
            reads_per_poll = math.ceil(live_nodes / 4)
            assert stats.requests == stats.polls * reads_per_poll
            assert stats.extras["request_errors"] == 0
        else:
            assert sorted(limited.monitored_item_counts()) == [4, 5, 5]
            assert stats.extras["subscriptions"] == math.ceil(live_nodes / 5)
    finally:
        await source.close()
    assert all(readings[name][1] == Quality.GOOD for name in EXPECTED)
    assert limited.subscription_count == 0  # closed cleanly: nothing left behind


@module_loop
async def test_an_absolute_deadband_is_filtered_by_the_server(server: SimOpcUaServer) -> None:
    node = f"ns={server.namespace_index};s=m1.level"
    config = make_config(
        server.endpoint,
        [{"name": "level", "node_id": node, "deadband": 10}],
        interval="50ms",
    )
    source, _ = make_source(config)
    await source.connect()
    seen: list[float] = []
    try:
        for value in (1.0, 5.0, 20.0, 25.0, 40.0):
            await server.write_variable(node, ua.Variant(value, ua.VariantType.Double))
            await asyncio.sleep(0.15)  # longer than the publishing interval: one sample each
            for batch in await source.poll(list(source.poll_groups())):
                seen.extend(batch.values.tolist())
    finally:
        await server.write_variable(node, ua.Variant(0.0, ua.VariantType.Double))
        await source.close()
    # 0 (initial), then only moves of more than 10 from the last reported value.
    assert seen == [0.0, 20.0, 40.0]


def test_groups_follow_each_tags_mode_and_interval() -> None:
    config = make_config(
        "opc.tcp://127.0.0.1:4840",
        [
            {"name": "a", "node_id": "ns=2;s=a"},
            {"name": "b", "node_id": "ns=2;s=b", "mode": "poll", "interval": "250ms"},
            {"name": "c", "node_id": "ns=2;s=c", "array_length": 2, "interval": "250ms"},
        ],
    )
    source, table = make_source(config)
    assert source.poll_groups() == {
        "subscribe 250ms": 0.25,
        "poll 250ms": 0.25,
        "subscribe 1s": 1.0,
    }
    assert [t.name for t in table] == ["a", "b", "c[0]", "c[1]"]
    assert config.poll_intervals() == (0.25, 1.0)
    bad = source.bad_batches(["subscribe 250ms"], 7)
    assert [b.tag_ids.tolist() for b in bad] == [[2, 3]]
    assert bad[0].quality.tolist() == [Quality.BAD] * 2 and bad[0].ts_ns.tolist() == [7]


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"array_length": 0}, "greater than or equal to 1"),
        ({"mode": "push"}, "'subscribe' or 'poll'"),
        ({"interval": "0s"}, None),
        ({"name": "a[0]"}, None),  # element names are made, never configured
    ],
)
def test_bad_tag_settings_are_refused(tag: dict[str, object], message: str | None) -> None:
    with pytest.raises(ValidationError, match=message):
        make_config("opc.tcp://h:4840", [{"name": "a", "node_id": "ns=2;s=a", **tag}])


def test_bad_source_settings_are_refused() -> None:
    tags = [{"name": "a", "node_id": "ns=2;s=a"}]
    for extra in ({"queue_size": 0}, {"timestamp": "device"}, {"max_nodes_per_read": 0}):
        with pytest.raises(ValidationError):
            make_config("opc.tcp://h:4840", tags, **extra)


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
@module_loop
async def test_a_declared_type_that_cannot_hold_the_node_is_refused_by_name(
    server: SimOpcUaServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    ns = server.namespace_index
    declared = {  # tag → (node, declared type)
        "f32_as_i16": ("f32", "int16"),  # the case: a Float node read as int16
        "u16_as_i16": ("u16", "int16"),  # 65535 does not fit
        "f64_as_f32": ("f64", "float32"),  # 1e300 does not fit
        "i16_as_i32": ("i16", "int32"),  # widening is fine
        "flag_as_u16": ("flag", "uint16"),
        "f32_as_f32": ("f32", "float32"),
        "u64_as_f64": ("u64", "float64"),
    }
    tags = [
        {"name": name, "node_id": f"ns={ns};s=m1.{node}", "type": kind}
        for name, (node, kind) in declared.items()
    ]
    source, table = make_source(make_config(server.endpoint, tags, mode=mode, interval="100ms"))
    await source.connect()
    try:
        readings = by_name(table, await read_all(source, len(table)))
    finally:
        await source.close()
    refused = {"f32_as_i16", "u16_as_i16", "f64_as_f32"}
    for name in declared:
        assert (readings[name][1] == Quality.BAD) == (name in refused), name
    assert readings["i16_as_i32"][0] == -32768.0 and readings["flag_as_u16"][0] == 1.0
    assert source.statistics().extras["errors_type_mismatch"] == 3
    assert (
        f'plc: tag f32_as_i16 (ns={ns};s=m1.f32): the node is Float, which type = "int16" '
        'cannot hold: declare type = "float32" or leave type out'
    ) in caplog.messages


def test_type_refusal_rules() -> None:
    from connectors.opcua.nodes import type_refusal

    def node(ident: int, ns: int = 0) -> ua.NodeId:
        return ua.NodeId(ident, ns)  # type: ignore[arg-type]

    assert type_refusal("int16", node(10)).startswith("the node is Float")
    assert type_refusal("int32", node(4)) == "" and type_refusal("int16", node(2)) == ""
    assert type_refusal("uint16", node(4)) != ""  # Int16 has negatives
    assert type_refusal("int16", node(1)) == "" and type_refusal("bool", node(4)) != ""
    assert type_refusal("float32", node(9)) == "" and type_refusal("float32", node(11)) != ""
    assert type_refusal("float64", node(13)) == "" and type_refusal("int64", node(13)) != ""
    assert type_refusal("int16", node(10, ns=3)) == ""  # not a built-in type: not checked
    assert type_refusal("int16", node(29)) == ""  # Enumeration: not checked

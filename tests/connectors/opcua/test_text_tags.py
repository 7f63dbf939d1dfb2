"""OPC UA text tags (`type = "string"`) against the simulated server: String, LocalizedText and
ByteString nodes read into the source's `texts`, never into a batch; bad statuses and missing
nodes read bad with their reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from agent.model import Quality
from agent.texts import TextReading
from firmware_sim.opcua_server import SimOpcUaServer
from tests.connectors.opcua.sim import make_config, make_source, start_server

module_loop = pytest.mark.asyncio(loop_scope="module")

# PackML state names and recipe ids, as servers publish them.
TEXT_NODES: dict[str, ua.Variant] = {
    "recipe": ua.Variant("R-1042", ua.VariantType.String),
    "state_name": ua.Variant(ua.LocalizedText("Execute", "en-US"), ua.VariantType.LocalizedText),
    "blob": ua.Variant(b"\x00\x01DIE", ua.VariantType.ByteString),
    "failed": ua.Variant("stale", ua.VariantType.String),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[SimOpcUaServer]:
    server = await start_server()
    for name, variant in TEXT_NODES.items():
        await server.add_variable("m1", name, variant)
    yield server
    await server.stop()


def latest(source: object, table: object) -> dict[str, TextReading]:
    texts = source.texts  # type: ignore[attr-defined]
    return {table.by_id(i).name: r for i, r in texts.latest.items()}  # type: ignore[attr-defined]


@module_loop
async def test_string_localized_text_and_byte_string_nodes_read_as_text(
    server: SimOpcUaServer,
) -> None:
    ns = server.namespace_index
    text_tags = [*TEXT_NODES, "text", "missing"]  # "text": the profile's own String node
    tags = [
        {
            "name": n,
            "node_id": f"ns={ns};s=m1.{'nope' if n == 'missing' else n}",
            "type": "string",
        }
        for n in text_tags
    ]
    tags.append({"name": "f64", "node_id": f"ns={ns};s=m1.f64"})
    # Subscribe is the source's mode: the text tags are polled at the interval all the same.
    config = make_config(server.endpoint, tags, mode="subscribe", interval="100ms")
    source, table = make_source(config)
    await server.write_variable(
        f"ns={ns};s=m1.failed", TEXT_NODES["failed"], StatusCodes.BadSensorFailure
    )
    assert set(source.poll_groups()) == {"subscribe 100ms", "poll 100ms"}
    await source.connect()
    try:
        batches = await source.poll(list(source.poll_groups()))
        got = latest(source, table)
        # A change is read at the next poll.
        await server.write_variable(f"ns={ns};s=m1.recipe", ua.Variant("R-2001"))
        await source.poll(list(source.poll_groups()))
        changed = latest(source, table)["recipe"]
    finally:
        await source.close()
    text_ids = {table.id_of("m1", n) for n in text_tags}
    assert not text_ids & {int(i) for b in batches for i in b.tag_ids}  # never in a batch
    assert {n: (r.value, r.quality) for n, r in got.items() if r.quality == Quality.GOOD} == {
        "recipe": ("R-1042", Quality.GOOD),
        "state_name": ("Execute", Quality.GOOD),  # the text, without its locale
        "blob": ("AAFESUU=", Quality.GOOD),  # base64 of 00 01 'D' 'I' 'E'
        "text": ("DIE-7", Quality.GOOD),
    }
    assert (got["failed"].value, got["failed"].reason) == (None, "BadSensorFailure")
    assert got["missing"].quality == Quality.BAD and got["missing"].reason == "BadNodeIdUnknown"
    assert all(r.ts_ns > 0 for r in got.values())
    assert changed.value == "R-2001"

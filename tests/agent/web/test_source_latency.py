"""The OPC UA source's request latency histogram, against the simulated server (real sockets).

The Modbus sources' histogram is checked end to end in test_server.py (`/metrics`).
"""

from __future__ import annotations

import pytest

from tests.connectors.opcua.sim import make_config, make_source, start_server, tag_entries


@pytest.mark.parametrize("mode", ["poll", "subscribe"])
@pytest.mark.slow
async def test_every_answered_read_is_in_the_histogram(mode: str) -> None:
    server = await start_server()
    try:
        config = make_config(
            server.endpoint, tag_entries(server.namespace_index), mode=mode, interval="100ms"
        )
        source, _ = make_source(config)
        await source.connect()
        try:
            before = source.statistics().latency
            for _ in range(5):
                await source.poll(list(source.poll_groups()))
            stats = source.statistics()
        finally:
            await source.close()
    finally:
        await server.stop()
    assert before is not None
    latency = stats.latency
    assert latency is not None
    answered = stats.requests - stats.extras["request_errors"]
    if mode == "poll":
        assert answered >= 5 and latency.count == answered
        assert 0 < latency.sum < answered  # each well under a second on this machine
    else:
        assert latency.count == 0 and latency.sum == 0  # subscriptions send no Read

"""Store full while the MES is down: every reading is either delivered or reported as dropped.

Produced = delivered (de-duplicated by the MES) + dropped (the gap records the MES received).
"""

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.forward import Forwarder
from agent.lane import ForwardSettings
from agent.model import Quality, ReadingBatch
from agent.runtime import sink_tags
from agent.sink import SinkContext
from agent.store import Store, StoreWriter
from agent.tags import Tag
from connectors.http.config import HttpSinkConfig
from connectors.http.sink import HttpSink
from tests.connectors.http.mes_server import MesServer

TAGS = 100


def http_sink(url: str, context: SinkContext) -> HttpSink:
    config = HttpSinkConfig.model_validate({"type": "http", "name": "mes", "url": url})
    return HttpSink(config, context)


async def forward_for(forwarder: Forwarder, seconds: float) -> None:
    task = asyncio.create_task(forwarder.run())
    await asyncio.sleep(seconds)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.slow
async def test_produced_equals_delivered_plus_reported_drops(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_tags(
            [Tag(path=f"s/a/l/m/t{i}", machine="m", name=f"t{i}") for i in range(TAGS)]
        )
        store.register_sinks(["mes"])
    store = Store(tmp_path)
    context = SinkContext("edge-1", sink_tags(store.tags()))
    writer = StoreWriter(tmp_path, max_bytes=300_000, housekeeping_interval=0.05)
    settings = ForwardSettings(batch_size=100, idle_wait=0.01)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/mes"  # refused: the MES is down
    down = Forwarder(http_sink(dead, context), store, writer, SystemClock(), settings)
    down._backoff.initial = 0.02
    down_task = asyncio.create_task(forward_for(down, 3.0))
    produced = 0
    clock = SystemClock()
    for i in range(400):  # 400 polls of 100 tags: far more than 300 kB holds
        batch = ReadingBatch.from_columns(
            "plc", range(1, TAGS + 1), [i] * TAGS, Quality.GOOD, clock.time_ns()
        )
        assert writer.submit_readings(batch)
        produced += TAGS
        await asyncio.sleep(0.005)
    await writer.flush()
    await down_task
    assert writer.statistics().dropped_readings > 0, "the bound was reached"
    assert down.stats.sent["telemetry"] == 0
    with MesServer().running() as mes:
        up = Forwarder(http_sink(mes.url, context), store, writer, SystemClock(), settings)
        await forward_for(up, 3.0)
        stored = mes.stored()
    delivered = {seq for (_, stream, seq) in stored if stream == "telemetry"}
    gaps = [r for (_, stream, _), r in stored.items() if stream == "gaps"]
    reported = sum(g["readings"] for g in gaps)
    assert reported == writer.statistics().dropped_readings
    # Each produced reading was delivered or named by a gap record, by seq (the MES
    # de-duplicates by seq). A record in flight when the bound dropped it may be both: the gap
    # is written against the acknowledged cursor, and the send's answer comes after.
    named: set[int] = set()
    for g in gaps:
        named.update(range(g["first_seq"], g["last_seq"] + 1))
    assert all(len(r["readings"]) == TAGS for (_, s, _), r in stored.items() if s == "telemetry")
    assert len(delivered | named) * TAGS == produced
    writer.close()
    store.close()

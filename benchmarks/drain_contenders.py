"""One drain, run as its own process: `python -m benchmarks.drain_contenders KIND ...`.

KIND is one of:

- `mqtt`, `mqtt-b64`, `http`, `sparkplug`: the agent's path (`mqtt-b64`: the MQTT sink with
  `value_encoding = "f64le-base64"`). A `Forwarder` with the real sink reads the
  pre-filled store after the sink's cursor and sends until every record is acknowledged
  (MQTT PUBACK at QoS 1, HTTP 200, the Sparkplug fence's UNSUBACK), moving the cursor as it goes.
- `mqtt-paho`, `mqtt-b64-paho`, `http-httpx`, `sparkplug-paho`: the ceiling of the same
  transport without our code. The same number of messages (or bodies) of the same size, built
  before the clock starts, sent as fast as the bare client library allows: paho in its own
  synchronous loop (no asyncio, no thread), httpx's `AsyncClient` posting the bodies one after
  the other.

The last stdout line is a JSON object: records, messages, bytes, seconds, cpu_s (this process,
every thread, `time.process_time`, from just before the first send to the last
acknowledgement).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.clock import SystemClock
from agent.eventloop import run as run_loop
from agent.forward import Forwarder
from agent.lane import ForwardSettings, read_records
from agent.sink import Record, Sink, TelemetryRecords
from agent.statistics import SinkStatistics
from agent.store import Store, StoreWriter
from benchmarks import backlog
from connectors.http import payload as http_payload
from connectors.http.config import HttpSinkConfig
from connectors.http.sink import HttpSink
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.payload import UnsLayout, ValueEncoding
from connectors.mqtt.sink import MAX_INFLIGHT, MqttSink
from connectors.sparkplug.config import SparkplugSinkConfig
from connectors.sparkplug.sink import FENCE_FILTER, SparkplugSink

FORWARDERS = ("mqtt", "mqtt-b64", "http", "sparkplug")
BASELINES = ("mqtt-paho", "mqtt-b64-paho", "http-httpx", "sparkplug-paho")
# The value column of the MQTT batch messages, by contender: JSON numbers (the default) or
# base64 of the float64 column (connectors/mqtt/README.md, "Binary values").
VALUE_ENCODING: dict[str, ValueEncoding] = {
    "mqtt-b64": "f64le-base64",
    "mqtt-b64-paho": "f64le-base64",
}
KINDS = FORWARDERS + BASELINES
DRAIN_TIMEOUT = 600.0  # seconds: a drain that takes longer has failed
GROUP_ID, EDGE_NODE_ID = "bench", "edge1"


class _Counted:
    """The real sink, unchanged, plus a signal once `target` records were acknowledged.

    The forwarder runs until cancelled; this is how the benchmark knows the backlog is drained.
    """

    def __init__(self, sink: Sink, target: int) -> None:
        self.inner = sink
        self.name = sink.name
        # The forwarder keeps as many sends in flight as the real sink allows.
        self.concurrent_sends = int(getattr(sink, "concurrent_sends", 1))
        self.target = target
        self.taken = 0
        self.drained = asyncio.Event()

    async def connect(self) -> None:
        await self.inner.connect()

    async def send(self, records: Sequence[Record]) -> None:
        await self.inner.send(records)
        self.taken += len(records)
        if self.taken >= self.target:
            self.drained.set()

    async def close(self) -> None:
        await self.inner.close()

    def statistics(self) -> SinkStatistics:
        return self.inner.statistics()


def _sink(kind: str, store: Store, host: str, port: int, url: str, batch: int) -> Sink:
    context = backlog.context(store)
    if kind in ("mqtt", "mqtt-b64"):
        encoding = VALUE_ENCODING.get(kind, "json")
        mqtt_config = MqttSinkConfig(
            type="mqtt", name=kind, host=host, port=port, value_encoding=encoding
        )
        return MqttSink(mqtt_config, context)
    if kind == "sparkplug":
        config = SparkplugSinkConfig(
            type="sparkplug",
            name=kind,
            host=host,
            port=port,
            group_id=GROUP_ID,
            edge_node_id=EDGE_NODE_ID,
        )
        return SparkplugSink(config, context)
    return HttpSink(HttpSinkConfig(type="http", name=kind, url=url, batch_size=batch), context)


async def drain_forwarder(
    kind: str, data_dir: Path, records: int, batch: int, host: str, port: int, url: str
) -> dict[str, Any]:
    store = Store(data_dir, synchronous="NORMAL")
    writer = StoreWriter(data_dir, synchronous="NORMAL")
    try:
        store.register_sinks([kind])
        sink = _sink(kind, store, host, port, url, batch)
        counted = _Counted(sink, records)
        forwarder = Forwarder(
            counted, store, writer, SystemClock(), ForwardSettings(batch_size=batch)
        )
        wall0, cpu0 = time.perf_counter(), time.process_time()
        task = asyncio.create_task(forwarder.run())
        drained = asyncio.create_task(counted.drained.wait())
        await asyncio.wait({task, drained}, timeout=DRAIN_TIMEOUT, return_when="FIRST_COMPLETED")
        wall1, cpu1 = time.perf_counter(), time.process_time()
        statistics = sink.statistics().figures()
        task.cancel()
        drained.cancel()
        await asyncio.gather(task, drained, return_exceptions=True)
        if not counted.drained.is_set():
            raise RuntimeError(
                f"{kind}: {counted.taken} of {records} records drained; "
                f"last error: {forwarder.stats.last_error or '-'}"
            )
        await writer.flush()
        cursor = store.cursor(kind, "telemetry")
    finally:
        writer.close(60)
        store.close()
    return {
        "records": counted.taken,
        "messages": int(statistics.get("published", statistics.get("requests", 0))),
        "bytes": int(statistics.get("bytes", statistics.get("bytes_sent", 0))),
        "seconds": wall1 - wall0,
        "cpu_s": cpu1 - cpu0,
        "failures": forwarder.stats.failures,
        "quarantined": forwarder.stats.quarantined,
        "historical": forwarder.stats.historical,
        "cursor": cursor,
    }


def _backlog(data_dir: Path, records: int) -> tuple[Store, Sequence[Record]]:
    """The records as the forwarder would hand them over (historical: the backlog is old)."""
    store = Store(data_dir, synchronous="NORMAL")
    read = read_records(store, "telemetry", 0, records)
    marked = read.marked(True) if isinstance(read, TelemetryRecords) else read
    if len(marked) != records:
        store.close()
        raise RuntimeError(f"the store holds {len(marked)} telemetry records, not {records}")
    return store, marked


def _paho_client(protocol: MQTTProtocolVersion, host: str, port: int) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-baseline-{protocol.name}",
        protocol=protocol,
    )
    client.max_inflight_messages_set(MAX_INFLIGHT)  # the same window as the MQTT sink
    client.connect(host, port, 30)
    while not client.is_connected():
        client.loop(1.0)
    return client


def drain_mqtt_paho(
    data_dir: Path,
    records: int,
    batch: int,
    host: str,
    port: int,
    value_encoding: ValueEncoding = "json",
) -> dict[str, Any]:
    """QoS 1, MQTT 5 (as the sink): publish the messages the sink sends for this backlog (one
    columnar batch message per `batch` records, historical replay), await every PUBACK."""
    store, backlog_records = _backlog(data_dir, records)
    layout = UnsLayout("lineside", backlog.AGENT_ID, backlog.context(store).tags)
    store.close()
    payloads = [
        layout.batch_messages(backlog_records[start : start + batch], value_encoding)[0]
        for start in range(0, records, batch)
    ]  # real payloads: same topics, same sizes
    acked = 0

    def on_publish(*_: Any) -> None:
        nonlocal acked
        acked += 1

    client = _paho_client(mqtt.MQTTv5, host, port)
    client.on_publish = on_publish
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for message in payloads:
        client.publish(message.topic, message.payload, 1)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while acked < len(payloads) and time.monotonic() < deadline:
        client.loop(1.0)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    client.disconnect()
    if acked < len(payloads):
        raise RuntimeError(f"mqtt-paho: {acked} of {len(payloads)} PUBACKs")
    size = sum(len(m.payload) for m in payloads)
    return _baseline(records, len(payloads), size, wall1 - wall0, cpu1 - cpu0)


def drain_sparkplug_paho(
    data_dir: Path, records: int, batch: int, host: str, port: int
) -> dict[str, Any]:
    """QoS 0, MQTT 3.1.1 (as the sink): same-size DDATA messages, one fence per batch."""
    store, backlog_records = _backlog(data_dir, records)
    sink = _sink("sparkplug", store, host, port, "", batch)
    store.close()
    assert isinstance(sink, SparkplugSink)
    sink.session.start_session()
    sample = sink.session.data(backlog_records[:1], time.time_ns() // 1_000_000)[0]
    fenced: set[int] = set()

    def on_unsubscribe(client: mqtt.Client, userdata: Any, mid: int, *_: Any) -> None:
        fenced.add(mid)

    client = _paho_client(mqtt.MQTTv311, host, port)
    client.on_unsubscribe = on_unsubscribe
    deadline = time.monotonic() + DRAIN_TIMEOUT
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, records, batch):
        for _ in range(min(batch, records - start)):
            client.publish(sample.topic, sample.payload, 0)
        _, mid = client.unsubscribe(FENCE_FILTER)
        while mid not in fenced and time.monotonic() < deadline:
            client.loop(1.0)
    wall1, cpu1 = time.perf_counter(), time.process_time()
    client.disconnect()
    batches = -(-records // batch)
    if len(fenced) != batches:
        raise RuntimeError(f"sparkplug-paho: {len(fenced)} of {batches} fences acknowledged")
    return _baseline(records, records, records * len(sample.payload), wall1 - wall0, cpu1 - cpu0)


async def drain_http_httpx(data_dir: Path, records: int, batch: int, url: str) -> dict[str, Any]:
    """The same JSON bodies and headers as the sink's, posted by httpx alone."""
    import httpx

    store, backlog_records = _backlog(data_dir, records)
    tags = backlog.context(store).tags
    store.close()
    bodies = []
    for start in range(0, records, batch):
        chunk = backlog_records[start : start + batch]
        key = http_payload.idempotency_key(backlog.AGENT_ID, chunk)
        bodies.append((http_payload.body(backlog.AGENT_ID, chunk, tags), key))
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10.0)) as client:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for content, key in bodies:
            response = await client.post(url, content=content, headers={"Idempotency-Key": key})
            if response.status_code != 200:
                raise RuntimeError(f"http-httpx: HTTP {response.status_code}")
        wall1, cpu1 = time.perf_counter(), time.process_time()
    size = sum(len(content) for content, _ in bodies)
    return _baseline(records, len(bodies), size, wall1 - wall0, cpu1 - cpu0)


def _baseline(records: int, messages: int, size: int, seconds: float, cpu: float) -> dict[str, Any]:
    return {"records": records, "messages": messages, "bytes": size, "seconds": seconds,
            "cpu_s": cpu}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    kind: str = args.kind
    if kind in FORWARDERS:
        return run_loop(
            lambda: drain_forwarder(
                kind, args.data_dir, args.records, args.batch, args.host, args.port, args.url
            )
        )
    if kind in ("mqtt-paho", "mqtt-b64-paho"):
        encoding = VALUE_ENCODING.get(kind, "json")
        return drain_mqtt_paho(
            args.data_dir, args.records, args.batch, args.host, args.port, encoding
        )
    if kind == "sparkplug-paho":
        return drain_sparkplug_paho(args.data_dir, args.records, args.batch, args.host, args.port)
    return run_loop(lambda: drain_http_httpx(args.data_dir, args.records, args.batch, args.url))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain_contenders")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--url", default="")
    result = run(parser.parse_args(argv))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MqttSink against a real mosquitto, read back by an independent paho subscriber."""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.errors import ConnectError, RequestTimeout, SinkRejected
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, GapRecord, Record, SinkContext, TelemetryRecord
from agent.tags import Tag
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.payload import BATCH_QUALITIES, QUALITY_NAMES, Message
from connectors.mqtt.sink import MqttSink
from tests.brokers import BrokerFactory, Mosquitto, scripted_broker
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

T0 = 1_717_000_000_000_000_000
TAGS = {
    1: Tag.from_path("plant1/press/line1/press1/die_temp", unit="°C"),
    2: Tag.from_path("plant1/press/line1/press1/strokes", unit=""),
    3: Tag.from_path("plant1/weaving/line2/loom1/speed", unit="rpm"),
}  # fmt: skip
CONTEXT = SinkContext(agent_id="edge-7", tags=TAGS)
PRESS = "uns/plant1/press/line1/press1"
LOOM = "uns/plant1/weaving/line2/loom1"
USERS = {"agent": "s3cret-agent", "reader": "s3cret-reader"}


class Subscriber:
    """A separate paho client on its own network thread: what a consumer of the UNS sees."""

    def __init__(self, broker: Mosquitto, topic: str = "uns/#", user: str | None = None) -> None:
        self.received: list[tuple[str, dict[str, Any], bool]] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"reader-{id(self)}",
            protocol=mqtt.MQTTv5,
        )
        if user is not None:
            self.client.username_pw_set(user, USERS[user])
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("the subscriber got no SUBACK")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append((message.topic, orjson.loads(message.payload), message.retain))
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any], bool]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.close()


def subscribe(made: list[Subscriber], broker: Mosquitto, **options: Any) -> Subscriber:
    subscriber = Subscriber(broker, **options)
    made.append(subscriber)
    return subscriber


def sink_config(broker: Mosquitto, **settings: Any) -> MqttSinkConfig:
    return MqttSinkConfig.model_validate(
        {"type": "mqtt", "name": "uns", "host": broker.host, "port": broker.port,
         "topic_prefix": "uns", **settings}
    )  # fmt: skip


def telemetry(seq: int, machine_tags: list[int], value: float = 60.0) -> TelemetryRecord:
    batch = ReadingBatch.from_columns(
        "plc",
        machine_tags,
        [value + i for i in range(len(machine_tags))],
        Quality.GOOD,
        T0 + seq * 10**9,
    )
    return TelemetryRecord(seq, batch)


async def connected(broker: Mosquitto) -> MqttSink:
    """A sink of the default config, connected to `broker`."""
    sink = MqttSink(sink_config(broker), CONTEXT)
    await sink.connect()
    return sink


def test_registry_names_the_runtime() -> None:
    from agent.registry import runtime_class

    assert runtime_class("mqtt") is MqttSink


async def test_telemetry_events_and_gaps_arrive_on_their_topics(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    reader = subscribe(subscribers, broker)
    sink = await connected(broker)
    records: list[Record] = [
        telemetry(17, [1, 2], 61.5),
        EventRecord(4, Event(EventKind.STATE, T0, "loom1", {"state": "held"})),
        GapRecord(2, "telemetry", 5, 9, 5, 15, T0, "store full"),
    ]
    await sink.send(records)
    stats = sink.statistics()
    assert stats.extras["acknowledged"] == 3
    assert stats.records == 3
    assert stats.extras["in_flight"] == 0
    await sink.close()
    head = {"agent_id": "edge-7", "historical": False}
    assert reader.wait_for(3) == [
        (f"{PRESS}/telemetry",
         {**head, "stream": "telemetry", "seq": 17, "ts": T0 // 10**6 + 17_000,
          "values": {"die_temp": {"value": 61.5, "quality": "good", "unit": "°C"},
                     "strokes": {"value": 62.5, "quality": "good", "unit": ""}}},
         False),
        (f"{LOOM}/event/state",
         {**head, "stream": "events", "seq": 4, "ts": T0 // 10**6, "kind": "state",
          "machine": "loom1", "data": {"state": "held"}},
         False),
        ("uns/plant1/_agent/edge-7/gap",
         {**head, "stream": "gaps", "seq": 2, "ts": T0 // 10**6, "of_stream": "telemetry",
          "first_seq": 5, "last_seq": 9, "count": 5, "readings": 15, "reason": "store full"},
         False),
    ]  # fmt: skip
    with pytest.raises(ConnectError, match="not connected"):
        await sink.send(records)


async def test_send_waits_for_every_puback_and_fails_when_the_broker_dies(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    sink = await connected(broker)
    records: list[Record] = [telemetry(seq, [1, 2]) for seq in range(1, 51)]
    broker.pause()  # the broker takes the messages but answers nothing
    sending = asyncio.create_task(sink.send(records))
    done, _ = await asyncio.wait({sending}, timeout=0.5)
    assert not done, "send returned without a PUBACK"
    assert sink.statistics().extras["in_flight"] == 50
    broker.stop()
    with pytest.raises(ConnectError, match="connection lost"):
        await sending
    stats = sink.statistics()
    assert (stats.extras["acknowledged"], stats.records, stats.connected) == (0, 0, 0)
    # Back on the same port: a new connection sends the same records again.
    broker.start()
    reader = subscribe(subscribers, broker)
    await sink.connect()
    await sink.send(records)
    await sink.close()
    assert [payload["seq"] for _, payload, _ in reader.wait_for(50)] == list(range(1, 51))


async def test_publishes_leave_without_waiting_for_nagle(mosquitto: BrokerFactory) -> None:
    # With Nagle's algorithm a PUBLISH written while an earlier segment waits for its TCP ack
    # is held back, up to the broker's delayed ack (40 ms on Linux): live data would age.
    broker = mosquitto()
    sink = await connected(broker)
    try:
        sock = sink.connection.socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        await sink.close()


async def test_a_send_is_written_without_the_loop_watching_the_socket(
    mosquitto: BrokerFactory,
) -> None:
    # A send's messages go out in one pass once the send yields; asking the event loop to
    # watch the socket for each send would cost two selector changes and a poll.
    broker = mosquitto()
    sink = await connected(broker)
    try:
        sock = sink.connection.socket()
        assert sock is not None
        mid = sink.connection.publish(f"{PRESS}/telemetry", b"{}", 1, False)
        assert not asyncio.get_running_loop().remove_writer(sock.fileno())  # none was added
        [reason] = await sink.connection.acknowledged(mid, "PUBACK")  # written all the same
        assert not reason.is_failure
    finally:
        await sink.close()


async def test_a_message_larger_than_the_socket_buffer_goes_as_the_socket_drains(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    reader = subscribe(subscribers, broker)
    sink = await connected(broker)
    try:
        sock = sink.connection.socket()
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # full after a few kB
        text = "x" * 2_000_000
        await sink.publish([Message(f"{PRESS}/telemetry", orjson.dumps({"text": text}), 0)])
        await sink.send([telemetry(1, [1])])  # and the next send still goes
    finally:
        await sink.close()
    received = reader.wait_for(2)
    assert received[0][1] == {"text": text}
    assert received[1][1]["seq"] == 1


async def test_no_puback_in_time_is_a_request_timeout(mosquitto: BrokerFactory) -> None:
    broker = mosquitto()
    sink = MqttSink(sink_config(broker), CONTEXT, ack_timeout=0.3)
    await sink.connect()
    broker.pause()
    try:
        with pytest.raises(RequestTimeout, match=r"2 of 2 messages not acknowledged within 0\.3 s"):
            await sink.send([telemetry(1, [1]), telemetry(2, [3])])
        assert sink.statistics().extras["in_flight"] == 0
    finally:
        broker.resume()
        await sink.close()


async def test_tls_with_the_test_ca_client_certificate_and_password_file(
    mosquitto: BrokerFactory, subscribers: list[Subscriber], tmp_path: Path
) -> None:
    broker = mosquitto(users=USERS, tls=True)
    reader = subscribe(subscribers, broker, user="reader")
    secret = tmp_path / "mqtt-password"
    secret.write_text(USERS["agent"] + "\n", encoding="utf-8")
    config = sink_config(
        broker,
        port=broker.tls_port,
        username="agent",
        password_file=str(secret),
        tls={"ca": str(broker.ca), "cert": str(broker.client_cert), "key": str(broker.client_key)},
    )
    assert config.endpoint.startswith("mqtts://")
    sink = MqttSink(config, CONTEXT)
    await sink.connect()
    await sink.send([telemetry(1, [3], 99.0)])
    await sink.close()
    ((topic, payload, _),) = reader.wait_for(1)
    assert (topic, payload["values"]["speed"]["value"]) == (f"{LOOM}/telemetry", 99.0)


async def test_a_server_certificate_from_another_ca_fails_closed(
    mosquitto: BrokerFactory,
) -> None:
    broker = mosquitto(tls=True)
    sink = MqttSink(
        sink_config(broker, port=broker.tls_port, tls={"ca": str(broker.wrong_ca)}), CONTEXT
    )
    with pytest.raises(
        ConnectError,
        match=r"mqtts://127\.0\.0\.1:\d+: TLS certificate verify failed: \w",
    ):
        await sink.connect()
    assert sink.statistics().connected == 0
    # The plaintext port is not TLS: the handshake fails, with a message saying so.
    plain = MqttSink(sink_config(broker, tls={"ca": str(broker.ca)}), CONTEXT, ack_timeout=2)
    with pytest.raises(ConnectError, match=r"TLS handshake failed: .* a TLS listener"):
        await plain.connect()


async def test_wrong_or_missing_password_fails_closed_without_showing_it(
    mosquitto: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = mosquitto(users=USERS)
    monkeypatch.setenv("MQTT_PASSWORD", "not-the-password")
    sink = MqttSink(sink_config(broker, username="agent", password_env="MQTT_PASSWORD"), CONTEXT)
    with pytest.raises(ConnectError) as caught:
        await sink.connect()
    message = str(caught.value)
    assert "the broker refused the connection: not authorized" in message
    assert "not-the-password" not in message
    monkeypatch.delenv("MQTT_PASSWORD")
    with pytest.raises(ConnectError, match="environment variable MQTT_PASSWORD is not set"):
        await sink.connect()
    monkeypatch.setenv("MQTT_PASSWORD", USERS["agent"])
    await sink.connect()  # the right one works
    await sink.close()
    anonymous = MqttSink(sink_config(broker), CONTEXT)
    with pytest.raises(ConnectError, match="not authorized"):
        await anonymous.connect()


async def test_refused_and_silent_endpoints_fail_closed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        config = MqttSinkConfig.model_validate(
            {"type": "mqtt", "name": "uns", "host": "127.0.0.1", "port": port}
        )
        with pytest.raises(ConnectError, match=f"mqtt://127.0.0.1:{port}: connection refused"):
            await MqttSink(config, CONTEXT).connect()
        # Listening but never answering (not a broker, or a hung one): no CONNACK.
        probe.listen()
        started = time.monotonic()
        with pytest.raises(ConnectError, match=r"no CONNACK within 0\.3 s"):
            await MqttSink(config, CONTEXT, ack_timeout=0.3).connect()
        assert time.monotonic() - started < 5


async def test_an_acl_denied_topic_is_rejected_with_its_index(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    acl = "user agent\ntopic write uns/plant1/press/#\nuser reader\ntopic read uns/#\n"
    broker = mosquitto(users=USERS, acl=acl)
    reader = subscribe(subscribers, broker, user="reader")
    sink = MqttSink(sink_config(broker, username="agent", password_env="AGENT_PASSWORD"), CONTEXT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENT_PASSWORD", USERS["agent"])
        await sink.connect()
    records: list[Record] = [
        telemetry(1, [1]),
        telemetry(2, [3]),
        telemetry(3, [2]),
        telemetry(4, [3]),
    ]
    with pytest.raises(
        SinkRejected, match=f"the broker refused {LOOM}/telemetry: not authorized"
    ) as caught:
        await sink.send(records)
    assert caught.value.index == 1  # the first refused record; the forwarder resends the rest
    assert sink.statistics().extras["refused"] == 2
    assert sink.statistics().records == 1
    await sink.close()
    assert [p["seq"] for _, p, _ in reader.wait_for(2)] == [1, 3]


async def test_retained_last_values_reach_a_late_subscriber(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    sink = MqttSink(sink_config(broker, retain_last=True), CONTEXT)
    await sink.connect()
    await sink.send([telemetry(1, [1, 2, 3], 10.0), telemetry(2, [1], 20.0)])
    await sink.close()
    late = subscribe(subscribers, broker, topic="uns/+/+/+/+/telemetry/+")
    got = {
        topic: (payload["value"], payload["seq"], retain)
        for topic, payload, retain in late.wait_for(3)
    }
    assert got == {
        f"{PRESS}/telemetry/die_temp": (20.0, 2, True),
        f"{PRESS}/telemetry/strokes": (11.0, 1, True),
        f"{LOOM}/telemetry/speed": (12.0, 1, True),
    }


async def test_qos_0_counts_written_messages_as_sent(mosquitto: BrokerFactory) -> None:
    broker = mosquitto()
    sink = MqttSink(sink_config(broker, qos=0), CONTEXT)
    await sink.connect()
    await sink.send([telemetry(seq, [1]) for seq in range(1, 11)])
    assert sink.statistics().extras["acknowledged"] == 10
    await sink.close()


@pytest.mark.slow
async def test_send_10k_records_throughput(mosquitto: BrokerFactory) -> None:
    """Measured, not asserted: records per second for one `send` of 10 000 records."""
    broker = mosquitto()
    records: list[Record] = [telemetry(seq, [1, 2]) for seq in range(1, 10_001)]
    for mode, messages in (("never", 10_000), ("always", 1)):
        sink = MqttSink(sink_config(broker, batch=mode), CONTEXT)
        await sink.connect()
        started = time.perf_counter()
        await sink.send(records)
        elapsed = time.perf_counter() - started
        await sink.close()
        assert sink.statistics().extras["acknowledged"] == messages
        assert sink.statistics().records == 10_000
        print(
            f"\nMQTT sink, QoS 1, 10 000 records of 2 tags, batch = {mode}: "
            f"{10_000 / elapsed:,.0f} records/s"
        )


def batch_values(batch: dict[str, Any]) -> list[float | None]:
    """A batch's value column whatever its encoding (the decoding in README.md, "Batches")."""
    dtypes = {"f32le-base64": "<f4", "f64le-base64": "<f8"}
    encoding = batch.get("value_encoding", "json")
    if encoding == "json":
        return list(batch["value"])
    column = np.frombuffer(base64.b64decode(batch["value"]), dtype=dtypes[encoding])
    return [float(v) if math.isfinite(v) else None for v in column.tolist()]


def batch_ints(batch: dict[str, Any], key: str) -> list[int]:
    """A batch's `tag` or `quality` column: JSON integers, or binary with binary values."""
    dtypes = {"u8-base64": "u1", "u16le-base64": "<u2", "u32le-base64": "<u4"}
    encoding = batch.get(f"{key}_encoding", "json")
    if encoding == "json":
        return list(batch[key])
    return np.frombuffer(base64.b64decode(batch[key]), dtype=dtypes[encoding]).tolist()  # type: ignore[no-any-return]


class BatchReceiver:
    """What a consumer of the UNS does with batches: decode both message forms and keep each
    record once by `(agent_id, stream, seq)` (delivery is at least once)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str, int], dict[str, float | None]] = {}
        self.qualities: dict[tuple[str, str, int], dict[str, str]] = {}
        self.deliveries = 0

    def take(self, topic: str, payload: dict[str, Any]) -> None:
        if topic.endswith("/telemetry/_batch"):
            offsets = [0]
            for n in payload["n"]:
                offsets.append(offsets[-1] + n)
            column = batch_values(payload)
            tag, quality = batch_ints(payload, "tag"), batch_ints(payload, "quality")
            assert len(tag) == len(quality) == len(column) == offsets[-1]
            for i, seq in enumerate(payload["seq"]):
                rows = range(offsets[i], offsets[i + 1])
                values = {payload["tags"][tag[r]]: column[r] for r in rows}
                names = {payload["tags"][tag[r]]: BATCH_QUALITIES[quality[r]] for r in rows}
                self.keep(payload["agent_id"], payload["stream"], seq, values, names)
        elif topic.endswith("/telemetry"):
            machine = topic.split("/", 1)[1].removesuffix("/telemetry")  # without the prefix
            values = {f"{machine}/{name}": v["value"] for name, v in payload["values"].items()}
            names = {f"{machine}/{name}": v["quality"] for name, v in payload["values"].items()}
            self.keep(payload["agent_id"], payload["stream"], payload["seq"], values, names)

    def keep(
        self,
        agent: str,
        stream: str,
        seq: int,
        values: dict[str, float | None],
        qualities: dict[str, str],
    ) -> None:
        self.deliveries += 1
        self.records.setdefault((agent, stream, seq), {}).update(values)
        self.qualities.setdefault((agent, stream, seq), {}).update(qualities)


async def test_batch_modes_and_a_receiver_that_deduplicates(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    reader = subscribe(subscribers, broker)
    auto = MqttSink(sink_config(broker, batch_min_records=5), CONTEXT)
    await auto.connect()
    live = [telemetry(seq, [1, 2]) for seq in (1, 2)]
    await auto.send(live)  # few live records: one message each, for latency
    backlog = [telemetry(seq, [1, 2, 3]) for seq in range(3, 8)]  # 5 records: a backlog
    await auto.send(backlog)
    replay = [TelemetryRecord(r.seq, r.batch, historical=True) for r in live]
    await auto.send(replay)  # historical: a batch however few (and a duplicate of 1 and 2)
    await auto.send(backlog[1:3])  # sent again after a reconnect, say: duplicates
    await auto.close()
    got = reader.wait_for(8)
    batch_topic = "uns/plant1/_agent/edge-7/telemetry/_batch"
    assert [topic for topic, _, _ in got] == [
        f"{PRESS}/telemetry",
        f"{PRESS}/telemetry",
        batch_topic,
        batch_topic,
        *[f"{PRESS}/telemetry", f"{LOOM}/telemetry"] * 2,  # 2 records: under the minimum
    ]
    receiver = BatchReceiver()
    for topic, payload, _ in got:
        receiver.take(topic, payload)
    assert sorted(seq for _, _, seq in receiver.records) == list(range(1, 8))
    # every record counted once per message it arrived in (a batch holds both machines)
    assert receiver.deliveries == 2 + 5 + 2 + (2 + 2)
    assert receiver.records[("edge-7", "telemetry", 4)] == {
        "plant1/press/line1/press1/die_temp": 60.0,
        "plant1/press/line1/press1/strokes": 61.0,
        "plant1/weaving/line2/loom1/speed": 62.0,
    }
    assert receiver.records[("edge-7", "telemetry", 1)] == {
        "plant1/press/line1/press1/die_temp": 60.0,
        "plant1/press/line1/press1/strokes": 61.0,
    }
    historical = [p["historical"] for t, p, _ in got if t.endswith("_batch")]
    assert historical == [[False] * 5, [True, True]]
    # "never" keeps one message per record and machine whatever the size or age.
    never = MqttSink(sink_config(broker, batch="never", batch_min_records=1), CONTEXT)
    await never.connect()
    await never.send(replay)
    await never.close()
    assert [t for t, _, _ in reader.wait_for(10)[8:]] == [f"{PRESS}/telemetry"] * 2


@pytest.mark.parametrize(
    ("encoding", "sent_as"),
    [
        ("json", ["json", "json"]),
        ("f64le-base64", ["f64le-base64", "f64le-base64"]),
        # float32 only when no value changes: 0.1 does not fit, so that batch goes as float64
        ("f32le-base64", ["f32le-base64", "f64le-base64"]),
    ],
)
async def test_binary_values_decode_to_the_exact_readings_once_each(
    mosquitto: BrokerFactory, subscribers: list[Subscriber], encoding: str, sent_as: list[str]
) -> None:
    broker = mosquitto()
    reader = subscribe(subscribers, broker, topic="uns/+/_agent/+/telemetry/_batch")
    sink = MqttSink(sink_config(broker, batch="always", value_encoding=encoding), CONTEXT)
    await sink.connect()
    exact = [telemetry(seq, [1, 2, 3], value=0.5 * seq) for seq in range(1, 6)]
    exact[2] = TelemetryRecord(
        3, ReadingBatch.from_columns("plc", [1, 2], [math.nan, -math.inf], Quality.BAD, T0)
    )
    inexact = [telemetry(seq, [1, 2], value=0.1 * seq) for seq in range(6, 9)]
    await sink.send(exact)
    await sink.send(inexact)
    await sink.send(exact[3:] + inexact[:1])  # a retry: duplicates of 4, 5 and 6
    await sink.close()
    got = reader.wait_for(3)
    assert [p.get("value_encoding", "json") for _, p, _ in got[:2]] == sent_as
    receiver = BatchReceiver()
    for topic, payload, _ in got:
        receiver.take(topic, payload)
    assert receiver.deliveries == 5 + 3 + 3
    truth = {
        ("edge-7", "telemetry", r.seq): {
            TAGS[i].path: (v if math.isfinite(v) else None)
            for i, v in zip(r.batch.tag_ids.tolist(), r.batch.values.tolist(), strict=True)
        }
        for r in exact + inexact
    }
    assert receiver.records == truth  # bit for bit: no value rounded on the way
    assert receiver.qualities == {
        ("edge-7", "telemetry", r.seq): {
            TAGS[i].path: QUALITY_NAMES[q]
            for i, q in zip(r.batch.tag_ids.tolist(), r.batch.quality.tolist(), strict=True)
        }
        for r in exact + inexact
    }
    binary = [p for _, p, _ in got if "value_encoding" in p]
    assert all(p["tag_encoding"] == p["quality_encoding"] == "u8-base64" for p in binary)
    assert all("tag_encoding" not in p for _, p, _ in got if "value_encoding" not in p)


def test_an_unknown_value_encoding_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="value_encoding"):
        MqttSinkConfig.model_validate(
            {"type": "mqtt", "name": "uns", "host": "h", "value_encoding": "f16le-base64"}
        )


async def test_an_acl_denied_batch_topic_refuses_the_whole_batch(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    acl = "user agent\ntopic write uns/plant1/press/#\nuser reader\ntopic read uns/#\n"
    broker = mosquitto(users=USERS, acl=acl)  # no write to the agent's topics
    config = sink_config(broker, username="agent", password_env="AGENT_PASSWORD", batch="always")
    sink = MqttSink(config, CONTEXT)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AGENT_PASSWORD", USERS["agent"])
        await sink.connect()
    with pytest.raises(
        SinkRejected, match="refused uns/plant1/_agent/edge-7/telemetry/_batch"
    ) as caught:
        await sink.send([telemetry(1, [1]), telemetry(2, [3])])
    assert caught.value.index is None  # every record of the send was refused
    assert sink.statistics().records == 0
    await sink.close()


async def test_two_sends_at_once_arrive_in_call_order(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    reader = subscribe(subscribers, broker, topic="uns/+/_agent/+/telemetry/_batch")
    sink = MqttSink(sink_config(broker, batch="always"), CONTEXT)
    assert sink.concurrent_sends == 2
    await sink.connect()
    first = [telemetry(seq, [1, 2]) for seq in range(1, 201)]
    second = [telemetry(seq, [3]) for seq in range(201, 211)]
    await asyncio.gather(sink.send(first), sink.send(second))
    await sink.close()
    got = reader.wait_for(2)
    assert [payload["seq"] for _, payload, _ in got] == [
        list(range(1, 201)),
        list(range(201, 211)),
    ]
    assert sink.statistics().records == 210


async def test_a_send_cancelled_while_it_waits_leaves_nothing_in_flight(
    mosquitto: BrokerFactory, subscribers: list[Subscriber]
) -> None:
    broker = mosquitto()
    sink = await connected(broker)
    try:
        broker.pause()  # the broker takes the messages but answers nothing
        sending = asyncio.create_task(sink.send([telemetry(1, [1]), telemetry(2, [3])]))
        await until(lambda: sink.statistics().extras["in_flight"] == 2)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        assert sink.statistics().extras["in_flight"] == 0
        broker.resume()  # its late acknowledgements change nothing; the next send goes
        reader = subscribe(subscribers, broker)
        await sink.send([telemetry(3, [1])])
        assert [p["seq"] for _, p, _ in reader.wait_for(1)] == [3]
        assert sink.statistics().extras["in_flight"] == 0
    finally:
        broker.resume()
        await sink.close()


async def test_acknowledgements_that_keep_coming_are_waited_for_past_the_timeout() -> None:
    # `ack_timeout` bounds the wait for the next acknowledgement, not for all of them: a
    # broker that answers each PUBLISH 50 ms late takes 1 s for 20, past a 0.5 s timeout.
    async def late_puback(body: bytes) -> bytes:
        at = 2 + int.from_bytes(body[:2], "big")  # QoS 1: the message id follows the topic
        await asyncio.sleep(0.05)
        return b"\x40\x02" + body[at : at + 2]

    server, port = await scripted_broker(late_puback)
    config = MqttSinkConfig.model_validate(
        {"type": "mqtt", "name": "slow", "host": "127.0.0.1", "port": port, "topic_prefix": "uns"}
    )
    sink = MqttSink(config, CONTEXT, ack_timeout=0.5)
    try:
        await sink.connect()
        await sink.send([telemetry(seq, [1]) for seq in range(1, 21)])
        stats = sink.statistics()
        assert (stats.records, stats.extras["acknowledged"], stats.extras["timeouts"]) == (
            20,
            20,
            0,
        )
    finally:
        await sink.close()
        server.close()
        await server.wait_closed()

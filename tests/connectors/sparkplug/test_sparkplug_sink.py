"""SparkplugSink against a real mosquitto, watched by a host built on paho and pysparkplug."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pysparkplug
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.clock import FakeClock
from agent.errors import ConnectError, ConnectorError, RequestTimeout, SinkRejected
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, SinkContext, TelemetryRecord
from agent.store import Store
from agent.tags import Tag
from connectors.sparkplug.config import SparkplugSinkConfig
from connectors.sparkplug.sink import SparkplugSink
from tests.brokers import BrokerFactory, Mosquitto

pytestmark = pytest.mark.timeout(60)

T0 = 1_717_000_000_000_000_000
TAGS = {
    1: Tag.from_path("p/press/l1/press1/die_temp", unit="°C"),
    2: Tag.from_path("p/press/l1/press1/strokes", unit=""),
    7: Tag.from_path("p/weave/l2/loom1/speed", unit="rpm"),
}
CONTEXT = SinkContext(agent_id="agent-7", tags=TAGS)
NODE = "spBv1.0/plant1/{}/edge-7"


class Host:
    """A Sparkplug host application on its own paho thread: decodes what it sees, as a SCADA
    would, with pysparkplug (births remembered to resolve aliases)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.qos: list[int] = []  # each message's QoS as delivered (subscribed at QoS 1)
        self._births: dict[str, pysparkplug.NBirth | pysparkplug.DBirth] = {}
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"host-{id(self)}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.subscribe("spBv1.0/plant1/#", qos=1)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError("the host got no SUBACK")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parsed = pysparkplug.Topic.from_str(message.topic)
        kind = str(parsed.message_type)
        if kind in ("NCMD", "DCMD"):
            return  # its own commands
        device = parsed.device_id
        birth = self._births.get(device or "") if kind in ("DDATA", "NDATA") else None
        payload_class: Any = pysparkplug.MessageType(kind).payload
        payload = payload_class.decode(message.payload, birth=birth)
        if kind in ("NBIRTH", "DBIRTH"):
            self._births[device or ""] = payload  # "": the node's own
        with self._changed:
            self.seen.append((kind if device is None else f"{kind}/{device}", payload))
            self.qos.append(message.qos)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, Any]]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.seen) >= count, timeout):
                raise AssertionError(f"expected {count} messages, saw {self.kinds()}")
            return list(self.seen)

    async def arrived(self, count: int) -> list[tuple[str, Any]]:
        # Wait in a thread: the sink's own work (commands, STATE) needs the event loop.
        return await asyncio.to_thread(self.wait_for, count)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for host in made:
        host.close()


def watch(made: list[Host], broker: Mosquitto) -> Host:
    host = Host(broker)
    made.append(host)
    return host


def make_sink(broker: Mosquitto, store: Store | None = None, **settings: Any) -> SparkplugSink:
    config = SparkplugSinkConfig.model_validate(
        {"type": "sparkplug", "name": "scada", "host": broker.host, "port": broker.port,
         "group_id": "plant1", "edge_node_id": "edge-7", **settings}
    )  # fmt: skip
    context = CONTEXT if store is None else SinkContext(CONTEXT.agent_id, TAGS, store)
    return SparkplugSink(config, context, clock=FakeClock(start_ns=T0), ack_timeout=5.0)


def telemetry(seq: int, value: float = 60.0, historical: bool = False) -> TelemetryRecord:
    batch = ReadingBatch.from_columns("plc", [1, 7], [value, value * 2], Quality.GOOD, T0)
    return TelemetryRecord(seq, batch, historical=historical)


def rebirth_command(value: bool) -> bytes:
    metric = pysparkplug.Metric(
        0, "Node Control/Rebirth", pysparkplug.DataType.BOOLEAN, value=value
    )
    return pysparkplug.NCmd(0, (metric,)).encode(include_dtypes=True)


def bd_seq(payload: Any) -> int:
    if isinstance(payload, pysparkplug.NDeath):
        value = payload.bd_seq_metric.value
    else:
        value = next(m.value for m in payload.metrics if m.name == "bdSeq")
    assert isinstance(value, int)
    return value


def test_registry_names_the_runtime() -> None:
    from agent.registry import runtime_class

    assert runtime_class("sparkplug") is SparkplugSink


async def test_births_on_connect_then_data(mosquitto: BrokerFactory, hosts: list[Host]) -> None:
    broker = mosquitto()
    host = watch(hosts, broker)
    sink = make_sink(broker)
    await sink.connect()
    seen = await host.arrived(3)
    assert host.kinds() == ["NBIRTH", "DBIRTH/loom1", "DBIRTH/press1"]
    assert [p.seq for _, p in seen] == [0, 1, 2]
    assert bd_seq(seen[0][1]) == 0
    assert seen[0][1].timestamp == T0 // 10**6  # the injected clock
    assert {m.name for m in seen[2][1].metrics} == {"die_temp", "strokes"}

    event = EventRecord(3, Event(EventKind.ALARM, T0, "press1", {"code": 17}))
    await sink.send([telemetry(1, 61.5, historical=True), event])
    # `send` returned after the broker's acknowledgement: the messages are routed already.
    seen = await host.arrived(6)
    assert host.kinds()[3:] == ["DDATA/loom1", "DDATA/press1", "NDATA"]
    assert [p.seq for _, p in seen[3:]] == [3, 4, 5]
    press = seen[4][1]
    assert [(m.name, m.value, m.is_historical) for m in press.metrics] == [("die_temp", 61.5, True)]
    alarm = seen[5][1].metrics[0]
    assert alarm.name == "Events/alarm"
    assert json.loads(alarm.value)["data"] == {"code": 17}
    stats = sink.statistics()
    assert (stats.extras["published"], stats.records, stats.connected) == (6, 2, 1)

    with pytest.raises(SinkRejected, match="tag id 99") as caught:
        bad = ReadingBatch.from_columns("plc", [99], [1.0], Quality.GOOD, T0)
        await sink.send([telemetry(2), TelemetryRecord(3, bad)])
    assert caught.value.index == 1

    await sink.close()  # a clean shutdown: NDEATH with the session's bdSeq, no Will after it
    seen = await host.arrived(7)
    assert host.kinds()[6] == "NDEATH" and bd_seq(seen[6][1]) == 0
    # QoS 1 (acknowledged before the DISCONNECT that suppresses the Will); BIRTH/DATA QoS 0
    assert host.qos == [0, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ConnectError, match="not connected"):
        await sink.send([telemetry(4)])


async def test_will_is_ndeath_when_the_connection_dies(
    mosquitto: BrokerFactory, hosts: list[Host]
) -> None:
    broker = mosquitto()
    host = watch(hosts, broker)
    sink = make_sink(broker)
    await sink.connect()
    await host.arrived(3)
    sock = sink.connection.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)  # the TCP connection dies without DISCONNECT
    seen = await host.arrived(4)
    assert host.kinds()[3] == "NDEATH"
    assert bd_seq(seen[3][1]) == bd_seq(seen[0][1]) == 0  # the host matches it to the NBIRTH
    with pytest.raises(ConnectError):
        await sink.send([telemetry(1)])

    await sink.close()
    await sink.connect()  # a new MQTT session: the next bdSeq
    seen = await host.arrived(7)
    assert host.kinds()[4:] == ["NBIRTH", "DBIRTH/loom1", "DBIRTH/press1"]
    assert bd_seq(seen[4][1]) == 1 and seen[4][1].seq == 0
    await sink.close()


async def test_rebirth_on_ncmd(mosquitto: BrokerFactory, hosts: list[Host]) -> None:
    broker = mosquitto()
    host = watch(hosts, broker)
    sink = make_sink(broker)
    await sink.connect()
    await host.arrived(3)
    await sink.send([telemetry(1)])
    await host.arrived(5)
    ncmd = NODE.format("NCMD")
    host.publish(ncmd, rebirth_command(False))  # not a rebirth request
    host.publish(ncmd, b"\x01garbage")
    host.publish(ncmd, rebirth_command(True))
    seen = await host.arrived(8)
    assert host.kinds()[5:] == ["NBIRTH", "DBIRTH/loom1", "DBIRTH/press1"]
    assert bd_seq(seen[5][1]) == 0  # same MQTT session, same bdSeq
    assert [p.seq for _, p in seen[5:]] == [0, 1, 2]  # seq starts over
    await sink.send([telemetry(2)])
    seen = await host.arrived(10)
    assert [p.seq for _, p in seen[8:]] == [3, 4]
    assert host.kinds().count("NBIRTH") == 2  # only the true request caused one
    assert sink.statistics().extras["rebirths"] == 1
    await sink.close()


async def test_primary_host_state(mosquitto: BrokerFactory, hosts: list[Host]) -> None:
    broker = mosquitto()
    host = watch(hosts, broker)
    sink = make_sink(broker, primary_host_id="scada")
    state = "spBv1.0/STATE/scada"

    # No STATE yet: the host is not known to be online, so no births and no data.
    with pytest.raises(ConnectError, match="primary host scada offline"):
        await sink.connect()
    with pytest.raises(ConnectorError, match="primary host scada offline"):
        await sink.send([telemetry(1)])
    assert host.kinds() == []

    host.publish(state, b'{"online": true, "timestamp": 100}', retain=True)
    await sink.connect()
    seen = await host.arrived(3)
    assert host.kinds() == ["NBIRTH", "DBIRTH/loom1", "DBIRTH/press1"]
    assert bd_seq(seen[0][1]) == 1  # the refused connect was a session (bdSeq 0) too
    await sink.send([telemetry(2)])
    await host.arrived(5)

    # Offline: NDEATH, disconnect; send refuses with a retryable error (the store keeps data).
    host.publish(state, b'{"online": false, "timestamp": 200}', retain=True)
    seen = await host.arrived(6)
    assert host.kinds()[5] == "NDEATH" and bd_seq(seen[5][1]) == 1
    assert host.qos[5] == 1
    with pytest.raises(ConnectorError, match="primary host scada offline") as caught:
        await sink.send([telemetry(3)])
    assert not isinstance(caught.value, SinkRejected)
    await sink.close()  # what the forwarder does before it retries

    # A stale STATE (older than the last seen) does not count: still offline.
    host.publish(state, b'{"online": true, "timestamp": 150}', retain=True)
    with pytest.raises(ConnectError, match="offline"):
        await sink.connect()

    # Back online: the reconnect births the node again, with the next bdSeq, then data flows.
    host.publish(state, b'{"online": true, "timestamp": 300}', retain=True)
    await sink.connect()
    seen = await host.arrived(9)
    assert host.kinds()[6:] == ["NBIRTH", "DBIRTH/loom1", "DBIRTH/press1"]
    assert bd_seq(seen[6][1]) == 3  # one more refused connect while offline
    await sink.send([telemetry(4, historical=True)])
    seen = await host.arrived(11)
    assert all(m.is_historical for _, p in seen[9:] for m in p.metrics)
    assert sink.statistics().extras["host_online"] == 1
    await sink.close()


async def test_unreachable_broker(mosquitto: BrokerFactory) -> None:
    broker = mosquitto()
    sink = make_sink(broker)
    broker.stop()
    with pytest.raises(ConnectError, match="refused"):
        await sink.connect()
    assert sink.statistics().connected == 0


async def test_send_waits_for_the_broker(mosquitto: BrokerFactory, hosts: list[Host]) -> None:
    broker = mosquitto()
    host = watch(hosts, broker)
    sink = make_sink(broker)
    sink.connection.ack_timeout = 0.5
    await sink.connect()
    await host.arrived(3)
    broker.pause()  # the connection stays up but nothing is answered
    try:
        with pytest.raises(RequestTimeout, match=r"no acknowledgement within 0\.5 s"):
            await sink.send([telemetry(1)])
    finally:
        broker.resume()
    await sink.close()


async def test_restart_stale_will_comes_before_the_new_birth(
    mosquitto: BrokerFactory, hosts: list[Host], tmp_path: Path
) -> None:
    # The fixed client id makes the broker end the old session (publishing the old Will) before
    # the new NBIRTH; bdSeq is kept in the store, so the restarted agent's is the next one.
    broker = mosquitto()
    host = watch(hosts, broker)
    with Store(tmp_path) as store:
        before = make_sink(broker, store)
        await before.connect()
        await host.arrived(3)
        after = make_sink(broker, store)  # the restarted agent
        await after.connect()
        seen = await host.arrived(7)
        assert host.kinds()[3:] == ["NDEATH", "NBIRTH", "DBIRTH/loom1", "DBIRTH/press1"]
        assert bd_seq(seen[0][1]) == bd_seq(seen[3][1]) == 0  # the old session's Will
        assert bd_seq(seen[4][1]) == 1
        await before.close()
        await after.close()


async def test_bd_seq_persists_across_restarts_and_matches_the_will(
    mosquitto: BrokerFactory, hosts: list[Host], tmp_path: Path
) -> None:
    broker = mosquitto()
    host = watch(hosts, broker)
    with Store(tmp_path) as store:
        first = make_sink(broker, store)
        await first.connect()
        await first.close()  # NBIRTH, DBIRTH x2, NDEATH (bdSeq 0)
        await host.arrived(4)
    with Store(tmp_path) as store:  # the agent restarted: the store opened again
        second = make_sink(broker, store)
        await second.connect()
        seen = await host.arrived(7)
        assert host.kinds()[4] == "NBIRTH" and bd_seq(seen[4][1]) == 1
        sock = second.connection.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # dies without DISCONNECT: the broker sends the Will
        seen = await host.arrived(8)
        assert host.kinds()[7] == "NDEATH"
        assert bd_seq(seen[7][1]) == 1, "the Will registered on connect matches the NBIRTH"
        assert host.qos[7] == 1
        await second.close()
        assert store.get_meta("sink.scada.bd_seq") == "2"  # the next connect's


async def test_paho_runs_on_the_event_loop_not_its_own_thread(
    mosquitto: BrokerFactory, hosts: list[Host]
) -> None:
    # One connection module for both sinks (connectors/mqtt/connection.py): no network thread.
    broker = mosquitto()
    host = watch(hosts, broker)
    sink = make_sink(broker)
    await sink.connect()
    try:
        await host.arrived(3)
        names = [t.name for t in threading.enumerate()]
        assert f"paho-mqtt-client-{sink.client_id}" not in names  # the test's host has one
        await sink.send([telemetry(1)])
        await host.arrived(4)  # the broker acknowledged it; the host's copy may still be on its way
        assert host.kinds()[3] == "DDATA/loom1"
    finally:
        await sink.close()


async def test_tls_errors_are_worded_as_for_the_mqtt_sink(mosquitto: BrokerFactory) -> None:
    broker = mosquitto(tls=True)
    sink = make_sink(broker, port=broker.tls_port, tls={"ca": str(broker.wrong_ca)})
    with pytest.raises(ConnectError, match=r"mqtts://127\.0\.0\.1:\d+: TLS certificate verify"):
        await sink.connect()
    assert sink.statistics().connected == 0
    plain = make_sink(broker, tls={"ca": str(broker.ca)})
    with pytest.raises(ConnectError, match=r"TLS handshake failed: .* a TLS listener"):
        await plain.connect()

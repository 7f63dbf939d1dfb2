"""The lean read path of connectors/mqtt/paho_client.py against a real mosquitto: what
`on_publish` and `on_message` get is what paho's own path gives, and no packet read ahead is
left waiting in the buffer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.errors import ConnectError
from connectors.mqtt import paho_client
from connectors.mqtt.config import Broker
from connectors.mqtt.connection import MqttConnection
from tests.brokers import BrokerFactory, Mosquitto, scripted_broker
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

USERS = {"agent": "s3cret-agent"}
ACL = "user agent\ntopic write allowed/#\ntopic readwrite burst/#\n"


def _connection(broker: Mosquitto, **kw: object) -> MqttConnection:
    config = Broker(
        name="b", host=broker.host, port=broker.port, username="agent", password_env="AGENT_PW"
    )
    return MqttConnection(config, "lean-test", mqtt5=True, keepalive=30, ack_timeout=5.0, **kw)  # type: ignore[arg-type]


@pytest.fixture
def broker(mosquitto: BrokerFactory, monkeypatch: pytest.MonkeyPatch) -> Mosquitto:
    """A broker with the agent's login and topics, and its password where the agent reads it."""
    monkeypatch.setenv("AGENT_PW", USERS["agent"])
    return mosquitto(users=USERS, acl=ACL)


def _client(broker: Mosquitto) -> mqtt.Client:
    """Another client, logged in as the agent, on its own network thread."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set("agent", USERS["agent"])
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def _stop(client: mqtt.Client) -> None:
    client.loop_stop()
    client.disconnect()


def test_this_paho_has_what_the_lean_path_overrides() -> None:
    # A paho upgrade that changes them makes the agent fall back to paho's own path: slower,
    # never wrong. This test says so, so the overrides are looked at again.
    assert paho_client.LEAN


async def _acknowledgements(broker: Mosquitto) -> list[tuple[int, int, str]]:
    acked: list[tuple[int, int, str]] = []
    connection = _connection(broker, on_puback=lambda mid, r: acked.append((mid, r.value, str(r))))
    await connection.connect()
    try:
        for k in range(60):
            # Every third topic is one the broker refuses (0x87), the others have no subscriber
            # (0x10) or one (0x00).
            topic = f"denied/{k}" if k % 3 == 0 else f"allowed/{k % 2}"
            connection.publish(topic, b"x" * k, 1, False)
        await until(lambda: len(acked) == 60)
    finally:
        await connection.close()
    return acked


async def test_acknowledgements_reach_on_publish_as_paho_gives_them(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = _client(broker)
    listener.subscribe("allowed/1", qos=1)  # a subscriber for half the allowed topics
    try:
        await asyncio.sleep(0.5)
        lean = await _acknowledgements(broker)
        monkeypatch.setattr(paho_client, "LEAN", False)
        stock = await _acknowledgements(broker)
    finally:
        _stop(listener)
    assert lean == stock
    codes = {value for _, value, _ in lean}
    assert codes >= {0x87, 0x10}  # refusals and the no-subscriber note both went through
    assert sorted(mid for mid, _, _ in lean) == list(range(1, 61))


async def test_messages_read_ahead_in_one_burst_are_all_handled(broker: Mosquitto) -> None:
    received: list[str] = []
    connection = _connection(broker, on_message=lambda topic, _: received.append(topic))
    await connection.connect()
    try:
        await connection.subscribe("burst/#", 0)
        sender = _client(broker)
        # Many packets per read, and none of them answers a message the connection sent.
        infos = [sender.publish(f"burst/{k}", b"%d" % k, qos=1) for k in range(300)]
        await asyncio.to_thread(infos[-1].wait_for_publish, 10)
        _stop(sender)
        # Without the drain each readiness event would handle one packet: minutes, not this.
        await until(lambda: len(received) == 300, limit=10)
        assert received == [f"burst/{k}" for k in range(300)]
        client = connection._client
        assert isinstance(client, paho_client.Client) and not client.buffered
    finally:
        await connection.close()


async def test_a_burst_larger_than_the_socket_takes_arrives_whole_and_in_order(
    broker: Mosquitto,
) -> None:
    # paho keeps 20 messages in flight: 20 of 512 KiB written in one pass are more than the
    # socket takes from the one send; the rest waits in paho's queue and goes as it drains.
    received: list[bytes] = []
    reader = _client(broker)
    reader.on_message = lambda c, u, message: received.append(bytes(message.payload))
    reader.subscribe("burst/#", qos=1)
    acked: list[int] = []
    connection = _connection(broker, on_puback=lambda mid, reason: acked.append(reason.value))
    await connection.connect()
    try:
        await asyncio.sleep(0.5)  # the reader's subscription is in place
        payloads = [k.to_bytes(2, "big") * 262144 for k in range(60)]
        for payload in payloads:
            connection.publish("burst/big", payload, 1, False)
        await until(lambda: len(acked) == 60 and len(received) == 60)
        assert received == payloads
        assert set(acked) == {0}
    finally:
        await connection.close()
        _stop(reader)


async def _rogue_broker(puback: bytes) -> tuple[asyncio.Server, int]:
    """A broker that answers every PUBLISH with the bytes `puback`."""

    async def answer(body: bytes) -> bytes:
        return puback

    return await scripted_broker(answer)


@pytest.mark.parametrize(
    "puback",
    [b"\x40\x01\x00", b"\x40\x00"],  # a message id cut short; none at all
    ids=["short", "empty"],
)
async def test_a_malformed_puback_drops_the_connection_and_acknowledges_nothing(
    puback: bytes,
) -> None:
    server, port = await _rogue_broker(puback)
    config = Broker(name="b", host="127.0.0.1", port=port)
    connection = MqttConnection(config, "lean-test", mqtt5=True, keepalive=30, ack_timeout=5.0)
    try:
        await connection.connect()
        mid = connection.publish("t/x", b"1", 1, False)
        with pytest.raises(ConnectError, match="connection lost"):
            await connection.acknowledged(mid, "PUBACK")
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()


async def test_a_puback_for_a_message_never_sent_is_ignored() -> None:
    # The broker acknowledges message id 0x7777 (not ours) and then ours: only ours is told.
    server, port = await _rogue_broker(b"\x40\x02\x77\x77\x40\x02\x00\x01")
    acked: list[int] = []
    config = Broker(name="b", host="127.0.0.1", port=port)
    told = acked.append
    connection = MqttConnection(
        config,
        "lean-test",
        mqtt5=True,
        keepalive=30,
        ack_timeout=5.0,
        on_puback=lambda m, _: told(m),
    )
    try:
        await connection.connect()
        mid = connection.publish("t/x", b"1", 1, False)
        await until(lambda: acked == [mid])
        assert connection.connected
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()


def _written(client: mqtt.Client, publish: list[tuple[str, bytes, bool]]) -> bytes:
    """The bytes `client` writes for `publish` (topic, payload, retain) at QoS 1, on a real
    socket pair standing for the broker's connection."""
    ours, theirs = socket.socketpair()
    client._sock = ours  # connected as far as publishing goes
    try:
        for topic, payload, retain in publish:
            info = client.publish(topic, payload, qos=1, retain=retain)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
        client.loop_write()
        theirs.setblocking(False)
        return theirs.recv(1 << 20)
    finally:
        client._sock = None
        ours.close()
        theirs.close()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"])
def test_a_lean_publish_writes_the_bytes_paho_writes(protocol: MQTTProtocolVersion) -> None:
    publish = [
        ("plant/line1/press1/telemetry", b'{"v":1}', False),
        ("plant/line1/press1/telemetry", b"", False),  # an empty payload
        ("usine/ligne-é/presse", b"x" * 200, True),  # retained; a two-byte length; UTF-8
        ("big", bytes(range(256)) * 80, False),  # a three-byte remaining length
    ]

    def client(kind: type[mqtt.Client]) -> mqtt.Client:
        return kind(callback_api_version=CallbackAPIVersion.VERSION2, protocol=protocol)

    lean, stock = client(paho_client.Client), client(mqtt.Client)
    assert _written(lean, publish) == _written(stock, publish)
    # And paho keeps the lean messages as its own, in flight until acknowledged.
    assert [m.mid for m in lean._out_messages.values()] == [1, 2, 3, 4]
    assert {m.state for m in lean._out_messages.values()} == {mqtt.mqtt_ms_wait_for_puback}
    assert lean._inflight_messages == 4
    assert [m.topic for m in lean._out_messages.values()] == [t for t, _, _ in publish]


def test_a_lean_publish_refuses_a_topic_as_paho_does() -> None:
    client = paho_client.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311
    )
    ours, theirs = socket.socketpair()
    client._sock = ours
    try:
        for topic in ["a/+/b", "a/#", ""]:
            with pytest.raises(ValueError):
                client.publish(topic, b"x", qos=1)
        assert not client._out_messages
    finally:
        client._sock = None
        ours.close()
        theirs.close()


async def test_acknowledgements_and_messages_in_one_read_are_all_handled(
    broker: Mosquitto,
) -> None:
    # The connection receives what it publishes: PUBACKs and PUBLISHes come interleaved, so
    # the lean reader hands over to paho's mid-buffer and takes the PUBACKs after them again.
    received: list[str] = []
    acked: list[int] = []
    connection = _connection(
        broker,
        on_message=lambda topic, _: received.append(topic),
        on_puback=lambda mid, reason: acked.append(mid),
    )
    await connection.connect()
    try:
        await connection.subscribe("burst/#", 0)
        mids = [connection.publish(f"burst/{k}", b"%d" % k, 1, False) for k in range(300)]
        await until(lambda: len(received) == 300 and len(acked) == 300, limit=10)
        assert received == [f"burst/{k}" for k in range(300)]
        assert acked == mids
        client = connection._client
        assert isinstance(client, paho_client.Client) and not client.buffered
        assert not client._out_messages and client._inflight_messages == 0
    finally:
        await connection.close()


async def test_a_lean_message_can_still_be_waited_for(broker: Mosquitto) -> None:
    # The agent is told by on_publish; a caller of paho's wait_for_publish is still woken.
    connection = _connection(broker)
    await connection.connect()
    try:
        client = connection._client
        assert isinstance(client, paho_client.Client)
        infos = [client.publish(f"allowed/{k}", b"x", qos=1) for k in range(3)]
        waits = [asyncio.to_thread(info.wait_for_publish, 10) for info in reversed(infos)]
        await asyncio.gather(*waits)
        assert all(info.is_published() for info in infos)
    finally:
        await connection.close()


def test_the_lean_paths_hold_pahos_message_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    # paho changes its message records under `_out_message_mutex`, and so do the lean publish
    # and PUBACK read: whoever uses the client from another thread (`wait_for_publish`, a
    # connect in a worker thread) sees them change together.
    client = paho_client.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    lock = client._out_message_mutex
    held: list[str] = []
    queue, told = client._packet_queue, client._do_on_publish

    def queued(*args: Any) -> Any:
        held.append(f"queue {lock._is_owned()}")  # type: ignore[attr-defined]
        return queue(*args)

    def on_publish(*args: Any) -> Any:
        held.append(f"told {lock._is_owned()}")  # type: ignore[attr-defined]
        return told(*args)

    monkeypatch.setattr(client, "_packet_queue", queued)
    monkeypatch.setattr(client, "_do_on_publish", on_publish)
    ours, theirs = socket.socketpair()
    client._sock = ours
    try:
        info = client.publish("plant/press1", b"x", qos=1)
        theirs.sendall(bytes((mqtt.PUBACK, 2)) + info.mid.to_bytes(2, "big"))
        assert client._packet_read() == mqtt.MQTT_ERR_SUCCESS
    finally:
        client._sock = None
        ours.close()
        theirs.close()
    assert held == ["queue True", "told True"]
    assert info.is_published() and not client._out_messages

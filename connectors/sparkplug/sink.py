"""The Sparkplug B 3.0 sink: the agent as an edge node, its machines as devices (paho-mqtt 2).

Session (see README.md beside this for the whole story):
- connect: a new bdSeq (kept in the store, so it goes on across restarts), the Will set to
  NDEATH(bdSeq) at QoS 1, MQTT 3.1.1 with a clean
  session; subscribe to NCMD (and to the primary host's STATE when one is configured) at QoS 1;
  with a primary host, go on only if its STATE says online; then NBIRTH (seq 0) and a DBIRTH
  per machine.
- send: DDATA per telemetry record and machine, NDATA per event or gap record.
- NCMD `Node Control/Rebirth` = true: NBIRTH and DBIRTHs again (same bdSeq, seq from 0).
- STATE online:false: NDEATH, disconnect; `send` then refuses with a retryable error, so the
  store keeps the data and the forwarder reconnects (a new bdSeq and births) once it is back.
- close: NDEATH at QoS 1, its PUBACK awaited (bounded), then DISCONNECT. The DISCONNECT
  suppresses the Will, so an NDEATH lost on the way would leave the node online at the host.

Acknowledgement. Sparkplug 3.0 says BIRTH and DATA messages MUST go at QoS 0 (TCK assertions
`topics-nbirth-mqtt`, `topics-ndata-mqtt`, ...), so there is no PUBACK. To return from `send`
only once the broker has the messages, each group of publishes is followed by a fence: an
UNSUBSCRIBE of a topic filter we never subscribed to (no side effect; a broker answers it with
UNSUBACK whatever). A broker handles a connection's packets in order, so the UNSUBACK proves
every earlier PUBLISH was received and routed. What QoS 0 still does not cover, Sparkplug covers
its own way: a host that is offline says so in STATE (and we then hold data in the store); a
host that misses a message sees a seq gap and asks for a rebirth.

Threads. paho runs its network loop in its own thread (`loop_start`); its callbacks hand every
event to the asyncio loop with `call_soon_threadsafe`, so all state here is touched on the
event loop only. The acknowledgement of a SUBSCRIBE or UNSUBSCRIBE cannot be handled before the
coroutine that sent it registered its message id: the handler is queued on the loop, which runs
it only after that coroutine yields.

The connection code is this module's own rather than the MQTT sink's: that one speaks MQTT 5
with no Will and no subscriptions, on an externally driven loop; Sparkplug 3.0 needs 3.1.1, a
Will and two subscriptions. The password and TLS set-up are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.clock import Clock, SystemClock
from agent.errors import (
    ConnectError,
    ConnectorError,
    LinesideError,
    RequestTimeout,
    SinkRejected,
)
from agent.sink import Record, SinkContext
from connectors.mqtt.sink import apply_broker_settings
from connectors.sparkplug.config import SparkplugSinkConfig
from connectors.sparkplug.payload import (
    SEQ_MODULO,
    HostState,
    Message,
    MessageType,
    NodeSession,
    PayloadError,
    is_rebirth_request,
    parse_state,
    state_topic,
    topic,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ACK_TIMEOUT = 10.0  # seconds for CONNACK, SUBACK or a fence's UNSUBACK
KEEPALIVE = 30  # seconds; the broker publishes the Will 1.5 keepalives after we go silent
WILL_QOS = 1  # Sparkplug 3.0: the NDEATH Will is QoS 1, not retained
DATA_QOS = 0  # Sparkplug 3.0: BIRTH and DATA messages the edge publishes are QoS 0
DEATH_QOS = 1  # Sparkplug 3.0: NDEATH is QoS 1, the Will and the one sent before DISCONNECT
COMMAND_QOS = 1  # Sparkplug 3.0: NCMD (and STATE) are subscribed at QoS 1
FENCE_FILTER = "lineside/sparkplug/fence"  # never subscribed: unsubscribing it only gets an ack


class SparkplugSink:
    """Publishes records as a Sparkplug B edge node (see the module docstring and README.md)."""

    def __init__(
        self,
        config: SparkplugSinkConfig,
        context: SinkContext,
        *,
        clock: Clock | None = None,
        ack_timeout: float = ACK_TIMEOUT,
        keepalive: int = KEEPALIVE,
    ) -> None:
        self.name = config.name
        self.config = config
        self.context = context
        self.clock: Clock = clock or SystemClock()
        self.ack_timeout = ack_timeout
        self.keepalive = keepalive
        self.session = NodeSession(
            config.group_id,
            config.edge_node_id,
            context.agent_id,
            context.tags,
            types={tag_id: meta.type for tag_id, meta in context.tags.items()},
            next_bd_seq=self._stored_bd_seq(),
        )
        # A fixed client id: when the agent restarts, the broker drops the old connection (and
        # publishes its Will, with the old bdSeq) before it accepts ours, so a stale NDEATH
        # arrives before our NBIRTH, and with the bdSeq kept in the store it is not ours either.
        self.client_id = config.client_id or f"lineside-{context.agent_id}-{config.name}"
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}  # mid → SUBACK/UNSUBACK
        self._connected = False  # MQTT session up
        self._born = False  # NBIRTH published in this session
        self._host: HostState | None = None  # last STATE of the primary host
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Lock()  # one close at a time: its NDEATH waits for a PUBACK
        self._stats = dict.fromkeys(
            (
                "connects",
                "births",
                "rebirths",
                "published",
                "records",
                "bytes",
                "host_offline",
                "bad_state",
            ),
            0,
        )

    @property
    def host_online(self) -> bool:
        """Whether data may flow: always without a primary host, else its last STATE."""
        if self.config.primary_host_id is None:
            return True
        return self._host is not None and self._host.online

    # -----------------------------------------------------------------------------------------
    # Connection

    async def connect(self) -> None:
        await self.close()
        loop = asyncio.get_running_loop()
        self._loop = loop
        config = self.config
        endpoint = config.endpoint
        self.session.start_session()
        self._store_bd_seq()
        will = self.session.ndeath(self._now_ms())
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
            reconnect_on_failure=False,
        )
        client.will_set(will.topic, will.payload, qos=WILL_QOS, retain=False)
        client.connect_timeout = self.ack_timeout
        apply_broker_settings(client, config)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_ack
        client.on_unsubscribe = self._on_ack
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._connack = loop.create_future()
        self._client = client
        try:
            await asyncio.to_thread(client.connect, config.host, config.port, self.keepalive)
        except ssl.SSLError as exc:
            self._client = None
            raise ConnectError(f"{endpoint}: TLS handshake failed: {exc}") from None
        except ConnectionRefusedError:
            self._client = None
            raise ConnectError(f"{endpoint}: connection refused (is the broker running?)") from None
        except OSError as exc:
            self._client = None
            raise ConnectError(f"{endpoint}: unreachable: {exc.strerror or exc}") from None
        client.loop_start()
        try:
            reason = await self._within(self._connack, "CONNACK")
            if reason.is_failure:
                raise ConnectError(
                    f"{endpoint}: the broker refused the connection: {str(reason).lower()}"
                )
            self._connected = True
            self._stats["connects"] += 1
            await self._subscribe(self._ncmd_topic())
            if config.primary_host_id is not None:
                # STATE is retained: the broker sends it right after the SUBACK, so it is here
                # by the time the fence that follows is acknowledged.
                await self._subscribe(state_topic(config.primary_host_id))
                await self._fence()
                if not self.host_online:
                    self._stats["host_offline"] += 1
                    raise ConnectError(f"{endpoint}: primary host {config.primary_host_id} offline")
            await self._birth()
        except BaseException:
            await self.close()
            raise

    async def _subscribe(self, topic_filter: str) -> None:
        client = self._require_client()
        result, mid = client.subscribe(topic_filter, qos=COMMAND_QOS)
        self._check(result, f"subscribe to {topic_filter}")
        assert mid is not None  # paho gives a message id whenever the result is success
        codes = await self._wait_ack(mid, f"SUBACK for {topic_filter}")
        if any(code.is_failure for code in codes):
            raise ConnectError(
                f"{self.config.endpoint}: the broker refused the subscription to {topic_filter}"
            )

    async def _fence(self) -> None:
        """Return once the broker has handled every packet sent before this one."""
        client = self._require_client()
        result, mid = client.unsubscribe(FENCE_FILTER)
        self._check(result, "unsubscribe (fence)")
        assert mid is not None
        await self._wait_ack(mid, "acknowledgement")

    async def _wait_ack(self, mid: int, what: str) -> list[ReasonCode]:
        future: asyncio.Future[list[ReasonCode]] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        try:
            return await self._within(future, what)
        finally:
            self._acks.pop(mid, None)

    async def _within(self, future: asyncio.Future[T], what: str) -> T:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.ack_timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"{self.config.endpoint}: no {what} within {self.ack_timeout:g} s"
            ) from None

    async def _birth(self) -> None:
        """NBIRTH and every DBIRTH, acknowledged. Built and published without a pause, so no
        DATA can come between them (a send's publishes are one synchronous stretch too)."""
        messages = self.session.births(self._now_ms())
        self._publish(messages)
        self._born = True
        self._stats["births"] += 1
        await self._fence()

    async def close(self) -> None:
        async with self._closing:
            await self._close()

    async def _close(self) -> None:
        client, connected, born = self._client, self._connected, self._born
        self._born = False  # `send` refuses from here on
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # close() itself may run as one (primary host offline)
                task.cancel()
        if client is not None and connected and born:
            await self._death()
        self._client = None
        self._connected = False
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()  # nobody waits for it any more
        self._fail_all(ConnectError(f"{self.config.endpoint}: connection closed"))
        if client is None:
            return
        if connected:
            client.disconnect()  # queued after the NDEATH: paho writes packets in order
        await asyncio.to_thread(client.loop_stop)

    async def _death(self) -> None:
        """Sparkplug: NDEATH before a clean DISCONNECT, at QoS 1, and wait (bounded) for its
        PUBACK: the DISCONNECT that follows suppresses the Will, so this NDEATH is the only
        word the host gets that the node went offline."""
        death = self.session.ndeath(self._now_ms())
        try:
            info = self._require_client().publish(death.topic, death.payload, DEATH_QOS, False)
            self._check(info.rc, f"publish to {death.topic}")
            await self._wait_ack(info.mid, "PUBACK for the NDEATH")
        except ConnectorError as exc:  # the connection is going anyway: say so, go on
            log.warning("%s: NDEATH not acknowledged: %s", self.name, exc)

    def _stored_bd_seq(self) -> int:
        """The bdSeq the next connect uses, as kept in the store (0 without one)."""
        meta = self.context.meta
        if meta is None:
            return 0
        try:
            raw = meta.get_meta(self._bd_seq_key)
            value = int(raw) if raw is not None else 0
        except (LinesideError, ValueError) as exc:
            log.warning("%s: cannot read the stored bdSeq (%s); starting at 0", self.name, exc)
            return 0
        return value if 0 <= value < SEQ_MODULO else 0

    def _store_bd_seq(self) -> None:
        """Keep the next bdSeq before connecting, so a restart never registers a Will with a
        bdSeq the broker may still hold from this session."""
        meta = self.context.meta
        if meta is None:
            return
        try:
            meta.set_meta(self._bd_seq_key, str(self.session.next_bd_seq))
        except LinesideError as exc:  # the store's trouble is reported by the store
            log.warning("%s: cannot keep bdSeq in the store: %s", self.name, exc)

    @property
    def _bd_seq_key(self) -> str:
        return f"sink.{self.name}.bd_seq"

    def _fail_all(self, error: Exception) -> None:
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(error)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(error)

    # -----------------------------------------------------------------------------------------
    # Sending

    async def send(self, records: Sequence[Record]) -> None:
        if not self.host_online:
            raise ConnectorError(f"primary host {self.config.primary_host_id} offline")
        if self._client is None or not self._connected or not self._born:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        try:
            messages = self.session.data(records, self._now_ms())
        except PayloadError as exc:
            raise SinkRejected(str(exc), exc.index) from None
        if not messages:
            return
        self._publish(messages)
        await self._fence()
        self._stats["records"] += len(records)

    def _publish(self, messages: Sequence[Message]) -> None:
        client = self._require_client()
        for message in messages:
            info = client.publish(message.topic, message.payload, DATA_QOS, False)
            self._check(info.rc, f"publish to {message.topic}")
            self._stats["bytes"] += len(message.payload)
        self._stats["published"] += len(messages)

    def _require_client(self) -> mqtt.Client:
        if self._client is None or not self._connected:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        return self._client

    def _check(self, result: MQTTErrorCode, what: str) -> None:
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectError(
                f"{self.config.endpoint}: {what} failed: {mqtt.error_string(result)}"
            )

    def _now_ms(self) -> int:
        return self.clock.time_ns() // 1_000_000

    # -----------------------------------------------------------------------------------------
    # paho callbacks (network thread): hand over to the event loop

    def _to_loop(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop closed meanwhile, and nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._to_loop(self._connack_arrived, client, reason)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._to_loop(self._connection_lost, client, str(reason).lower())

    def _on_ack(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        self._to_loop(self._ack_arrived, client, mid, list(codes))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        # Only the NDEATH waits for this (a QoS 1 PUBACK); QoS 0 publishes find no waiter.
        self._to_loop(self._ack_arrived, client, mid, [reason])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._to_loop(self._message_arrived, client, message.topic, bytes(message.payload))

    # -----------------------------------------------------------------------------------------
    # Events, on the event loop. Each checks `client` so a late event of a closed connection
    # does nothing.

    def _connack_arrived(self, client: mqtt.Client, reason: ReasonCode) -> None:
        if client is self._client and self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)

    def _connection_lost(self, client: mqtt.Client, why: str) -> None:
        if client is not self._client:
            return
        self._connected = False
        self._born = False
        self._fail_all(ConnectError(f"{self.config.endpoint}: connection lost ({why})"))

    def _ack_arrived(self, client: mqtt.Client, mid: int, codes: list[ReasonCode]) -> None:
        future = self._acks.get(mid) if client is self._client else None
        if future is not None and not future.done():
            future.set_result(codes)

    def _message_arrived(self, client: mqtt.Client, topic_name: str, payload: bytes) -> None:
        if client is not self._client:
            return
        if topic_name == self._ncmd_topic():
            if is_rebirth_request(payload) and self._born:
                self._spawn(self._rebirth())
        elif self.config.primary_host_id is not None and topic_name == state_topic(
            self.config.primary_host_id
        ):
            self._state_arrived(payload)

    def _state_arrived(self, payload: bytes) -> None:
        state = parse_state(payload)
        if state is None:
            self._stats["bad_state"] += 1
            return
        if self._host is not None and state.timestamp < self._host.timestamp:
            return  # Sparkplug: a STATE older than the last one seen is stale
        self._host = state
        if not state.online and self._born and self._client is not None:
            # Sparkplug: NDEATH, disconnect, and start over once the host is back. The forwarder
            # starts over: `send` now refuses, it closes us and reconnects on its back-off.
            self._stats["host_offline"] += 1
            log.warning("%s: primary host %s offline", self.name, self.config.primary_host_id)
            self._spawn(self.close())

    async def _rebirth(self) -> None:
        try:
            await self._birth()
            self._stats["rebirths"] += 1
        except ConnectorError as exc:  # the connection went: the forwarder reconnects
            log.warning("%s: rebirth failed: %s", self.name, exc)

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ncmd_topic(self) -> str:
        return topic(self.config.group_id, MessageType.NCMD, self.config.edge_node_id)

    def statistics(self) -> Mapping[str, float]:
        return {
            "connected": float(self._connected and self._born),
            "host_online": float(self.host_online),
            "bd_seq": float(self.session.bd_seq),
            **{key: float(value) for key, value in self._stats.items()},
        }

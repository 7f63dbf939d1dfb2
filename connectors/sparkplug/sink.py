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

Connection. `connectors/mqtt/connection.py`, as for the MQTT sink: paho driven by the event
loop, so every event (an acknowledgement, NCMD, STATE, a lost connection) is handled on the
event loop and needs no lock; a SUBSCRIBE, UNSUBSCRIBE or the NDEATH registers its message id
before it awaits, and no acknowledgement can be handled before that. Sparkplug 3.0 asks for
MQTT 3.1.1, a Will and two subscriptions, which that connection takes as settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from agent.clock import Clock, SystemClock
from agent.errors import (
    ConnectError,
    ConnectorError,
    LinesideError,
    SinkRejected,
)
from agent.sink import Record, SinkContext
from agent.statistics import SinkStatistics
from connectors.mqtt.connection import MqttConnection, Will
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
        self.connection = MqttConnection(
            config,
            self.client_id,
            mqtt5=False,
            keepalive=keepalive,
            ack_timeout=ack_timeout,
            on_message=self._message_arrived,
            on_lost=self._connection_lost,
        )
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
        config = self.config
        self.session.start_session()
        self._store_bd_seq()
        will = self.session.ndeath(self._now_ms())
        self.connection.will = Will(will.topic, will.payload, qos=WILL_QOS, retain=False)
        await self.connection.connect()
        self._stats["connects"] += 1
        try:
            await self._subscribe(self._ncmd_topic())
            if config.primary_host_id is not None:
                # STATE is retained: the broker sends it right after the SUBACK, so it is here
                # by the time the fence that follows is acknowledged.
                await self._subscribe(state_topic(config.primary_host_id))
                await self._fence()
                if not self.host_online:
                    self._stats["host_offline"] += 1
                    raise ConnectError(
                        f"{config.endpoint}: primary host {config.primary_host_id} offline"
                    )
            await self._birth()
        except BaseException:
            await self.close()
            raise

    async def _subscribe(self, topic_filter: str) -> None:
        codes = await self.connection.subscribe(topic_filter, COMMAND_QOS)
        if any(code.is_failure for code in codes):
            raise ConnectError(
                f"{self.config.endpoint}: the broker refused the subscription to {topic_filter}"
            )

    async def _fence(self) -> None:
        """Return once the broker has handled every packet sent before this one."""
        await self.connection.unsubscribe(FENCE_FILTER, "acknowledgement")

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
        connected, born = self.connection.connected, self._born
        self._born = False  # `send` refuses from here on
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # close() itself may run as one (primary host offline)
                task.cancel()
        if connected and born:
            await self._death()
        await self.connection.close()  # DISCONNECT, queued after the NDEATH: packets keep order

    async def _death(self) -> None:
        """Sparkplug: NDEATH before a clean DISCONNECT, at QoS 1, and wait (bounded) for its
        PUBACK: the DISCONNECT that follows suppresses the Will, so this NDEATH is the only
        word the host gets that the node went offline."""
        death = self.session.ndeath(self._now_ms())
        try:
            mid = self.connection.publish(death.topic, death.payload, DEATH_QOS, False)
            await self.connection.acknowledged(mid, "PUBACK for the NDEATH")
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

    # -----------------------------------------------------------------------------------------
    # Sending

    async def send(self, records: Sequence[Record]) -> None:
        if not self.host_online:
            raise ConnectorError(f"primary host {self.config.primary_host_id} offline")
        if not self.connection.connected or not self._born:
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
        for message in messages:
            self.connection.publish(message.topic, message.payload, DATA_QOS, False)
            self._stats["bytes"] += len(message.payload)
        self._stats["published"] += len(messages)

    def _now_ms(self) -> int:
        return self.clock.time_ns() // 1_000_000

    # -----------------------------------------------------------------------------------------
    # Events of the connection, on the event loop

    def _connection_lost(self, error: ConnectError) -> None:
        self._born = False

    def _message_arrived(self, topic_name: str, payload: bytes) -> None:
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
        if not state.online and self._born and self.connection.connected:
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

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ncmd_topic(self) -> str:
        return topic(self.config.group_id, MessageType.NCMD, self.config.edge_node_id)

    def statistics(self) -> SinkStatistics:
        s = self._stats
        extras = {k: float(v) for k, v in s.items() if k not in ("connects", "records")}
        return SinkStatistics(
            connected=self.connection.connected and self._born,
            connects=s["connects"],
            records=s["records"],
            extras={
                "host_online": float(self.host_online),
                "bd_seq": float(self.session.bd_seq),
                **extras,
            },
        )

"""The MQTT sink: records to a Unified-Namespace topic tree, acknowledged by PUBACK (paho-mqtt 2).

The connection (paho driven by the event loop, one thread hop for the blocking connect, error
translation) is `connection.py`'s, shared with the Sparkplug sink and the fleet status.

Delivery. MQTT 5, clean start, QoS 1 by default: `send` publishes every message of its
records and returns only when every PUBACK arrived, so the forwarder moves its cursor only over
acknowledged records. At QoS 0 (`qos = 0`) there is no PUBACK and "acknowledged" means written
to the socket: a broker that dies then can lose what was sent. MQTT 5 is used because the
broker says, in the PUBACK reason code, that it refused a message (mosquitto answers "Not
authorized" for an ACL-denied topic; MQTT 3.1.1 drops it silently): such a record raises
`SinkRejected` with its index and is quarantined. Waiting ends with `RequestTimeout` when no
acknowledgement came for `ack_timeout` seconds, and with `ConnectError` when the connection
drops. The SQLite store, not paho's memory, is what keeps unacknowledged records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConnectError, RequestTimeout, SinkRejected
from agent.sink import Record, SinkContext, TelemetryRecord, TelemetryRecords
from agent.statistics import SinkStatistics
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.connection import MqttConnection, Will
from connectors.mqtt.payload import Message, PayloadError, UnsLayout

ACK_TIMEOUT = 10.0  # seconds without any acknowledgement before a send gives up
MAX_INFLIGHT = 100  # unacknowledged QoS 1 messages on the wire; more wait in paho's queue


@dataclass(slots=True)
class _Counts:
    """The sink's counters (`statistics`), plain attributes: some move once per message."""

    connects: int = 0
    published: int = 0
    acknowledged: int = 0
    refused: int = 0
    records: int = 0
    bytes: int = 0
    timeouts: int = 0


@dataclass(eq=False, slots=True)  # compared and hashed by identity: one per send
class _Waiting:
    """The acknowledgements one `send` waits for."""

    done: asyncio.Future[None]
    expected: int
    acknowledged: int = 0
    refused: dict[int, str] = field(default_factory=dict)  # record index → why
    refusals: int = 0  # messages refused
    timer: asyncio.TimerHandle | None = None  # `MqttSink._overdue`'s next look


class MqttSink:
    """Publishes records to an MQTT broker under a UNS topic tree (see README.md beside this)."""

    # Sends may overlap: the forwarder encodes the next batch while the broker acknowledges
    # the previous one. One connection publishes in call order, so order per stream holds.
    concurrent_sends = 2

    def __init__(
        self,
        config: MqttSinkConfig,
        context: SinkContext,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        keepalive: int | None = None,
        will: Message | None = None,
        client_id: str | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.context = context
        self.will = will  # published by the broker when this connection dies unannounced
        self.layout = UnsLayout(
            config.topic_prefix, context.agent_id, context.tags, names=context.names
        )
        self.client_id = (
            client_id or config.client_id or f"lineside-{context.agent_id}-{config.name}"
        )
        self._on_message: Callable[[str, bytes], None] | None = None
        self.connection = MqttConnection(
            config,
            self.client_id,
            mqtt5=True,
            keepalive=int(config.keepalive) if keepalive is None else keepalive,
            ack_timeout=ack_timeout,
            will=Will(will.topic, will.payload, qos=1, retain=will.retain) if will else None,
            max_inflight=MAX_INFLIGHT,
            on_puback=self._on_puback,
            on_message=self._on_message_received,
            on_lost=self._fail_all,
        )
        self._waiting: dict[int, tuple[_Waiting, Message]] = {}  # mid → (its send, message)
        self._batches: set[_Waiting] = set()
        self._counts = _Counts()

    # -----------------------------------------------------------------------------------------
    # Connection

    async def connect(self) -> None:
        await self.close()
        await self.connection.connect()
        self._counts.connects += 1

    def _fail_all(self, error: Exception) -> None:
        self._waiting.clear()
        for waiting in self._batches:
            if not waiting.done.done():
                waiting.done.set_exception(error)
        self._batches.clear()

    async def close(self) -> None:
        if self.connection.connected:
            self._fail_all(ConnectError(f"{self.config.endpoint}: connection closed"))
        await self.connection.close()

    # -----------------------------------------------------------------------------------------
    # Sending

    async def send(self, records: Sequence[Record]) -> None:
        if not self.connection.connected:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        batched = self._batched(records)
        try:
            if batched:
                messages = self.layout.batch_messages(records, self.config.value_encoding)
                if self.config.retain_last:
                    messages += self.layout.last_values(records)
            else:
                messages = self.layout.messages(records, retain_last=self.config.retain_last)
        except PayloadError as exc:
            raise SinkRejected(str(exc), exc.index) from None
        if not messages:
            return
        waiting = await self._publish(messages, self.config.qos)
        if waiting.refused:
            if batched and waiting.refusals == len(messages):
                raise SinkRejected(next(iter(waiting.refused.values())), None)  # all refused
            index = min(waiting.refused)
            self._counts.records += index  # those before it were taken
            raise SinkRejected(waiting.refused[index], index)
        self._counts.records += len(records)

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish `messages` at QoS 1 and return once the broker acknowledged them all (the
        fleet status); raises `SinkRejected` naming the first one it refused."""
        if not self.connection.connected:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        waiting = await self._publish(messages, 1)
        if waiting.refused:
            raise SinkRejected(next(iter(waiting.refused.values())), min(waiting.refused))

    async def _publish(self, messages: Sequence[Message], qos: int) -> _Waiting:
        """Publish in order and wait for every acknowledgement; refusals are in the result."""
        publish, entries, counts = self.connection.publish, self._waiting, self._counts
        waiting = _Waiting(asyncio.get_running_loop().create_future(), len(messages))
        self._batches.add(waiting)
        try:
            for message in messages:
                mid = publish(message.topic, message.payload, qos, message.retain)
                entries[mid] = (waiting, message)
                counts.bytes += len(message.payload)
            counts.published += len(messages)
            await self._wait(waiting)
        finally:
            self._batches.discard(waiting)
            if not waiting.done.done():
                waiting.done.cancel()
            if waiting.acknowledged < waiting.expected:  # timed out, failed or cancelled
                self._forget(waiting)
        return waiting

    def _batched(self, records: Sequence[Record]) -> bool:
        """Whether telemetry `records` go as batch messages (config `batch`, README)."""
        mode = self.config.batch
        if mode == "never" or not records:
            return False
        if isinstance(records, TelemetryRecords):
            backlog = records.historical_count() > 0
        elif all(isinstance(r, TelemetryRecord) for r in records):
            backlog = any(r.historical for r in records)
        else:
            return False  # events and gaps: one message each
        return mode == "always" or backlog or len(records) >= self.config.batch_min_records

    async def _wait(self, waiting: _Waiting) -> None:
        """Until every acknowledgement arrived; `RequestTimeout` only when none came for
        `ack_timeout`. One timer checks for progress (`_overdue`): a send at plant rates
        awaits its future as it is, with no timeout context or shield of its own."""
        loop = asyncio.get_running_loop()
        timeout = self.connection.ack_timeout
        timer = loop.call_later(timeout, self._overdue, waiting, waiting.acknowledged, timeout)
        waiting.timer = timer
        try:
            await waiting.done
        finally:
            waiting.timer.cancel()

    def _overdue(self, waiting: _Waiting, seen: int, timeout: float) -> None:
        """`waiting`'s timer: fail it if no acknowledgement came since the last look (`seen`),
        else look again `timeout` later."""
        if waiting.done.done():
            return
        if waiting.acknowledged != seen:
            loop = waiting.done.get_loop()
            waiting.timer = loop.call_later(
                timeout, self._overdue, waiting, waiting.acknowledged, timeout
            )
            return
        self._counts.timeouts += 1
        missing = waiting.expected - waiting.acknowledged
        waiting.done.set_exception(
            RequestTimeout(
                f"{self.config.endpoint}: {missing} of {waiting.expected} messages "
                f"not acknowledged within {timeout:g} s"
            )
        )

    def _forget(self, waiting: _Waiting) -> None:
        for mid in [mid for mid, entry in self._waiting.items() if entry[0] is waiting]:
            del self._waiting[mid]

    def _on_puback(self, mid: int, reason: ReasonCode) -> None:
        entry = self._waiting.pop(mid, None)
        if entry is None:
            return
        waiting, message = entry
        waiting.acknowledged += 1
        self._counts.acknowledged += 1
        if reason.is_failure:
            self._refused(waiting, message, reason)
        if waiting.acknowledged == waiting.expected and not waiting.done.done():
            waiting.done.set_result(None)

    def _refused(self, waiting: _Waiting, message: Message, reason: ReasonCode) -> None:
        self._counts.refused += 1
        waiting.refusals += 1
        why = f"the broker refused {message.topic}: {str(reason).lower()}"
        waiting.refused.setdefault(message.index, why)

    def statistics(self) -> SinkStatistics:
        counts = self._counts
        return SinkStatistics(
            connected=self.connection.connected,
            connects=counts.connects,
            records=counts.records,
            extras={
                "in_flight": float(len(self._waiting)),
                "published": float(counts.published),
                "acknowledged": float(counts.acknowledged),
                "refused": float(counts.refused),
                "bytes": float(counts.bytes),
                "timeouts": float(counts.timeouts),
            },
        )

    # -----------------------------------------------------------------------------------------
    # Receiving (the fleet view reads the agents' retained status messages)

    async def subscribe(self, topic_filter: str, on_message: Callable[[str, bytes], None]) -> None:
        """Subscribe at QoS 1 and return once the broker granted it; every message (retained
        ones first) goes to `on_message(topic, payload)`, on the event loop."""
        if not self.connection.connected:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        self._on_message = on_message
        granted = await self.connection.subscribe(topic_filter, qos=1)
        refused = [code for code in granted if code.is_failure]
        if refused:
            raise ConnectError(
                f"{self.config.endpoint}: the broker refused the subscription to "
                f"{topic_filter}: {str(refused[0]).lower()}"
            )

    def _on_message_received(self, topic: str, payload: bytes) -> None:
        if self._on_message is not None:
            self._on_message(topic, payload)

    # -----------------------------------------------------------------------------------------
    # Beside sending

    async def background(self) -> None:
        """The agent's retained status for the fleet view, while the forwarder runs this sink
        (connectors/mqtt/fleet.py); returns at once when `status_interval` is 0 or the agent
        gives no status figures."""
        from connectors.mqtt.fleet import StatusPublisher  # it builds on this class

        if self.config.status_interval <= 0 or self.context.status is None:
            return
        await StatusPublisher(self, self.context.status).run()

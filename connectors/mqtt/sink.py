"""The MQTT sink: records to a Unified-Namespace topic tree, acknowledged by PUBACK (paho-mqtt 2).

How paho is driven. The agent is asyncio end to end with one thread boundary (ONNX
inference), so paho's own network thread (`loop_start`) is not used: its socket is watched by
the event loop (`add_reader` / `add_writer`, paho's external-loop callbacks) and its timers
(keepalive pings) by `call_later`. Every paho callback therefore runs on the event loop, and the
map from message id to waiting batch needs no lock. The one exception is paho's `connect()`,
which resolves the name, opens the TCP connection and does the TLS handshake blocking: it runs
in a worker thread (`asyncio.to_thread`) before the socket is handed to the loop, so a broker
that does not answer never stalls acquisition.

Delivery. MQTT 5, clean start, QoS 1 by default: `send` publishes every message of its
records and returns only when every PUBACK arrived, so the forwarder moves its cursor only over
acknowledged records. At QoS 0 (`qos = 0`) there is no PUBACK and "acknowledged" means written
to the socket: a broker that dies then can lose what was sent. MQTT 5 is used because the
broker says, in the PUBACK reason code, that it refused a message (mosquitto answers "Not
authorized" for an ACL-denied topic; MQTT 3.1.1 drops it silently): such a record raises
`SinkRejected` with its index and is quarantined. Waiting ends with `RequestTimeout` when no
acknowledgement came for `ack_timeout` seconds, and with `ConnectError` when the connection
drops. The SQLite store, not paho's memory, is what keeps unacknowledged records.

Errors of paho, `ssl` and `socket` are translated here, in one place, into `agent.errors`.
Passwords are read at connect time (environment or file) and never logged.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConnectError, RequestTimeout, SinkRejected
from agent.secrets import read_password
from agent.sink import Record, SinkContext, TelemetryRecord, TelemetryRecords
from connectors.mqtt.config import Broker, MqttSinkConfig, Tls
from connectors.mqtt.payload import Message, PayloadError, UnsLayout

ACK_TIMEOUT = 10.0  # seconds without any acknowledgement before a send gives up
MAX_INFLIGHT = 100  # unacknowledged QoS 1 messages on the wire; more wait in paho's queue
MISC_INTERVAL = 1.0  # seconds between paho's housekeeping calls (pings, keepalive checks)


def apply_broker_settings(client: mqtt.Client, config: Broker) -> None:
    """Credentials and TLS from a broker config; the MQTT and Sparkplug sinks share them."""
    if config.username is not None:
        client.username_pw_set(config.username, read_password(config))
    if config.tls is not None:
        client.tls_set_context(tls_context(config.tls))
        # paho checks the name itself unless the context does; leave it to the context.
        client.tls_insecure_set(not config.tls.check_hostname)


def tls_context(tls: Tls) -> ssl.SSLContext:
    """A client context verifying the broker against `tls.ca` (or the system's trust store)."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca is not None else None)
        if tls.cert is not None and tls.key is not None:
            context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise ConnectError(f"cannot load the TLS files: {exc}") from None
    context.check_hostname = tls.check_hostname
    return context


@dataclass(eq=False, slots=True)  # compared and hashed by identity: one per send
class _Waiting:
    """The acknowledgements one `send` waits for."""

    done: asyncio.Future[None]
    expected: int
    acknowledged: int = 0
    refused: dict[int, str] = field(default_factory=dict)  # record index → why
    refusals: int = 0  # messages refused


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
        self.ack_timeout = ack_timeout
        self.keepalive = int(config.keepalive) if keepalive is None else keepalive
        self.will = will  # published by the broker when this connection dies unannounced
        self.layout = UnsLayout(
            config.topic_prefix, context.agent_id, context.tags, names=context.names
        )
        self.client_id = (
            client_id or config.client_id or f"lineside-{context.agent_id}-{config.name}"
        )
        self._on_message: Callable[[str, bytes], None] | None = None
        self._subscribed: asyncio.Future[list[ReasonCode]] | None = None
        self._client: mqtt.Client | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._waiting: dict[int, tuple[_Waiting, int, str]] = {}  # mid → (send, index, topic)
        self._batches: set[_Waiting] = set()
        self._stats = dict.fromkeys(
            ("connects", "published", "acknowledged", "refused", "records", "bytes", "timeouts"),
            0,
        )

    # -----------------------------------------------------------------------------------------
    # Connection

    async def connect(self) -> None:
        await self.close()
        loop = asyncio.get_running_loop()
        config = self.config
        endpoint = config.endpoint
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.connect_timeout = self.ack_timeout
        apply_broker_settings(client, config)
        if self.will is not None:
            client.will_set(self.will.topic, self.will.payload, qos=1, retain=self.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message_received
        self._connack = loop.create_future()
        try:
            await asyncio.to_thread(
                client.connect, config.host, config.port, self.keepalive, clean_start=True
            )
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(
                f"{endpoint}: TLS certificate verify failed: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectError(f"{endpoint}: TLS handshake failed: {exc.reason or exc}") from None
        except ssl.CertificateError as exc:  # a name mismatch caught outside the context
            raise ConnectError(f"{endpoint}: TLS certificate verify failed: {exc}") from None
        except ConnectionResetError:
            if config.tls is not None:
                raise ConnectError(
                    f"{endpoint}: TLS handshake failed: the broker reset the connection "
                    f"(is port {config.port} a TLS listener?)"
                ) from None
            raise ConnectError(f"{endpoint}: the broker reset the connection") from None
        except ConnectionRefusedError:
            raise ConnectError(f"{endpoint}: connection refused (is the broker running?)") from None
        except TimeoutError:
            raise ConnectError(
                f"{endpoint}: unreachable (no answer within {self.ack_timeout:g} s)"
            ) from None
        except OSError as exc:
            raise ConnectError(f"{endpoint}: unreachable: {exc.strerror or exc}") from None
        self._attach(client)
        try:
            async with asyncio.timeout(self.ack_timeout):
                reason = await asyncio.shield(self._connack)
        except TimeoutError:
            await self.close()
            raise ConnectError(
                f"{endpoint}: no CONNACK within {self.ack_timeout:g} s (is it an MQTT broker?)"
            ) from None
        except ConnectError:
            await self.close()
            raise
        if reason.is_failure:
            await self.close()
            hint = " (check the username and password)" if reason.value in (0x86, 0x87) else ""
            raise ConnectError(
                f"{endpoint}: the broker refused the connection: {str(reason).lower()}{hint}"
            )
        self._connected = True
        self._stats["connects"] += 1

    def _attach(self, client: mqtt.Client) -> None:
        """Hand the connected socket to the event loop."""
        loop = asyncio.get_running_loop()
        sock = client.socket()
        if sock is None:
            raise ConnectError(f"{self.config.endpoint}: the connection closed at once")
        self._client = client
        self._loop = loop
        self._fd = sock.fileno()
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        loop.add_reader(self._fd, self._readable)
        client.loop_write()  # anything the handshake left unsent; registers the writer if need be
        self._misc = loop.call_later(MISC_INTERVAL, self._housekeeping)

    def _readable(self) -> None:
        client = self._client
        if client is None:
            return
        client.loop_read()
        # TLS may hold decrypted bytes the OS socket no longer signals: drain them too.
        sock = client.socket()
        while isinstance(sock, ssl.SSLSocket) and sock.pending() and self._client is client:
            client.loop_read()
            sock = client.socket()

    def _writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()

    def _housekeeping(self) -> None:
        client = self._client
        if client is None:
            return
        client.loop_misc()  # pings; drops a connection the broker stopped answering
        if self._client is client and self._loop is not None:
            self._misc = self._loop.call_later(MISC_INTERVAL, self._housekeeping)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._detach()

    def _detach(self) -> None:
        loop = self._loop
        if self._fd is not None and loop is not None:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            self._fd = None
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        self._connected = False
        why = str(reason).lower()
        lost = ConnectError(f"{self.config.endpoint}: connection lost ({why})")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(lost)
        self._fail_all(lost)

    def _fail_all(self, error: Exception) -> None:
        self._waiting.clear()
        if self._subscribed is not None and not self._subscribed.done():
            self._subscribed.set_exception(error)
        for waiting in self._batches:
            if not waiting.done.done():
                waiting.done.set_exception(error)
        self._batches.clear()

    async def close(self) -> None:
        # Nobody waits for these any more (a connect or subscribe cut short): cancelled before
        # the DISCONNECT below fails them with an exception no one would retrieve.
        for pending in (self._connack, self._subscribed):
            if pending is not None and not pending.done():
                pending.cancel()
        client, self._client = self._client, None
        self._connected = False
        if client is None:
            return
        self._fail_all(ConnectError(f"{self.config.endpoint}: connection closed"))
        if client.socket() is not None:
            client.disconnect()
            client.loop_write()  # DISCONNECT is small: it goes out at once or not at all
        self._detach()
        # paho closes its socket again when it is collected, maybe with no loop running.
        client.on_socket_close = None
        client.on_socket_register_write = None
        client.on_socket_unregister_write = None
        sock = client.socket()
        if sock is not None:  # DISCONNECT could not be written: close without it
            sock.close()

    # -----------------------------------------------------------------------------------------
    # Sending

    async def send(self, records: Sequence[Record]) -> None:
        if self._client is None or not self._connected:
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
            self._stats["records"] += index  # those before it were taken
            raise SinkRejected(waiting.refused[index], index)
        self._stats["records"] += len(records)

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish `messages` at QoS 1 and return once the broker acknowledged them all (the
        fleet status); raises `SinkRejected` naming the first one it refused."""
        if self._client is None or not self._connected:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        waiting = await self._publish(messages, 1)
        if waiting.refused:
            raise SinkRejected(next(iter(waiting.refused.values())), min(waiting.refused))

    async def _publish(self, messages: Sequence[Message], qos: int) -> _Waiting:
        """Publish in order and wait for every acknowledgement; refusals are in the result."""
        client = self._client
        assert client is not None
        waiting = _Waiting(asyncio.get_running_loop().create_future(), len(messages))
        self._batches.add(waiting)
        try:
            for message in messages:
                info = client.publish(message.topic, message.payload, qos, message.retain)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise ConnectError(
                        f"{self.config.endpoint}: publish failed: {mqtt.error_string(info.rc)}"
                    )
                self._waiting[info.mid] = (waiting, message.index, message.topic)
                self._stats["bytes"] += len(message.payload)
            self._stats["published"] += len(messages)
            await self._wait(waiting)
        finally:
            self._batches.discard(waiting)
            if not waiting.done.done():
                waiting.done.cancel()
                self._forget(waiting)
        return waiting

    def _batched(self, records: Sequence[Record]) -> bool:
        """Whether telemetry `records` go as batch messages (config `batch`, README)."""
        mode = self.config.batch
        if mode == "never" or not records:
            return False
        if isinstance(records, TelemetryRecords):
            backlog = bool(records.historical.any())
        elif all(isinstance(r, TelemetryRecord) for r in records):
            backlog = any(r.historical for r in records)
        else:
            return False  # events and gaps: one message each
        return mode == "always" or backlog or len(records) >= self.config.batch_min_records

    async def _wait(self, waiting: _Waiting) -> None:
        """Until every acknowledgement arrived; time out only when none came for a while."""
        while True:
            seen = waiting.acknowledged
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that meets the acknowledgement, and a stop would then never end.
                async with asyncio.timeout(self.ack_timeout):
                    await asyncio.shield(waiting.done)
                return
            except TimeoutError:
                if waiting.acknowledged == seen:
                    self._stats["timeouts"] += 1
                    missing = waiting.expected - waiting.acknowledged
                    raise RequestTimeout(
                        f"{self.config.endpoint}: {missing} of {waiting.expected} messages "
                        f"not acknowledged within {self.ack_timeout:g} s"
                    ) from None

    def _forget(self, waiting: _Waiting) -> None:
        for mid in [mid for mid, entry in self._waiting.items() if entry[0] is waiting]:
            del self._waiting[mid]

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        entry = self._waiting.pop(mid, None)
        if entry is None:
            return
        waiting, index, topic = entry
        waiting.acknowledged += 1
        self._stats["acknowledged"] += 1
        if reason.is_failure:
            self._stats["refused"] += 1
            waiting.refusals += 1
            waiting.refused.setdefault(index, f"the broker refused {topic}: {str(reason).lower()}")
        if waiting.acknowledged == waiting.expected and not waiting.done.done():
            waiting.done.set_result(None)

    def statistics(self) -> Mapping[str, float]:
        return {
            "connected": float(self._connected),
            "in_flight": float(len(self._waiting)),
            **{key: float(value) for key, value in self._stats.items()},
        }

    # -----------------------------------------------------------------------------------------
    # Receiving (the fleet view reads the agents' retained status messages)

    async def subscribe(self, topic_filter: str, on_message: Callable[[str, bytes], None]) -> None:
        """Subscribe at QoS 1 and return once the broker granted it; every message (retained
        ones first) goes to `on_message(topic, payload)`, on the event loop."""
        client = self._client
        if client is None or not self._connected:
            raise ConnectError(f"{self.config.endpoint}: not connected")
        self._on_message = on_message
        self._subscribed = asyncio.get_running_loop().create_future()
        result, _mid = client.subscribe(topic_filter, qos=1)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectError(
                f"{self.config.endpoint}: subscribe failed: {mqtt.error_string(result)}"
            )
        try:
            async with asyncio.timeout(self.ack_timeout):
                granted = await asyncio.shield(self._subscribed)
        except TimeoutError:
            raise RequestTimeout(
                f"{self.config.endpoint}: no SUBACK within {self.ack_timeout:g} s"
            ) from None
        refused = [code for code in granted if code.is_failure]
        if refused:
            raise ConnectError(
                f"{self.config.endpoint}: the broker refused the subscription to "
                f"{topic_filter}: {str(refused[0]).lower()}"
            )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Any,
    ) -> None:
        if self._subscribed is not None and not self._subscribed.done():
            self._subscribed.set_result(reasons)

    def _on_message_received(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        if self._on_message is not None:
            self._on_message(message.topic, bytes(message.payload))

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

"""One MQTT connection (paho-mqtt 2) driven by the event loop: the MQTT and Sparkplug sinks and
the fleet status share it.

How paho is driven. The agent is asyncio end to end, so paho's own network thread
(`loop_start`) is not used: its socket is watched by the event loop (`add_reader`, and paho's
external-loop callbacks: what paho queues is written with `call_soon` once the code queuing it
yields, so a send's messages go in one pass, and `add_writer` is used only while the socket is
full) and its timers (keepalive pings) by `call_later`.
Every paho callback therefore runs on the event loop, inside the reader callback, never while
a coroutine runs: a coroutine that sends a packet registers its message id before it awaits,
and no acknowledgement can come before that. The one exception is paho's `connect()`, which
resolves the name, opens the TCP connection and does the TLS handshake blocking: it runs in a
worker thread (`asyncio.to_thread`) before the socket is handed to the loop, so a broker that
does not answer never stalls acquisition (docs/decisions/0007-mqtt-on-the-event-loop.md).

Errors of paho, `ssl` and `socket` are translated here, in one place, into `agent.errors`;
every wait is bounded by `ack_timeout` with `asyncio.timeout` (not `wait_for`: on 3.11 it can
swallow a cancellation that meets the answer, and a stop would then never end). Passwords are
read at connect time (environment or file) and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConnectError, RequestTimeout
from agent.secrets import read_password
from connectors.mqtt.config import Broker, Tls
from connectors.mqtt.paho_client import Client, new_client

T = TypeVar("T")
MISC_INTERVAL = 1.0  # seconds between paho's housekeeping calls (pings, keepalive checks)


def _read_ahead(client: mqtt.Client) -> bool:
    """Whether `client` holds bytes read from its socket that paho has not taken yet."""
    if isinstance(client, Client) and client.buffered:
        return True
    sock = client.socket()
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def apply_broker_settings(client: mqtt.Client, config: Broker) -> None:
    """Credentials and TLS from a broker config."""
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


@dataclass(frozen=True, slots=True)
class Will:
    """What the broker publishes when the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


class MqttConnection:
    """One broker connection at a time: `connect()`, publish and subscribe, `close()`.

    The owner hears of PUBACKs nobody awaits (`on_puback(mid, reason)`), of messages
    (`on_message(topic, payload)`) and of the connection dropping (`on_lost(error)`), all on
    the event loop.
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        *,
        mqtt5: bool,
        keepalive: int,
        ack_timeout: float,
        will: Will | None = None,
        max_inflight: int | None = None,
        on_puback: Callable[[int, ReasonCode], None] | None = None,
        on_message: Callable[[str, bytes], None] | None = None,
        on_lost: Callable[[ConnectError], None] | None = None,
    ) -> None:
        self.broker = broker
        self.endpoint = broker.endpoint
        self.client_id = client_id
        self.mqtt5 = mqtt5
        self.keepalive = keepalive
        self.ack_timeout = ack_timeout
        self.will = will
        self.max_inflight = max_inflight
        self.on_puback = on_puback
        self.on_message = on_message
        self.on_lost = on_lost
        self.connected = False
        self._client: mqtt.Client | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}  # mid → acknowledgement
        self._misc: asyncio.TimerHandle | None = None
        self._watching = False  # the loop watches the socket for writing (it was full)

    def socket(self) -> socket.socket | ssl.SSLSocket | None:
        """The connection's socket, while there is one."""
        client = self._client
        sock = client.socket() if client is not None else None
        return sock if isinstance(sock, socket.socket) else None

    # -- connecting ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect and wait for a CONNACK that accepts; `ConnectError` saying why not."""
        await self.close()
        loop = asyncio.get_running_loop()
        broker, endpoint = self.broker, self.endpoint
        client = self._new_client()
        self._connack = loop.create_future()
        try:
            if self.mqtt5:
                await asyncio.to_thread(
                    client.connect, broker.host, broker.port, self.keepalive, clean_start=True
                )
            else:
                await asyncio.to_thread(client.connect, broker.host, broker.port, self.keepalive)
        except ssl.SSLCertVerificationError as exc:
            raise ConnectError(
                f"{endpoint}: TLS certificate verify failed: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            raise ConnectError(f"{endpoint}: TLS handshake failed: {exc.reason or exc}") from None
        except ssl.CertificateError as exc:  # a name mismatch caught outside the context
            raise ConnectError(f"{endpoint}: TLS certificate verify failed: {exc}") from None
        except ConnectionResetError:
            if broker.tls is not None:
                raise ConnectError(
                    f"{endpoint}: TLS handshake failed: the broker reset the connection "
                    f"(is port {broker.port} a TLS listener?)"
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
        self.connected = True

    def _new_client(self) -> mqtt.Client:
        if self.mqtt5:
            client = new_client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                reconnect_on_failure=False,
            )
        else:
            client = new_client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
                reconnect_on_failure=False,
            )
        if self.max_inflight is not None:
            client.max_inflight_messages_set(self.max_inflight)
        client.connect_timeout = self.ack_timeout
        apply_broker_settings(client, self.broker)
        will = self.will
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_ack
        client.on_unsubscribe = self._on_ack
        client.on_message = self._on_message
        return client

    def _attach(self, client: mqtt.Client) -> None:
        """Hand the connected socket to the event loop."""
        loop = asyncio.get_running_loop()
        sock = client.socket()
        if sock is None:
            raise ConnectError(f"{self.endpoint}: the connection closed at once")
        if isinstance(sock, socket.socket):  # TLS too; not a websocket wrapper
            # Live data leaves at once: with Nagle's algorithm a PUBLISH written while an
            # earlier segment waits for its TCP ack is held back, up to the far side's delayed
            # ack (40 ms on Linux). A send's messages still go in one pass of `loop_write`.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        # Bytes read ahead (the lean client's buffer, or decrypted ones TLS holds) raise no
        # readiness event: drain them too.
        while self._client is client and _read_ahead(client):
            client.loop_read()

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
        # paho has packets to write (it says so once, until they are all written): write them
        # as soon as the coroutine or callback queuing them yields, a send's messages in one
        # pass, and watch the socket only when it is full (`_flush`). Watching it for every
        # send would cost two changes of the selector and a poll each time.
        if self._fd is not None and self._loop is not None:
            self._loop.call_soon(self._flush, client)

    def _flush(self, client: mqtt.Client) -> None:
        if client is not self._client or self._fd is None or self._loop is None:
            return  # closed meanwhile
        client.loop_write()
        if client.want_write() and self._client is client and self._fd is not None:
            self._watching = True  # the socket is full: write the rest when it drains
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._watching and self._fd is not None and self._loop is not None:
            self._watching = False
            self._loop.remove_writer(self._fd)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._detach()

    def _detach(self) -> None:
        loop = self._loop
        if self._fd is not None and loop is not None:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
            self._fd = None
        self._watching = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    async def close(self) -> None:
        """DISCONNECT (so the broker drops the Will) and let go of the socket; whoever still
        waits for an acknowledgement gets `ConnectError`."""
        # Nobody waits for a CONNACK any more (a connect cut short): cancelled before the
        # DISCONNECT below fails it with an exception no one would retrieve.
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()
        client, self._client = self._client, None
        self.connected = False
        if client is None:
            return
        self._fail_acks(ConnectError(f"{self.endpoint}: connection closed"))
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

    # -- sending and waiting ---------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        """Queue a PUBLISH; its message id. `ConnectError` when not connected or paho refuses."""
        client = self._require()
        info = client.publish(topic, payload, qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:  # the message only when it is needed
            self._check(info.rc, f"publish to {topic}")
        return info.mid

    async def subscribe(self, topic_filter: str, qos: int) -> list[ReasonCode]:
        """Subscribe and return the broker's reason codes (SUBACK)."""
        result, mid = self._require().subscribe(topic_filter, qos=qos)
        self._check(result, f"subscribe to {topic_filter}")
        assert mid is not None  # paho gives a message id whenever the result is success
        return await self.acknowledged(mid, "SUBACK")

    async def unsubscribe(self, topic_filter: str, what: str) -> list[ReasonCode]:
        """Unsubscribe and return the broker's reason codes (UNSUBACK)."""
        result, mid = self._require().unsubscribe(topic_filter)
        self._check(result, f"unsubscribe from {topic_filter}")
        assert mid is not None
        return await self.acknowledged(mid, what)

    async def acknowledged(self, mid: int, what: str) -> list[ReasonCode]:
        """The acknowledgement of packet `mid` (a SUBACK, an UNSUBACK, or a PUBACK that would
        otherwise go to `on_puback`); `RequestTimeout` naming `what` after `ack_timeout`."""
        future: asyncio.Future[list[ReasonCode]] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        try:
            return await self.within(future, what)
        finally:
            if self._acks.get(mid) is future:
                del self._acks[mid]
            if not future.done():
                future.cancel()

    async def within(self, future: asyncio.Future[T], what: str) -> T:
        """`future`'s result, or `RequestTimeout` after `ack_timeout` seconds."""
        try:
            async with asyncio.timeout(self.ack_timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise RequestTimeout(
                f"{self.endpoint}: no {what} within {self.ack_timeout:g} s"
            ) from None

    def _require(self) -> mqtt.Client:
        if self._client is None or not self.connected:
            raise ConnectError(f"{self.endpoint}: not connected")
        return self._client

    def _check(self, result: MQTTErrorCode, what: str) -> None:
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectError(f"{self.endpoint}: {what} failed: {mqtt.error_string(result)}")

    def _fail_acks(self, error: Exception) -> None:
        acks, self._acks = self._acks, {}
        for future in acks.values():
            if not future.done():
                future.set_exception(error)

    # -- paho's callbacks (on the event loop) ------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(reason)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if client is not self._client:
            return  # a connection closed on purpose: its owner knows
        self.connected = False
        lost = ConnectError(f"{self.endpoint}: connection lost ({str(reason).lower()})")
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(lost)
        self._fail_acks(lost)
        if self.on_lost is not None:
            self.on_lost(lost)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        future = self._acks.get(mid)
        if future is not None:
            if not future.done():
                future.set_result([reason])
        elif self.on_puback is not None:
            self.on_puback(mid, reason)

    def _on_ack(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        future = self._acks.get(mid)
        if future is not None and not future.done():
            future.set_result(list(codes))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self.on_message is not None:
            self.on_message(message.topic, bytes(message.payload))

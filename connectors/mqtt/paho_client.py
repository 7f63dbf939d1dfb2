"""paho's MQTT client with a lean path for the messages and acknowledgements a sink lives on.

At 100 messages a second paho's own path is a good part of the agent's MQTT cost
(docs/decisions/0007-mqtt-on-the-event-loop.md): each QoS 1 PUBLISH goes through a dozen
Python calls, a `threading.Condition` of its own and a send of its own; each acknowledgement
through three socket reads, a generic packet reader, two `ReasonCode` and two `Properties`
objects, and a look at every message paho keeps. `Client` changes these, and nothing else:

- `publish` of a QoS 1 message (bytes, no properties) while the in-flight limit has room
  builds the PUBLISH itself, its topic encoded and checked once per topic, and keeps it in
  paho's records as paho would (`_Message`, in flight, its `_Info` sharing one Condition).
  Anything else (QoS 0 or 2, properties, the in-flight limit reached) is paho's own `publish`.
- `_packet_write` writes the packets paho has queued with one send when none of them wants
  paho's attention once written (a DISCONNECT, or a PUBLISH at QoS 0, whose `on_publish` is
  told on the write): a send's fifty messages are one system call and, on a connection without
  Nagle's algorithm, as few segments as fit instead of fifty. What the socket did not take
  stays queued in paho's own records, as paho leaves a packet it wrote in part.
- `_packet_read` reads what the socket has (up to `READ_SIZE` bytes) with one system call and
  handles the PUBACKs at its front that carry no properties (a message id and at most a
  reason code, the usual ones) in one pass, with one shared `ReasonCode` per code. Anything
  else (a PUBLISH, a PUBACK with a reason string or a code paho does not know, half a packet)
  goes to paho's own reader, which takes its bytes from that buffer (`_sock_recv`). Bytes
  left in the buffer raise no readiness event, so whoever drives the client calls `loop_read`
  again while `buffered` says there are some (`MqttConnection._readable`).
- `_do_on_publish` of a message `publish` built tells `on_publish` as paho does, and looks
  for messages held back by the in-flight limit only when there are some.

What the broker receives and what `on_publish` is told are the same either way
(tests/connectors/mqtt/test_paho_client.py). All of these are overrides of paho's private
methods. `LEAN` is False, and the stock client is used, unless this paho has them with the
shape they are written against: a paho upgrade can make the agent slower, never wrong.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_SIZE = 65536  # one read takes every acknowledgement a send's burst brings back

_PUBACK = PacketTypes.PUBACK
_VERSION2 = CallbackAPIVersion.VERSION2
_PUBACK_BYTE = mqtt.PUBACK  # a PUBACK's first byte (its flags are 0)
# The codes a PUBACK may carry (MQTT 5.0, 3.4.2.1); another code goes to paho's decoder.
_PUBACK_CODES = (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)


def _has(name: str, parameters: tuple[str, ...]) -> bool:
    method = getattr(mqtt.Client, name, None)
    if method is None:
        return False
    names = tuple(inspect.signature(method).parameters)
    return names[names[:1] == ("self",) :] == parameters  # a static method has no `self`


# The private methods overridden below, with the parameters they are written against.
LEAN = (
    _has("_packet_write", ())
    and _has("_sock_send", ("buf",))
    and _has("_sock_recv", ("bufsize",))
    and _has("_do_on_publish", ("mid", "reason_code", "properties"))
    and _has("_packet_read", ())
    and _has("_packet_queue", ("command", "packet", "mid", "qos", "info"))
    and _has("_mid_generate", ())
    and _has("_raise_for_invalid_topic", ("topic",))
    and _has("_update_inflight", ())
)

# Every lean message's info shares one Condition: the agent never waits on a message (it is
# told by `on_publish`), and a Condition of its own per message was a tenth of a publish.
_PUBLISHED = threading.Condition()


class _Info(mqtt.MQTTMessageInfo):
    """A QoS 1 message's info, its Condition the shared `_PUBLISHED` (`wait_for_publish`
    still works: it waits for its own message's flag, and every publish wakes all waiters)."""

    __slots__ = ()

    def __init__(self, mid: int) -> None:  # paho's, without a Condition of its own
        self.mid = mid
        self._published = False
        self._condition = _PUBLISHED
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _set_as_published(self) -> None:
        with _PUBLISHED:
            self._published = True
            _PUBLISHED.notify_all()


class Client(mqtt.Client):
    """`paho.mqtt.client.Client` with the lean socket path of this module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = bytearray()  # read from the socket, not yet taken by paho
        self._reasons = {code: ReasonCode(_PUBACK, identifier=code) for code in _PUBACK_CODES}
        self._no_properties = Properties(_PUBACK)  # type: ignore[no-untyped-call]
        self._heads: dict[str, bytes] = {}  # topic -> its length and UTF-8 bytes
        # After a PUBLISH's message id: MQTT 5's property length (none), nothing in 3.1.1.
        self._after_mid = b"\x00" if self._protocol == mqtt.MQTTv5 else b""

    @property
    def buffered(self) -> bool:
        """Whether bytes read from the socket wait for paho (call `loop_read` again)."""
        return bool(self._buffer)

    def publish(
        self,
        topic: str,
        payload: Any = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        limit = self._max_inflight_messages
        if (
            qos != 1
            or properties is not None
            or type(payload) is not bytes
            or self._sock is None
            or (limit > 0 and self._inflight_messages >= limit)  # paho queues it
            or self._max_queued_messages > 0
            or self._callback_api_version != _VERSION2
        ):
            return super().publish(topic, payload, qos, retain, properties)
        head = self._heads.get(topic)
        if head is None:
            head = self._heads[topic] = self._head(topic)
        size = len(head) + 2 + len(self._after_mid) + len(payload)
        if size > _MAX_REMAINING:
            raise ValueError("Payload too large.")
        with self._out_message_mutex:  # as paho's publish: its records change together
            mid = self._mid_generate()
            messages = self._out_messages
            if mid in messages:  # 65,535 messages unacknowledged: paho's own path says so
                return super().publish(topic, payload, qos, retain, properties)
            message = _Message(mid, head, payload, retain)
            messages[mid] = message
            self._inflight_messages += 1
            packet = b"".join(
                (
                    _FIRST_BYTE[retain],
                    _remaining_length(size),
                    head,
                    mid.to_bytes(2, "big"),
                    self._after_mid,
                    payload,
                )
            )
            rc = self._packet_queue(mqtt.PUBLISH, packet, mid, 1, message.info)
        message.info.rc = rc
        return message.info

    def _head(self, topic: str) -> bytes:
        """A PUBLISH's topic as its packet carries it (length first), checked as paho checks it."""
        encoded = topic.encode("utf-8")
        if not encoded and self._protocol != mqtt.MQTTv5:
            raise ValueError("Invalid topic.")
        self._raise_for_invalid_topic(encoded)
        return len(encoded).to_bytes(2, "big") + encoded

    def _packet_write(self) -> MQTTErrorCode:
        queue = self._out_packet
        if len(queue) < 2 or not all(map(_plain, queue)):
            return super()._packet_write()  # one packet, or one paho must see written
        gathered = b"".join([p["packet"][p["pos"] :] for p in queue])
        try:
            sent = self._sock_send(gathered)
        except (AttributeError, ValueError):  # the socket went away: as paho's own loop
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to send on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        while sent and queue:
            packet = queue[0]
            done = min(sent, packet["to_process"])
            packet["pos"] += done
            packet["to_process"] -= done
            sent -= done
            if packet["to_process"]:
                break  # written in part: the rest goes when the socket takes it
            queue.popleft()
        with self._msgtime_mutex:
            self._last_msg_out = time.monotonic()
        return MQTTErrorCode.MQTT_ERR_AGAIN if queue else MQTTErrorCode.MQTT_ERR_SUCCESS

    def _sock_recv(self, bufsize: int) -> bytes:
        buffer = self._buffer
        if not buffer:
            data: bytes = super()._sock_recv(READ_SIZE)
            if len(data) <= bufsize:
                return data  # all of it wanted (or the end of the connection: b"")
            buffer += data
        taken = bytes(buffer[:bufsize])
        del buffer[:bufsize]
        return taken

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] != 0:
            return super()._packet_read()  # in the middle of a packet: paho's own reader
        buffer = self._buffer
        if not buffer:
            try:
                data = super()._sock_recv(READ_SIZE)
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            if not data:
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            buffer += data
        # The PUBACKs at the front of what was read, each whole and without properties (a
        # message id and at most a reason code), are handled here in one pass; anything else
        # is left to paho's reader, which takes it from the buffer (`_sock_recv`).
        taken = 0
        end = len(buffer)
        reasons = self._reasons
        messages = self._out_messages
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        with self._out_message_mutex:  # held around `_do_on_publish`, as paho's reader holds it
            while taken + 4 <= end and buffer[taken] == _PUBACK_BYTE:
                size = buffer[taken + 1]
                if size == 3:
                    if taken + 5 > end:
                        break
                    reason = reasons.get(buffer[taken + 4])
                    if reason is None:
                        break  # a code paho does not know: paho's reader says so
                elif size == 2:
                    reason = reasons[0]
                else:
                    break
                mid = buffer[taken + 2] << 8 | buffer[taken + 3]
                taken += 2 + size
                if mid in messages:  # only the first acknowledgement is told, as paho does
                    rc = self._do_on_publish(mid, reason, self._no_properties)
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
        if not taken:
            return super()._packet_read()
        del buffer[:taken]
        with self._msgtime_mutex:
            self._last_bytes_received = time.monotonic()
        return rc

    def _do_on_publish(
        self, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> MQTTErrorCode:
        message = self._out_messages.get(mid)
        if type(message) is not _Message or self._callback_api_version != _VERSION2:
            return super()._do_on_publish(mid, reason_code, properties)
        on_publish = cast("mqtt.CallbackOnPublish_v2 | None", self.on_publish)  # VERSION2
        if on_publish is not None:
            with self._in_callback_mutex:
                try:
                    on_publish(self, self._userdata, mid, reason_code, properties)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_publish: %s", err)
                    if not self.suppress_exceptions:
                        raise
        del self._out_messages[mid]
        message.info._set_as_published()
        self._inflight_messages -= 1
        # Messages held back by the in-flight limit are sent now; paho looks at every message
        # it keeps to find them, so only when there are some.
        if self._max_inflight_messages > 0 and len(self._out_messages) > self._inflight_messages:
            return self._update_inflight()
        return MQTTErrorCode.MQTT_ERR_SUCCESS


_MAX_REMAINING = 268_435_455  # the largest remaining length MQTT can encode
_FIRST_BYTE = {False: bytes((mqtt.PUBLISH | 0x02,)), True: bytes((mqtt.PUBLISH | 0x03,))}  # QoS 1


def _remaining_length(size: int) -> bytes:
    """MQTT's variable byte integer (2.2.3): seven bits a byte, low first."""
    if size < 128:
        return bytes((size,))
    out = bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out)


class _Message(mqtt.MQTTMessage):
    """A QoS 1 PUBLISH as paho keeps it until acknowledged, with the lean `_Info`."""

    __slots__ = ()

    def __init__(self, mid: int, head: bytes, payload: bytes, retain: bool) -> None:
        self.timestamp = time.monotonic()
        self.state = mqtt.mqtt_ms_wait_for_puback
        self.dup = False
        self.mid = mid
        self._topic = head[2:]
        self.payload = payload
        self.qos = 1
        self.retain = retain
        self.info = _Info(mid)
        self.properties = None


def _plain(packet: Any) -> bool:
    """Whether paho does nothing for a queued packet once written but drop it from its queue:
    anything but a DISCONNECT or a PUBLISH at QoS 0."""
    kind = packet["command"] & 0xF0
    return bool(kind != mqtt.DISCONNECT and (kind != mqtt.PUBLISH or packet["qos"] > 0))


def new_client(**kwargs: Any) -> mqtt.Client:
    """A client with the lean socket path where this paho allows it, else paho's own."""
    return Client(**kwargs) if LEAN else mqtt.Client(**kwargs)

"""paho's MQTT client with a lean socket path for the messages and acknowledgements a sink
lives on.

At 100 messages a second paho's socket handling is a good part of the agent's MQTT cost
(docs/decisions/0007-mqtt-on-the-event-loop.md): it writes each packet with a send of its
own, asks the socket for each packet's first byte, its length and its body with three system
calls, and decodes each PUBACK into a `ReasonCode` and a `Properties` object (two of each, in
paho 2.2). `Client` changes three things and nothing else:

- `_packet_write` writes the packets paho has queued with one send when none of them wants
  paho's attention once written (a DISCONNECT, or a PUBLISH at QoS 0, whose `on_publish` is
  told on the write): a send's fifty messages are one system call and, on a connection without
  Nagle's algorithm, as few segments as fit instead of fifty. What the socket did not take
  stays queued in paho's own records, as paho leaves a packet it wrote in part.

- `_sock_recv` reads what the socket has (up to `READ_SIZE` bytes) once and serves paho's
  small reads from that buffer: one system call for a burst of acknowledgements. Bytes left in
  the buffer raise no readiness event, so whoever drives the client calls `loop_read` again
  while `buffered` says there are some (`MqttConnection._readable`).
- a PUBACK without properties (the usual one: a message id and at most a reason code) is
  decoded in place, with one shared `ReasonCode` per code; anything else (PUBCOMP, a PUBACK with
  a reason string, a code paho does not know) goes through paho's own decoder. What reaches
  `on_publish` is the same either way (tests/connectors/mqtt/test_paho_client.py).

All three are overrides of paho's private methods. `LEAN` is False, and the stock client is used,
unless this paho has them with the shape they are written against: a paho upgrade can make
the agent slower, never wrong.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_SIZE = 65536  # one read takes every acknowledgement a send's burst brings back

_PUBACK = PacketTypes.PUBACK
# The codes a PUBACK may carry (MQTT 5.0, 3.4.2.1); another code goes to paho's decoder.
_PUBACK_CODES = (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)


def _has(name: str, parameters: tuple[str, ...]) -> bool:
    method = getattr(mqtt.Client, name, None)
    if method is None:
        return False
    return tuple(inspect.signature(method).parameters)[1:] == parameters


# The private methods overridden below, with the parameters they are written against.
LEAN = (
    _has("_packet_write", ())
    and _has("_sock_send", ("buf",))
    and _has("_sock_recv", ("bufsize",))
    and _has("_handle_pubackcomp", ("cmd",))
    and _has("_do_on_publish", ("mid", "reason_code", "properties"))
)


class Client(mqtt.Client):
    """`paho.mqtt.client.Client` with the lean socket path of this module's docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._buffer = bytearray()  # read from the socket, not yet taken by paho
        self._reasons = {code: ReasonCode(_PUBACK, identifier=code) for code in _PUBACK_CODES}
        self._no_properties = Properties(_PUBACK)  # type: ignore[no-untyped-call]

    @property
    def buffered(self) -> bool:
        """Whether bytes read from the socket wait for paho (call `loop_read` again)."""
        return bool(self._buffer)

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

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        size = len(packet)
        if cmd != "PUBACK" or not 2 <= size <= 3:
            return super()._handle_pubackcomp(cmd)  # properties, PUBCOMP, or malformed
        reason = self._reasons.get(packet[2] if size == 3 else 0)
        if reason is None:
            return super()._handle_pubackcomp(cmd)
        mid = packet[0] << 8 | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                # Only the first acknowledgement of a message is told, as paho does.
                return self._do_on_publish(mid, reason, self._no_properties)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def _plain(packet: Any) -> bool:
    """Whether paho does nothing for a queued packet once written but drop it from its queue:
    anything but a DISCONNECT or a PUBLISH at QoS 0."""
    kind = packet["command"] & 0xF0
    return bool(kind != mqtt.DISCONNECT and (kind != mqtt.PUBLISH or packet["qos"] > 0))


def new_client(**kwargs: Any) -> mqtt.Client:
    """A client with the lean socket path where this paho allows it, else paho's own."""
    return Client(**kwargs) if LEAN else mqtt.Client(**kwargs)

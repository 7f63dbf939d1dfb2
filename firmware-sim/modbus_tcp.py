"""An asyncio Modbus TCP server for the simulated plant, fast and able to misbehave on purpose.

Built on `asyncio.Protocol` rather than pymodbus: the hot path is one header unpack, one
`handle_pdu` and one write per batch of requests, and every fault of `faults.py` can be shown
on the wire exactly. Framing follows standards.md §5.4 (MBAP, big-endian, length = unit id +
PDU). Requests may arrive several per read (pipelining: all are answered, in order, in one
write) or split across reads (the tail waits in a buffer).

One class covers both layouts: one server per machine on its own port, or one gateway port
with many unit ids. Choices a client can observe:

- An unknown unit id is answered with exception 0x0B (gateway target device failed to
  respond), as a gateway would, so a misconfigured poller fails fast instead of timing out.
- A malformed request (protocol id not 0, length < 2 or > 254) closes that connection; it is
  counted in `stats.malformed` and the server goes on serving everyone else.
- `refuse` and a reboot's down time: a new connection is closed at once when every unit
  refuses; on a gateway, a request to a refusing unit closes that connection.
- A reboot closes every connection that has addressed the rebooting unit.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from firmware_sim.faults import FaultMode
from firmware_sim.modbus_pdu import GATEWAY_TARGET_FAILED, Unit, exception_pdu, handle_pdu

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
MAX_LENGTH = 254  # unit id (1) + PDU (<= 253)


@dataclass(slots=True)
class TcpStats:
    """What the server has seen since it started."""

    connections: int = 0  # connections accepted and served
    refused: int = 0  # connections closed at once by `refuse` or a reboot
    open: int = 0  # connections open now
    requests: int = 0  # well-formed requests answered (or acted on by a fault)
    exceptions: int = 0  # exception responses sent
    malformed: int = 0  # connections closed for a malformed request
    faults: int = 0  # requests a fault acted on


def garble(adu: bytes, kind: int) -> bytes:
    """A response a client must reject: kind 0 bad protocol id, 1 bad length, 2 bad function."""
    out = bytearray(adu)
    if kind == 0:
        out[2:4] = b"\xde\xad"
    elif kind == 1:
        out[4:6] = (len(adu) - 6 + 9).to_bytes(2, "big")
    else:
        out[7] = 0x7F  # no such function code, and not an exception response either
    return bytes(out)


class _Connection(asyncio.Protocol):
    """One client connection: buffers bytes, answers whole requests, applies faults."""

    def __init__(self, server: ModbusTcpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._held: asyncio.TimerHandle | None = None  # a slow answer is pending
        self._mute = False  # truncated or dropped: ignore everything from now on
        self.units_seen: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        if server.refusing():
            server.stats.refused += 1
            self._mute = True
            self._transport.abort()
            return
        server.stats.connections += 1
        server.stats.open += 1
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self._server.connections:
            self._server.connections.discard(self)
            self._server.stats.open -= 1
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._mute = True

    def data_received(self, data: bytes) -> None:
        if self._mute:
            return
        self._buf += data
        if self._held is None:
            self._process()

    def close(self) -> None:
        self._mute = True
        if self._transport is not None:
            self._transport.abort()

    def _process(self) -> None:
        transport = self._transport
        assert transport is not None
        server = self._server
        stats = server.stats
        units = server.units
        buf = self._buf
        size = len(buf)
        pos = 0
        out: list[bytes] = []
        while size - pos >= 7:
            tid, protocol, length, unit_id = _MBAP.unpack_from(buf, pos)
            if protocol != 0 or length < 2 or length > MAX_LENGTH:
                stats.malformed += 1
                self._finish(out, None)
                return
            end = pos + 6 + length
            if end > size:
                break
            pdu = bytes(buf[pos + 7 : end])
            pos = end
            stats.requests += 1
            self.units_seen.add(unit_id)
            unit = units.get(unit_id)
            if unit is None:
                answer = exception_pdu(pdu[0], GATEWAY_TARGET_FAILED)
            elif unit.faults.mode is FaultMode.NONE:
                answer = handle_pdu(unit.image, pdu)
            else:
                action = unit.faults.action()
                if action is not FaultMode.NONE:
                    stats.faults += 1
                    del buf[:pos]
                    self._fault(action, unit, out, tid, unit_id, pdu)
                    return
                answer = handle_pdu(unit.image, pdu)
            if answer[0] & 0x80:
                stats.exceptions += 1
            out.append(_MBAP.pack(tid, 0, len(answer) + 1, unit_id) + answer)
        del buf[:pos]
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _finish(self, out: list[bytes], last: bytes | None) -> None:
        """Send what is answered so far (and `last`, if any), then close the connection."""
        assert self._transport is not None
        if last is not None:
            out.append(last)
        if out:
            self._transport.write(b"".join(out))
        self._mute = True
        self._transport.close()  # close, not abort: the answers written above still go out

    def _fault(
        self, action: FaultMode, unit: Unit, out: list[bytes], tid: int, unit_id: int, pdu: bytes
    ) -> None:
        assert self._transport is not None
        faults = unit.faults
        if action in (FaultMode.DROP, FaultMode.REFUSE):
            self._finish(out, None)
            return
        if action is FaultMode.EXCEPTION:
            answer = exception_pdu(pdu[0], faults.code)
        else:
            answer = handle_pdu(unit.image, pdu)
        adu = _MBAP.pack(tid, 0, len(answer) + 1, unit_id) + answer
        if action is FaultMode.MALFORMED:
            adu = garble(adu, faults.choice(3))
        if action is FaultMode.TRUNCATED:
            out.append(adu[: max(1, len(adu) // 2)])
            self._transport.write(b"".join(out))
            self._mute = True  # the rest never comes; the connection stays open and silent
            return
        if action is FaultMode.SLOW:
            if out:
                self._transport.write(b"".join(out))
            # Later requests wait behind this one: answers on a connection stay in order.
            loop = asyncio.get_running_loop()
            self._held = loop.call_later(faults.delay, self._release, adu)
            return
        out.append(adu)
        self._transport.write(b"".join(out))
        if self._buf:
            self._process()

    def _release(self, adu: bytes) -> None:
        self._held = None
        if self._mute or self._transport is None or self._transport.is_closing():
            return
        self._transport.write(adu)
        if self._buf:
            self._process()


class ModbusTcpServer:
    """Serve `units` (unit id → `Unit`) over Modbus TCP on one listening port."""

    def __init__(self, units: Mapping[int, Unit]) -> None:
        for unit_id in units:
            if not 0 <= unit_id <= 255:
                raise ValueError(f"unit id must be 0..255, got {unit_id}")
        self.units: dict[int, Unit] = dict(units)
        self.stats = TcpStats()
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._listeners: list[tuple[Unit, Callable[[], None]]] = []
        self.port = 0

    def refusing(self) -> bool:
        """True when no unit on this port takes connections (refuse, or rebooting)."""
        return bool(self.units) and all(u.faults.refusing() for u in self.units.values())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `host:port` (0 picks a free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        for unit_id, unit in self.units.items():
            listener = self._reboot_listener(unit_id)
            unit.faults.add_reboot_listener(listener)
            self._listeners.append((unit, listener))
        return self.port

    def _reboot_listener(self, unit_id: int) -> Callable[[], None]:
        def on_reboot() -> None:
            for conn in list(self.connections):
                if unit_id in conn.units_seen or len(self.units) == 1:
                    conn.close()

        return on_reboot

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        for unit, listener in self._listeners:
            unit.faults.remove_reboot_listener(listener)
        self._listeners.clear()
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self.connections):
            conn.close()
        await server.wait_closed()

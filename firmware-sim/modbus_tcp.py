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

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

from firmware_sim.faults import FaultMode
from firmware_sim.modbus_pdu import GATEWAY_TARGET_FAILED, Unit, exception_pdu, handle_pdu
from firmware_sim.serving import FrameConnection, FrameServer, ServingStats

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id
MAX_LENGTH = 254  # unit id (1) + PDU (<= 253)


@dataclass(slots=True)
class TcpStats(ServingStats):
    """What the server has seen since it started."""

    exceptions: int = 0  # exception responses sent


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


class _Connection(FrameConnection["ModbusTcpServer"]):
    """One client connection: answers whole MBAP requests, applies faults."""

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
                self._finish(out)
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
                    del buf[:pos]
                    if self._fault(
                        action,
                        unit.faults,
                        out,
                        partial(self._fault_answer, action, unit, tid, unit_id, pdu),
                    ):
                        transport.write(b"".join(out))
                        if self._buf:
                            self._process()
                    return
                answer = handle_pdu(unit.image, pdu)
            if answer[0] & 0x80:
                stats.exceptions += 1
            out.append(_MBAP.pack(tid, 0, len(answer) + 1, unit_id) + answer)
        del buf[:pos]
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _fault_answer(
        self, action: FaultMode, unit: Unit, tid: int, unit_id: int, pdu: bytes
    ) -> bytes:
        """The answer to one request as fault `action` makes it."""
        faults = unit.faults
        if action is FaultMode.EXCEPTION:
            answer = exception_pdu(pdu[0], faults.code)
        else:
            answer = handle_pdu(unit.image, pdu)
        adu = _MBAP.pack(tid, 0, len(answer) + 1, unit_id) + answer
        if action is FaultMode.MALFORMED:
            adu = garble(adu, faults.choice(3))
        return adu


class ModbusTcpServer(FrameServer):
    """Serve `units` (unit id → `Unit`) over Modbus TCP on one listening port."""

    stats: TcpStats

    def __init__(self, units: Mapping[int, Unit]) -> None:
        for unit_id in units:
            if not 0 <= unit_id <= 255:
                raise ValueError(f"unit id must be 0..255, got {unit_id}")
        super().__init__(units, TcpStats())

    def _connection(self) -> _Connection:
        return _Connection(self)

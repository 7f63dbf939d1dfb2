"""A Modbus RTU server on a pseudo-terminal pair: several units on one simulated serial bus.

The server keeps the master side of `os.openpty()` and reads it on the asyncio loop
(`loop.add_reader`); a client opens the slave side's path (`start()` returns it), e.g. with
pyserial or pymodbus's serial client. Framing follows standards.md §5.5:

- A frame is address + PDU + CRC-16/MODBUS (low byte first).
- A frame ends where its function code says (RTU has no length field: FC 01..06 are fixed,
  FC 15/16/23 carry a byte count). That is robust on a pty, where bytes arrive in bursts with
  no real baud-rate pacing. For function codes this server does not know, the t3.5 silent
  interval ends the frame; silence also discards any partial frame, which is how a slave
  resynchronises after line noise.
- t3.5 = 3.5 character times of 11 bits for baud <= 19200, fixed 1.75 ms above.
- A frame with a bad CRC is ignored silently, as real slaves do (counted in `stats.bad_crc`),
  and the rest of the burst is dropped with it: the next frame starts after silence.
- Answers leave after at least t3.5 of silence following the request.
- Address 0 is a broadcast: writes (FC 05, 06, 15, 16) go to every unit that is up; nothing
  is answered. A frame for an address with no unit gets no answer either.

Faults act per unit: refuse, drop and a reboot's down time make the unit silent; slow delays
the answer; exception answers with the fault's code; malformed answers with a bad function
code or a bad CRC; truncated sends half of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Mapping
from dataclasses import dataclass

from firmware_sim.faults import FaultMode
from firmware_sim.modbus_pdu import WRITE_FUNCTIONS, Unit, exception_pdu, handle_pdu, request_length

BROADCAST = 0


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(frame: bytes) -> int:
    """CRC-16/MODBUS of `frame`: init 0xFFFF, reflected polynomial 0xA001.

    On the wire it follows the frame low byte first: `crc.to_bytes(2, "little")`.
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in frame:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """`frame` followed by its CRC, low byte first."""
    return frame + crc16(frame).to_bytes(2, "little")


def silent_interval(baudrate: int) -> float:
    """t3.5 in seconds: 3.5 characters of 11 bits up to 19200 baud, 1.75 ms above."""
    if baudrate <= 0:
        raise ValueError(f"baud rate must be positive, got {baudrate}")
    return 3.5 * 11 / baudrate if baudrate <= 19200 else 0.00175


@dataclass(slots=True)
class RtuStats:
    """What the bus has carried since the server started."""

    frames: int = 0  # frames with a good CRC, for any address
    requests: int = 0  # frames addressed to one of our units
    broadcasts: int = 0  # broadcast writes applied
    bad_crc: int = 0  # frames ignored for a bad CRC
    discarded: int = 0  # partial frames dropped at a silent interval
    unanswered: int = 0  # frames for addresses with no unit, or silenced by a fault
    exceptions: int = 0  # exception responses sent
    faults: int = 0  # requests a fault acted on


class ModbusRtuServer:
    """Serve `units` (unit id 1..247 → `Unit`) on one pty, at a nominal `baudrate`."""

    def __init__(self, units: Mapping[int, Unit], baudrate: int = 19200) -> None:
        for unit_id in units:
            if not 1 <= unit_id <= 247:
                raise ValueError(f"RTU unit id must be 1..247, got {unit_id}")
        self.units: dict[int, Unit] = dict(units)
        self.baudrate = baudrate
        self.t35 = silent_interval(baudrate)
        self.stats = RtuStats()
        self.path = ""
        self._master = -1
        self._slave = -1
        self._buf = bytearray()
        self._last_rx = 0.0
        self._silence: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> str:
        """Open the pty pair, start serving, and return the path a client opens."""
        if self._loop is not None:
            raise RuntimeError("server already started")
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no line editing, no CR/LF translation; every byte is data.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        # The server keeps the slave side open too, so the pty survives a client's close and
        # reopen (reads from the master would fail with EIO once no slave fd is left).
        self.path = os.ttyname(self._slave)
        self._loop.add_reader(self._master, self._on_readable)
        return self.path

    async def stop(self) -> None:
        """Stop serving and close the pty pair."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        loop.remove_reader(self._master)
        for handle in (self._silence, *self._pending):
            if handle is not None:
                handle.cancel()
        self._silence = None
        self._pending.clear()
        os.close(self._master)
        os.close(self._slave)
        self._master = self._slave = -1

    def _on_readable(self) -> None:
        assert self._loop is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no client has the slave open: nothing to read
        if not data:
            return
        now = self._loop.time()
        if self._buf and now - self._last_rx >= self.t35:
            self._end_of_frame()  # the silence ended the previous frame before this burst
        self._last_rx = now
        self._buf += data
        self._parse()
        if self._silence is not None:
            self._silence.cancel()
        self._silence = self._loop.call_later(self.t35, self._end_of_frame) if self._buf else None

    def _parse(self) -> None:
        buf = self._buf
        while len(buf) >= 2:
            pdu_length = request_length(bytes(buf[1:11]))
            if pdu_length is None or pdu_length < 0:
                return  # need more bytes, or an unknown function code: wait for silence
            total = 1 + pdu_length + 2
            if len(buf) < total:
                return
            frame = bytes(buf[:total])
            del buf[:total]
            if not self._frame(frame):
                buf.clear()  # resynchronise at the next silent interval

    def _end_of_frame(self) -> None:
        """A t3.5 silence: whatever is buffered is one frame (if its CRC says so) or noise."""
        self._silence = None
        if not self._buf:
            return
        frame = bytes(self._buf)
        self._buf.clear()
        if len(frame) < 4 or not self._frame(frame):
            self.stats.discarded += 1

    def _frame(self, frame: bytes) -> bool:
        """Act on one complete frame; False if its CRC is bad."""
        if crc16(frame[:-2]) != frame[-2] | (frame[-1] << 8):
            self.stats.bad_crc += 1
            return False
        stats = self.stats
        stats.frames += 1
        unit_id, pdu = frame[0], frame[1:-2]
        if unit_id == BROADCAST:
            if pdu and pdu[0] in WRITE_FUNCTIONS:
                stats.broadcasts += 1
                for each in self.units.values():
                    if not each.faults.refusing():
                        handle_pdu(each.image, pdu)
            return True
        unit = self.units.get(unit_id)
        if unit is None:
            stats.unanswered += 1
            return True
        stats.requests += 1
        action = unit.faults.action()
        if action is FaultMode.NONE:
            self._answer(with_crc(bytes((unit_id,)) + handle_pdu(unit.image, pdu)), 0.0)
            return True
        stats.faults += 1
        faults = unit.faults
        if action in (FaultMode.REFUSE, FaultMode.DROP):
            stats.unanswered += 1
            return True
        answer = exception_pdu(pdu[0], faults.code) if action is FaultMode.EXCEPTION else None
        adu = with_crc(bytes((unit_id,)) + (answer or handle_pdu(unit.image, pdu)))
        if action is FaultMode.MALFORMED:
            garbled = bytearray(adu)
            if faults.choice(2) == 0:
                garbled[1] = 0x7F  # no such function code; the CRC is made to match
                adu = with_crc(bytes(garbled[:-2]))
            else:
                garbled[-1] ^= 0xFF  # a CRC the client must reject
                adu = bytes(garbled)
        elif action is FaultMode.TRUNCATED:
            adu = adu[: max(1, len(adu) // 2)]
        self._answer(adu, faults.delay if action is FaultMode.SLOW else 0.0)
        return True

    def _answer(self, adu: bytes, extra_delay: float) -> None:
        assert self._loop is not None
        if adu[1] & 0x80:
            self.stats.exceptions += 1
        # Wait for t3.5 of silence after the request, as a slave must before it talks.
        wait = max(0.0, self._last_rx + self.t35 - self._loop.time()) + extra_delay
        handle: asyncio.TimerHandle | None = None

        def send() -> None:
            if handle is not None:
                self._pending.discard(handle)
            if self._master < 0:
                return
            # No reader, or its buffer is full: a real bus loses the answer too.
            with contextlib.suppress(OSError):
                os.write(self._master, adu)

        handle = self._loop.call_later(wait, send)
        self._pending.add(handle)

"""Modbus RTU on a serial port: one request at a time on the bus.

Frames (address + PDU + CRC-16/MODBUS, standards.md §5.5) are built and checked by the pure
`framing.py` and `pdu.py`. RTU has no length field, so the length of the answer is computed
from the request: a read of N registers answers 5 + 2N bytes, of N bits 5 + ceil(N / 8), and
an exception 5. The
link reads the port without blocking (pyserial with `timeout=0`, the port's file descriptor
watched by the event loop), so a silent slave costs its timeout and never a blocked thread.

Bus discipline:
- Before each request the bus must have been silent for t3.5 (3.5 character times of 11 bits
  up to 19200 baud, 1.75 ms above) and `frame_pause` must have passed since the last answer:
  many field devices need far more than t3.5 to turn their RS-485 driver around.
- Bytes that arrive while no request waits (a late answer, line noise) are flushed before the
  next request, and counted, so a stale frame is never taken for a fresh one.
- A bad CRC or a malformed answer raises `ProtocolError`; the port stays open (noise on a
  line is not a lost link). A function code that fits neither the request nor its exception
  gives no length, so the link waits for t3.5 of silence before reporting it.
- No answer by the deadline, or only part of one, raises `RequestTimeout`.
"""

from __future__ import annotations

import asyncio
import os

import serial

from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from connectors.modbus.framing import crc_ok, rtu_answer_size, rtu_read, rtu_stated_size
from connectors.modbus.pdu import ExceptionResponse, MalformedPdu, read_answer


def silent_interval(baudrate: int) -> float:
    """t3.5 in seconds: 3.5 characters of 11 bits up to 19200 baud, fixed 1.75 ms above."""
    if baudrate <= 0:
        raise ValueError(f"baud rate must be positive, not {baudrate}")
    return 3.5 * 11 / baudrate if baudrate <= 19200 else 0.00175


def parse_response(frame: bytes, unit_id: int, function: int, count: int) -> bytes:
    """The data bytes of a complete answer frame; ProtocolError or DeviceError otherwise."""
    if not crc_ok(frame):
        raise ProtocolError(f"unit {unit_id}: bad CRC in a {len(frame)}-byte answer")
    if frame[0] != unit_id:
        raise ProtocolError(f"unit {unit_id}: answer from address {frame[0]}")
    try:
        answer = read_answer(frame[1:-2], function, count)
    except MalformedPdu as exc:
        raise ProtocolError(f"unit {unit_id}: {exc}") from None
    if isinstance(answer, ExceptionResponse):
        raise DeviceError(f"unit {unit_id}: {answer.message}", answer.code)
    return answer


class RtuLink:
    """One serial port in master mode: `open()`, then `read()` from any task, one at a time."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 19200,
        parity: str = "E",
        stopbits: int = 1,
        bytesize: int = 8,
        frame_pause: float = 0.0,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.bytesize = bytesize
        self.frame_pause = frame_pause
        self.t35 = silent_interval(baudrate)
        self.bytes_in = 0
        self.bytes_out = 0
        self.stray_bytes = 0  # flushed before a request: late answers, noise
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._lock = asyncio.Lock()
        self._buf = bytearray()
        self._last_rx = 0.0  # loop time of the last byte received
        self._last_done = 0.0  # loop time the last exchange ended
        self._waiter: asyncio.Future[None] | None = None
        self._want: tuple[int, int, int] | None = None  # (unit_id, function, count) in flight
        self._silence: asyncio.TimerHandle | None = None
        self._closed_why = "not open"
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    async def open(self) -> None:
        """Open the port; `ConnectError` if it cannot be opened or configured."""
        if self._serial is not None:
            return
        try:
            port = serial.Serial(
                self.port,
                baudrate=self.baudrate,
                parity=self.parity,
                stopbits=self.stopbits,
                bytesize=self.bytesize,
                timeout=0,
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            raise ConnectError(f"{self.port}: {exc}") from None
        self._serial = port
        self._fd = port.fileno()
        self._buf.clear()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)
        self._closed_why = "port closed"

    def close(self) -> None:
        self._shut("port closed by the client")

    async def read(
        self, unit_id: int, function: int, start: int, count: int, time_limit: float
    ) -> bytes:
        """The data bytes of one read: registers big-endian, or packed bits."""
        frame = rtu_read(unit_id, function, start, count)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(time_limit):
                async with self._lock:
                    await self._quiet(loop)
                    try:
                        return await self._exchange(loop, frame, unit_id, function, count)
                    finally:
                        self._want = None
                        self._waiter = None
                        self._last_done = loop.time()
        except TimeoutError:
            raise RequestTimeout(
                f"{self.port} unit {unit_id}: no answer to function {function:02d} at {start} "
                f"within {time_limit:g}s"
            ) from None

    async def _quiet(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for t3.5 of silence and the frame pause, then drop whatever is buffered."""
        while True:
            ready_at = max(self._last_rx + self.t35, self._last_done + self.frame_pause)
            wait = ready_at - loop.time()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self.stray_bytes += len(self._buf)
        self._buf.clear()

    async def _exchange(
        self,
        loop: asyncio.AbstractEventLoop,
        frame: bytes,
        unit_id: int,
        function: int,
        count: int,
    ) -> bytes:
        port = self._serial
        if port is None:
            raise ConnectError(f"{self.port}: {self._closed_why}")
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        self._want = (unit_id, function, count)
        try:
            port.write(frame)
        except (serial.SerialException, OSError) as exc:
            self._shut(f"write failed: {exc}")
            raise ConnectError(f"{self.port}: write failed: {exc}") from None
        self.bytes_out += len(frame)
        await waiter
        answer = bytes(self._buf)
        self._buf.clear()
        length = rtu_answer_size(function, count, answer[1]) if len(answer) >= 2 else None
        if length is None:
            raise ProtocolError(
                f"{self.port} unit {unit_id}: unexpected {len(answer)}-byte answer "
                f"starting {answer[:4].hex(' ')}"
            )
        return parse_response(answer[:length], unit_id, function, count)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._shut(f"read failed: {exc}")
            return
        if not data:
            self._shut("the port reports data but returns none (device gone?)")
            return
        loop = self._loop
        assert loop is not None
        self._last_rx = loop.time()
        self.bytes_in += len(data)
        self._buf += data
        waiter, want = self._waiter, self._want
        if waiter is None or want is None or waiter.done():
            return
        if self._silence is not None:  # a byte came: the silence is not over
            self._silence.cancel()
            self._silence = None
        self._drop_foreign_frames(want[0])
        if len(self._buf) < 2:
            return
        if self._buf[0] == want[0]:
            length = rtu_answer_size(want[1], want[2], self._buf[1])
            if length is not None:
                if len(self._buf) >= length:
                    waiter.set_result(None)
                return
        # Another unit's late answer, noise, or a function code that gives no length: the
        # frame ends at the next silent interval.
        self._silence = loop.call_later(self.t35, self._end_of_frame)

    def _drop_foreign_frames(self, unit_id: int) -> None:
        """Drop whole read answers from other units at the head of the buffer.

        A unit that answers after its deadline talks while the next unit is asked; its frame
        can arrive back to back with the real answer, with no silence between to split them.
        A read answer says its own length (byte count), so it is cut off when its CRC holds.
        """
        buf = self._buf
        while len(buf) >= 5 and buf[0] != unit_id:
            length = rtu_stated_size(buf)
            if length is None or len(buf) < length or not crc_ok(buf[:length]):
                return
            self.stray_bytes += length
            del buf[:length]

    def _end_of_frame(self) -> None:
        self._silence = None
        waiter, want = self._waiter, self._want
        if waiter is None or want is None or waiter.done():
            return
        if self._buf and self._buf[0] != want[0]:
            # Not addressed from our unit (a late answer on a shared bus): drop it and keep
            # waiting for ours within the deadline.
            self.stray_bytes += len(self._buf)
            self._buf.clear()
            return
        waiter.set_result(None)

    def _shut(self, why: str) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        self._closed_why = why
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._fd = -1
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        port.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectError(f"{self.port}: {why}"))

"""A lean asyncio Modbus TCP client for the poll loop: reads only, pipelined, hard deadlines.

Built on `asyncio.Protocol`, so it runs on uvloop as well as on plain asyncio (pymodbus's
client asserts asyncio's own transport class). Frames and PDUs are built and checked by the pure
`framing.py` and `pdu.py` (standards.md §5.3-5.4); this module owns the connection.

- Up to `max_in_flight` requests are outstanding on the connection (pipelining); more wait
  their turn in call order. Responses are matched to requests by transaction id.
- Every read has a hard timeout that covers waiting for a slot and the round trip
  (`RequestTimeout`). A late answer to a timed-out request is recognised by its transaction id
  and dropped; if the timeout leaves half a frame in the buffer the stream can no longer be
  framed, so the connection is closed.
- `send` + `expire` is the poll loop's cheaper way to read: a group of requests in one write,
  one timer for all of them (`expire_later`), a future per request; `read` is one request
  with its own timeout context.
- An exception response raises `DeviceError` with the code and its name (§5.3).
- A malformed answer (protocol id not 0, a length or byte count that does not fit, an
  unexpected function code, unit id or transaction id) raises `ProtocolError` for the request
  it answers and closes the connection: once framing is in doubt nothing after it can be
  trusted. The other outstanding requests fail with `ConnectError`, as on a lost connection.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from connectors.modbus.framing import (
    MBAP,
    MBAP_PREFIX,
    MBAP_SIZE,
    check_mbap_read,
    mbap_length_fits,
    mbap_read,
)
from connectors.modbus.pdu import ExceptionResponse, MalformedPdu, data_bytes, read_answer

# Timed-out transaction ids remembered so that their late answers are dropped, not taken as
# protocol errors (a slow device answers eventually, and in order).
_ABANDONED_KEPT = 64


# Where the data of a data answer starts: after the MBAP header, function code and byte count.
_DATA_AT = MBAP_SIZE + 2

# Frames of `send` kept by request, so a poll's requests are checked and packed once.
_FRAMES_KEPT = 4096


@dataclass(frozen=True, slots=True)
class _Request:
    """A read as the connection sends it, checked and framed once (see `_frames`)."""

    unit_id: int
    function: int
    start: int
    count: int
    tail: bytes  # its frame after the transaction id
    length: int  # the MBAP length of its data answer
    # Its data answer after the transaction id, up to the data: protocol id 0, `length`, unit
    # id, function code and byte count; the answer ends `answer_size` bytes after its start.
    answer: bytes
    answer_size: int


class _Pending(NamedTuple):
    """A request written and not yet answered (a tuple: one is made per request)."""

    request: _Request
    future: asyncio.Future[bytes]


def _request(unit_id: int, function: int, start: int, count: int) -> _Request:
    """A read checked and framed; ValueError if it is not one."""
    tail = mbap_read(0, unit_id, function, start, count)[2:]
    length = 3 + data_bytes(function, count)  # unit id, function, byte count, data
    answer = MBAP.pack(0, 0, length, unit_id)[2:] + bytes((function, length - 3))
    return _Request(unit_id, function, start, count, tail, length, answer, MBAP_PREFIX + length)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: ModbusTcpClient) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._client._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._on_lost(exc)


class ModbusTcpClient:
    """One Modbus TCP connection; `connect()`, then `read()` from any number of tasks."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_in_flight: int = 1,
        connect_timeout: float = 3.0,
    ) -> None:
        if not 1 <= max_in_flight <= 64:
            raise ValueError(f"max_in_flight must be in 1..64, not {max_in_flight}")
        self.host = host
        self.port = port
        self.max_in_flight = max_in_flight
        self.connect_timeout = connect_timeout
        self.bytes_in = 0
        self.bytes_out = 0
        self._transport: asyncio.Transport | None = None
        # The loop of the connection, kept: `asyncio.get_running_loop()` costs a getpid()
        # system call per call on Python 3.11, and `send` runs per wave of every poll.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, _Pending] = {}
        self._abandoned: OrderedDict[int, _Pending] = OrderedDict()
        self._buf = bytearray()
        self._tid = 0
        # Reads by (unit_id, function, start, count), framed once: a poll sends the same ones.
        self._frames: dict[tuple[int, int, int, int], _Request] = {}
        self._closed_why = "not connected"

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def closed_reason(self) -> str:
        """Why the connection is not open (meaningful while `connected` is false)."""
        return self._closed_why

    async def connect(self) -> None:
        """Open the connection; `ConnectError` if refused, unreachable or too slow."""
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
        except TimeoutError:
            raise ConnectError(f"{where}: no connection within {self.connect_timeout:g}s") from None
        except OSError as exc:
            # asyncio words a refusal "Connect call failed (...)"; the errno's text is clearer.
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConnectError(f"{where}: {why.lower()}") from None
        self._transport = transport
        self._loop = loop
        self._buf.clear()
        self._abandoned.clear()
        self._closed_why = "connection closed"

    def close(self) -> None:
        """Close the connection; outstanding reads fail with `ConnectError`."""
        self._shut("connection closed by the client")

    async def read(
        self, unit_id: int, function: int, start: int, count: int, time_limit: float
    ) -> bytes:
        """The data bytes of one read (FC 01-04): registers big-endian, or packed bits."""
        check_mbap_read(unit_id, function, start, count)
        try:
            async with asyncio.timeout(time_limit):
                async with self._slots:
                    return await self._exchange(unit_id, function, start, count)
        except TimeoutError:
            raise RequestTimeout(
                f"{self.host}:{self.port} unit {unit_id}: no answer to function {function:02d} "
                f"at {start} within {time_limit:g}s"
            ) from None

    def send(self, requests: Sequence[tuple[int, int, int, int]]) -> list[asyncio.Future[bytes]]:
        """Write reads `(unit_id, function, start, count)` at once; a future per read.

        The poll loop's fast path: one transport write and no task or timeout per read. It does
        not wait for a slot: at most `max_in_flight` reads may be outstanding, so use it on a
        connection that nothing else reads from at the same time (`read` waits for a slot, this
        refuses). The caller bounds the wait with `expire`.
        """
        transport, loop = self._transport, self._loop
        if transport is None or loop is None:
            raise ConnectError(f"{self.host}:{self.port}: {self._closed_why}")
        if len(self._pending) + len(requests) > self.max_in_flight:
            raise ValueError(
                f"{len(requests)} reads with {len(self._pending)} outstanding exceed "
                f"max_in_flight {self.max_in_flight}"
            )
        create_future = loop.create_future
        futures: list[asyncio.Future[bytes]] = []
        frames = bytearray()
        pending = self._pending
        known = self._frames
        for key in requests:
            request = known.get(key) or self._frame(key)  # ValueError: nothing kept
            tid = self._next_tid()
            future: asyncio.Future[bytes] = create_future()
            pending[tid] = _Pending(request, future)
            frames += tid.to_bytes(2, "big") + request.tail
            futures.append(future)
        transport.write(frames)
        self.bytes_out += len(frames)
        return futures

    def _frame(self, key: tuple[int, int, int, int]) -> _Request:
        """A read checked and framed, kept for the next polls; ValueError if bad."""
        request = _request(*key)
        if len(self._frames) >= _FRAMES_KEPT:  # not a poll loop's plan: keep none for long
            self._frames.clear()
        self._frames[key] = request
        return request

    def expire_later(
        self, futures: Sequence[asyncio.Future[bytes]], time_limit: float
    ) -> asyncio.TimerHandle:
        """`expire(futures, time_limit)` in `time_limit` seconds, on the connection's loop
        (the caller cancels the timer once every future is done)."""
        if self._loop is None:
            raise ConnectError(f"{self.host}:{self.port}: {self._closed_why}")
        return self._loop.call_later(time_limit, self.expire, futures, time_limit)

    def expire(self, futures: Sequence[asyncio.Future[bytes]], time_limit: float) -> None:
        """Fail those of `futures` (from `send`) still unanswered with `RequestTimeout`.

        Their late answers will be dropped; if one left half a frame the connection closes.
        """
        self._give_up(futures, time_limit)

    def abandon(self, futures: Sequence[asyncio.Future[bytes]]) -> None:
        """Cancel those of `futures` still unanswered (the caller is gone); as `expire`."""
        self._give_up(futures, None)

    def _give_up(self, futures: Sequence[asyncio.Future[bytes]], time_limit: float | None) -> None:
        waiting = {id(f) for f in futures if not f.done()}
        if not waiting:
            return
        for tid, pending in list(self._pending.items()):
            if id(pending.future) not in waiting:
                continue
            del self._pending[tid]
            self._abandon(tid, pending)
            if time_limit is None:
                pending.future.cancel()
            else:
                request = pending.request
                pending.future.set_exception(
                    RequestTimeout(
                        f"{self.host}:{self.port} unit {request.unit_id}: no answer to function "
                        f"{request.function:02d} at {request.start} within {time_limit:g}s"
                    )
                )
        self._check_half_frame()

    def _abandon(self, tid: int, pending: _Pending) -> None:
        """Remember a request given up on, so that its late answer is dropped."""
        self._abandoned[tid] = pending
        while len(self._abandoned) > _ABANDONED_KEPT:
            self._abandoned.popitem(last=False)

    def _check_half_frame(self) -> None:
        # Half of an abandoned request's answer arrived: the stream cannot be framed any more.
        buf = self._buf
        if len(buf) >= 2 and int.from_bytes(buf[:2], "big") in self._abandoned:
            self._shut("connection closed: a timed-out answer left half a frame")

    async def _exchange(self, unit_id: int, function: int, start: int, count: int) -> bytes:
        transport = self._transport
        if transport is None:
            raise ConnectError(f"{self.host}:{self.port}: {self._closed_why}")
        key = (unit_id, function, start, count)
        request = self._frames.get(key) or self._frame(key)
        tid = self._next_tid()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[tid] = _Pending(request, future)
        adu = tid.to_bytes(2, "big") + request.tail
        transport.write(adu)
        self.bytes_out += len(adu)
        try:
            return await future
        except asyncio.CancelledError:
            # Timed out (or the caller was cancelled): a late answer must not look unexpected.
            abandoned = self._pending.pop(tid, None)
            if abandoned is not None:
                self._abandon(tid, abandoned)
                self._check_half_frame()
            raise

    def _next_tid(self) -> int:
        while True:
            self._tid = (self._tid + 1) & 0xFFFF
            if self._tid not in self._pending and self._tid not in self._abandoned:
                return self._tid

    def _on_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while size - pos >= MBAP_SIZE:
            tid = buf[pos] << 8 | buf[pos + 1]
            pending = self._pending.get(tid)
            if pending is not None:
                # The poll loop's case, in one test (the hot loop runs it per answer): the
                # whole data answer its request expects, the header byte for byte as `_settle`
                # would check it (protocol id, length, unit id, function code, byte count).
                request = pending.request
                end = pos + request.answer_size
                if end <= size and buf.startswith(request.answer, pos + 2):
                    del self._pending[tid]
                    if not pending.future.done():
                        pending.future.set_result(bytes(buf[pos + _DATA_AT : end]))
                    pos = end
                    continue
            tid, protocol, length, unit_id = MBAP.unpack_from(buf, pos)
            if protocol != 0:
                self._malformed(tid, f"bad MBAP header (protocol id {protocol})")
                return
            late = pending is None and tid in self._abandoned
            if late:
                pending = self._abandoned[tid]
            if pending is None:
                self._malformed(tid, f"answer with unexpected transaction id {tid}")
                return
            # The length must fit the request, checked before waiting for the body: a wrong
            # length would otherwise hold every later answer hostage until the timeout.
            request = pending.request
            if length != request.length and not mbap_length_fits(
                length, request.function, request.count
            ):
                self._malformed(tid, f"length {length} does not fit the request")
                return
            end = pos + MBAP_PREFIX + length
            if end > size:
                break
            if late:
                pos = end
                del self._abandoned[tid]
                continue  # the late answer to a request that timed out
            del self._pending[tid]
            pdu = bytes(buf[pos + MBAP_SIZE : end])
            pos = end
            problem = self._settle(pending, unit_id, pdu)
            if problem is not None:
                self._pending[tid] = pending
                self._malformed(tid, problem)
                return
        del buf[:pos]

    def _settle(self, pending: _Pending, unit_id: int, pdu: bytes) -> str | None:
        """Resolve a request from its answer; the problem if the answer is malformed."""
        request = pending.request
        if unit_id != request.unit_id:
            return f"answer from unit {unit_id} to a request for unit {request.unit_id}"
        try:
            answer = read_answer(pdu, request.function, request.count)
        except MalformedPdu as exc:
            return str(exc)
        if pending.future.done():
            return None
        if isinstance(answer, ExceptionResponse):
            message = f"{self.host}:{self.port} unit {unit_id}: {answer.message}"
            pending.future.set_exception(DeviceError(message, code=answer.code))
        else:
            pending.future.set_result(answer)
        return None

    def _malformed(self, tid: int, problem: str) -> None:
        """Fail the request `tid` answers (else the oldest) with ProtocolError, and close."""
        message = f"{self.host}:{self.port}: malformed answer: {problem}"
        victim = self._pending.pop(tid, None)
        if victim is None and self._pending:
            victim = self._pending.pop(next(iter(self._pending)))
        if victim is not None and not victim.future.done():
            victim.future.set_exception(ProtocolError(message))
        self._shut("connection closed after a malformed answer")

    def _on_lost(self, exc: Exception | None) -> None:
        why = f"connection lost ({exc})" if exc else "connection closed by the server"
        self._shut(why)

    def _shut(self, why: str) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        self._closed_why = why
        self._buf.clear()
        transport.abort()
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(ConnectError(f"{self.host}:{self.port}: {why}"))

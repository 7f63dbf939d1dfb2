"""A lean asyncio MC protocol client for the poll loop: reads only, pipelined, hard deadlines.

Built on `asyncio.Protocol` (so it runs on uvloop too); all framing is `frame.Framing`.

- `send(requests)` writes prepared requests (from `Framing.batch_read` / `random_read`) in one
  write and returns a future per request; `expire(futures, limit)` fails those still
  unanswered with `RequestTimeout`. At most `max_in_flight` are outstanding.
- Answers are matched by serial number on a 4E port, in order on a 3E port (a 3E answer says
  nothing of the request it answers). A late answer on 4E is known by its serial and dropped;
  on 3E it cannot be told from the next answer, so a timeout there closes the connection:
  a late answer must never be taken for another request's data.
- An answer with a non-zero end code raises `DeviceError` with the code and its name.
- A malformed answer (wrong subheader, route, serial or length; data that does not fit the
  request; bad hex in ASCII) raises `ProtocolError` for the request it answers and closes the
  connection; the other outstanding requests fail with `ConnectError`.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from connectors.mc.frame import FrameError, Framing, end_code_reason

_ABANDONED_KEPT = 64


@dataclass(slots=True)
class _Pending:
    data_bytes: int  # data bytes a good answer carries
    words: int | None  # single words before the double words of a random read
    sizes: tuple[int, ...]  # body lengths that may answer it
    future: asyncio.Future[bytes]
    what: str


class _Protocol(asyncio.Protocol):
    def __init__(self, client: McClient) -> None:
        self._client = client

    def data_received(self, data: bytes) -> None:
        self._client._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._on_lost(exc)


class McClient:
    """One connection to an MC port; `connect()`, then `send()` + `expire()`."""

    def __init__(
        self,
        host: str,
        port: int,
        framing: Framing,
        *,
        max_in_flight: int = 1,
        connect_timeout: float = 3.0,
    ) -> None:
        if not 1 <= max_in_flight <= 64:
            raise ValueError(f"max_in_flight must be in 1..64, not {max_in_flight}")
        self.host = host
        self.port = port
        self.framing = framing
        self.max_in_flight = max_in_flight
        self.connect_timeout = connect_timeout
        self.bytes_in = 0
        self.bytes_out = 0
        self._transport: asyncio.Transport | None = None
        self._pending: OrderedDict[int, _Pending] = OrderedDict()  # by serial, oldest first
        self._abandoned: OrderedDict[int, _Pending] = OrderedDict()
        self._buf = bytearray()
        self._serial = 0
        self._closed_why = "not connected"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def closed_reason(self) -> str:
        return self._closed_why

    async def connect(self) -> None:
        """Open the connection; `ConnectError` if refused, unreachable or too slow."""
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
        except TimeoutError:
            raise ConnectError(
                f"{self.where}: no connection within {self.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConnectError(
                f"{self.where}: {why.lower()} (is an MC port open on the PLC, TCP, this port?)"
            ) from None
        self._transport = transport
        self._buf.clear()
        self._abandoned.clear()
        self._pending.clear()
        self._closed_why = "connection closed"

    def close(self) -> None:
        self._shut("connection closed by the client")

    def send(
        self, requests: Sequence[tuple[bytes, int, str, int | None]]
    ) -> list[asyncio.Future[bytes]]:
        """Write `(request, data bytes expected, what, single words)` at once; a future per
        request. Single words: those before a random read's double words (None: all)."""
        transport = self._transport
        if transport is None:
            raise ConnectError(f"{self.where}: {self._closed_why}")
        if len(self._pending) + len(requests) > self.max_in_flight:
            raise ValueError(f"more than max_in_flight {self.max_in_flight} requests")
        loop = asyncio.get_running_loop()
        framing = self.framing
        futures: list[asyncio.Future[bytes]] = []
        out = bytearray()
        for request, data_bytes, what, words in requests:
            serial = self._next_serial()
            future: asyncio.Future[bytes] = loop.create_future()
            self._pending[serial] = _Pending(
                data_bytes, words, framing.body_sizes(data_bytes), future, what
            )
            out += framing.with_serial(request, serial)
            futures.append(future)
        transport.write(out)
        self.bytes_out += len(out)
        return futures

    def expire(self, futures: Sequence[asyncio.Future[bytes]], time_limit: float) -> None:
        """Fail those of `futures` still unanswered with `RequestTimeout`."""
        self._give_up(futures, time_limit)

    def abandon(self, futures: Sequence[asyncio.Future[bytes]]) -> None:
        """Cancel those of `futures` still unanswered (the caller is gone)."""
        self._give_up(futures, None)

    def _give_up(self, futures: Sequence[asyncio.Future[bytes]], limit: float | None) -> None:
        waiting = {id(f) for f in futures if not f.done()}
        if not waiting:
            return
        for serial, pending in list(self._pending.items()):
            if id(pending.future) not in waiting:
                continue
            del self._pending[serial]
            self._abandoned[serial] = pending
            while len(self._abandoned) > _ABANDONED_KEPT:
                self._abandoned.popitem(last=False)
            if limit is None:
                pending.future.cancel()
            else:
                pending.future.set_exception(
                    RequestTimeout(f"{self.where}: no answer to {pending.what} within {limit:g}s")
                )
        if not self.framing.pipelined:
            # A 3E answer carries no serial: a late one would pass for the next request's.
            self._shut("connection closed: a request timed out on a 3E port")
        elif self._buf:
            self._shut("connection closed: a timed-out answer left half a frame")

    def _next_serial(self) -> int:
        while True:
            self._serial = (self._serial + 1) & 0xFFFF
            if self._serial not in self._pending and self._serial not in self._abandoned:
                return self._serial

    def _on_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        buf = self._buf
        buf += data
        framing = self.framing
        head = framing.header_size
        pos = 0
        size = len(buf)
        while size - pos >= head:
            try:
                serial, length = framing.body_length(buf[pos : pos + head])
            except FrameError as exc:
                self._malformed(None, str(exc))
                return
            if framing.pipelined:
                late = serial not in self._pending and serial in self._abandoned
                pending = self._abandoned[serial] if late else self._pending.get(serial)
                if pending is None:
                    self._malformed(None, f"answer with unexpected serial number {serial}")
                    return
            else:
                late = False
                if not self._pending:
                    self._malformed(None, "an answer nobody asked for")
                    return
                serial = next(iter(self._pending))
                pending = self._pending[serial]
            if length not in pending.sizes:
                self._malformed(serial, f"length {length} does not fit the request")
                return
            end = pos + head + length
            if end > size:
                break
            body = bytes(buf[pos + head : end])
            pos = end
            if late:
                del self._abandoned[serial]
                continue
            try:
                response = framing.parse_body(serial, body, pending.words)
            except FrameError as exc:
                self._malformed(serial, str(exc))
                return
            if response.end_code == 0 and len(response.data) != pending.data_bytes:
                self._malformed(
                    serial, f"{len(response.data)} data bytes, not {pending.data_bytes}"
                )
                return
            del self._pending[serial]
            if pending.future.done():
                continue
            if response.end_code:
                pending.future.set_exception(
                    DeviceError(
                        f"{self.where}: {pending.what}: end code "
                        f"{end_code_reason(response.end_code)}",
                        code=response.end_code,
                    )
                )
            else:
                pending.future.set_result(response.data)
        del buf[:pos]

    def _malformed(self, serial: int | None, problem: str) -> None:
        message = f"{self.where}: malformed answer: {problem}"
        victim = self._pending.pop(serial, None) if serial is not None else None
        if victim is None and self._pending:
            victim = self._pending.pop(next(iter(self._pending)))
        if victim is not None and not victim.future.done():
            victim.future.set_exception(ProtocolError(message))
        self._shut("connection closed after a malformed answer")

    def _on_lost(self, exc: Exception | None) -> None:
        self._shut(f"connection lost ({exc})" if exc else "connection closed by the PLC")

    def _shut(self, why: str) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        self._closed_why = why
        self._buf.clear()
        transport.abort()
        pending, self._pending = self._pending, OrderedDict()
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(ConnectError(f"{self.where}: {why}"))

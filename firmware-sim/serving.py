"""Serving a request/response protocol over TCP: the connections, their faults, start and stop.

The Modbus TCP server (`modbus_tcp.py`) and the MC server (`mc_server.py`) differ in their
frames only; this module owns what they share:

- `FrameServer`: one listening port over units (unit id → `Unit`), the set of open
  connections, a reboot of a unit closing the connections that addressed it (every connection
  when the port has one unit), and stop closing them all;
- `FrameConnection`: one client connection as an `asyncio.Protocol`: refused at once while
  every unit refuses (`refuse` or a reboot's down time), bytes buffered until a subclass's
  `_process` finds whole requests in them, answers written in one write per batch, and the
  faults that act on the wire (drop, truncated, slow) applied the same way for both protocols.

A subclass's `_process` parses the buffer, answers what it can, and hands a request a fault
acted on to `_fault` with a function that builds the answer that fault makes (an exception, a
garbled frame, or the plain answer): the parsing stays each protocol's own (ADR 0002, 0006).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from firmware_sim.faults import FaultMode, Faults
from firmware_sim.modbus_pdu import Unit


@dataclass(slots=True)
class ServingStats:
    """What a server has seen since it started (each protocol adds its own counts)."""

    connections: int = 0  # connections accepted and served
    refused: int = 0  # connections closed at once by `refuse` or a reboot
    open: int = 0  # connections open now
    requests: int = 0  # well-formed requests answered (or acted on by a fault)
    malformed: int = 0  # connections closed for a malformed request
    faults: int = 0  # requests a fault acted on


S = TypeVar("S", bound="FrameServer")


class FrameConnection(asyncio.Protocol, Generic[S]):
    """One client connection: buffers bytes for `_process` and applies the wire faults."""

    def __init__(self, server: S) -> None:
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
        """Answer the whole requests at the head of the buffer (the protocol's own parsing)."""
        raise NotImplementedError

    def _finish(self, out: list[bytes]) -> None:
        """Send what is answered so far, then close the connection."""
        assert self._transport is not None
        if out:
            self._transport.write(b"".join(out))
        self._mute = True
        self._transport.close()  # close, not abort: the answers written above still go out

    def _fault(
        self, action: FaultMode, faults: Faults, out: list[bytes], answer: Callable[[], bytes]
    ) -> bool:
        """Apply `action` to one request; True when its answer is in `out` and serving goes on.

        `answer()` builds the answer as the action makes it (an exception for `exception`, a
        garbled frame for `malformed`); `drop` and `refuse` close before building it. False:
        the connection is closed, silent, or waiting for a slow answer (`_release`).
        """
        assert self._transport is not None
        self._server.stats.faults += 1
        if action in (FaultMode.DROP, FaultMode.REFUSE):
            self._finish(out)
            return False
        frame = answer()
        if action is FaultMode.TRUNCATED:
            out.append(frame[: max(1, len(frame) // 2)])
            self._transport.write(b"".join(out))
            self._mute = True  # the rest never comes; the connection stays open and silent
            return False
        if action is FaultMode.SLOW:
            if out:
                self._transport.write(b"".join(out))
            # Later requests wait behind this one: answers on a connection stay in order.
            loop = asyncio.get_running_loop()
            self._held = loop.call_later(faults.delay, self._release, frame)
            return False
        out.append(frame)
        return True

    def _release(self, frame: bytes) -> None:
        self._held = None
        if self._mute or self._transport is None or self._transport.is_closing():
            return
        self._transport.write(frame)
        if self._buf:
            self._process()


class FrameServer:
    """One listening port serving `units` (unit id → `Unit`) through `_connection()`s."""

    def __init__(self, units: Mapping[int, Unit], stats: ServingStats) -> None:
        self.units: dict[int, Unit] = dict(units)
        self.stats = stats
        self.connections: set[FrameConnection[Any]] = set()
        self._server: asyncio.Server | None = None
        self._listeners: list[tuple[Unit, Callable[[], None]]] = []
        self.port = 0

    def _connection(self) -> FrameConnection[Any]:
        """A new connection of this server's protocol."""
        raise NotImplementedError

    def refusing(self) -> bool:
        """True when no unit on this port takes connections (refuse, or rebooting)."""
        return bool(self.units) and all(u.faults.refusing() for u in self.units.values())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `host:port` (0 picks a free port) and return the bound port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._connection, host, port)
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

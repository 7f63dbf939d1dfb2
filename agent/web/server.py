"""A small asyncio HTTP/1.1 server for the status page, `/metrics` and the health endpoints.

GET only (but for acknowledging an alarm), one request per connection (`Connection: close`):
the page's updates come over one long-lived server-sent-events stream, so keep-alive would buy
nothing and cost a parser. Every connection is bounded: the request head (8 KiB), the time to
send it ([web] head_timeout), the time a client may take to read (10 s). Connections still
sending their head (32: a newer one closes the one waiting longest) and event streams ([web]
max_event_streams, 503 beyond) are capped apart, below the limit of connections at once, so
slow or idle clients cannot take the room a liveness probe needs. Nothing here blocks the event
loop that polls the PLCs: the one query (the store's figures) runs in a worker thread.

Routes: `/` (the page) and its two static files, `/api/state` (JSON; `?machine=` picks the live
values), `/api/events` (the same, pushed every second as server-sent events), `/metrics`
(Prometheus text), `/healthz` (liveness: the process answers), `/readyz` (200 or 503 with
the reasons) and `/images/<inspection>/<file>` (a saved image of an inspected part, see
images.py), `/reports` and `/reports/<shift>` (the shift reports, reports.py), `/api/trend`
(tags of a machine over the last minutes, downsampled: trend.py) and `POST /api/alarms/ack`
(the one route that changes anything; see routes.POST_ROUTES). When a token
is configured, every route but `/healthz` asks for it. Every route but `/healthz` also checks
the Host header against the names the page answers to (DNS rebinding).

This module owns the connections (the caps, the event streams, writing); what a route answers
is routes.py's, the Host and token checks access.py's, the bytes on the wire http.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson

from agent.errors import one_line
from agent.web.access import host_allowed, host_name, presented_token
from agent.web.config import WebError, WebSection
from agent.web.http import (
    MAX_HEAD,
    HttpError,
    Request,
    error_response,
    json_response,
    parse_head,
    response,
)
from agent.web.routes import POST_ROUTES, Routes
from agent.web.state import StateBuilder
from agent.web.verdicts import VerdictLog

if TYPE_CHECKING:
    from agent.runtime import Agent

# Where the tests and other modules import them from since the server was one module.
__all__ = [
    "MAX_HEAD",
    "MAX_HEADS",
    "HttpError",
    "Request",
    "WebServer",
    "host_allowed",
    "host_name",
    "json_response",
    "parse_head",
    "presented_token",
    "response",
]

log = logging.getLogger("lineside.web")

WRITE_TIMEOUT = 10.0  # seconds a client may take to accept what we send
# Connections still sending their request head. A browser or a probe sends its head in the
# first packet, so when a new connection finds them all taken, the oldest is the slowest.
MAX_HEADS = 32
# Room for answers being written, on top of the heads and event streams: the limit of
# connections at once is the sum, so /healthz finds room while both caps are full.
ANSWERS = 32
EVENT_INTERVAL = 1.0  # seconds between two state pushes on /api/events

SLOW_HEAD = error_response(HTTPStatus.REQUEST_TIMEOUT, "request head too slow")


class WebServer:
    """The agent's HTTP server. `start` binds (so a taken port fails before polling starts);
    `serve` runs until cancelled, then closes every connection."""

    def __init__(self, agent: Agent, section: WebSection, token: str | None) -> None:
        self.agent = agent
        self.section = section
        self.token = token
        self.verdicts = VerdictLog.of(agent.inspectors)
        agent.event_listeners.append(self.verdicts.record)
        self.state = StateBuilder(agent, refresh=EVENT_INTERVAL, verdicts=self.verdicts)
        self.routes = Routes(agent, section, token, self.state, self.verdicts)
        self._server: asyncio.Server | None = None
        self._port = section.port
        self._clients: set[asyncio.Task[None]] = set()
        # Connections the server is reading from, oldest first (a dict keeps insertion order),
        # each with what to send it should it be closed to make room.
        self._heads: dict[asyncio.StreamWriter, bytes] = {}
        self._streams = 0  # /api/events streams open
        self.max_connections = MAX_HEADS + section.max_event_streams + ANSWERS

    @classmethod
    async def start(cls, agent: Agent) -> WebServer:
        section: WebSection = agent.config.web
        server = cls(agent, section, section.token())
        try:
            server._server = await asyncio.start_server(
                server._connection, section.bind, section.port, limit=MAX_HEAD
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise WebError(
                    f"cannot serve the status page: port {section.port} on {section.bind} is "
                    "in use; choose another with the [web] port key"
                ) from None
            raise WebError(
                f"cannot serve the status page on {section.bind}:{section.port}: "
                f"{exc.strerror or exc} (the [web] bind and port keys)"
            ) from None
        # Kept from binding: the port (0 in the config means any free one) outlives the socket,
        # so the URL can still be printed after the server closed.
        server._port = int(server._server.sockets[0].getsockname()[1])
        log.info("status page on %s", server.url)
        return server

    @property
    def port(self) -> int:
        return self._port

    @property
    def waiting_heads(self) -> int:
        """Connections still sending their request head."""
        return len(self._heads)

    @property
    def event_streams(self) -> int:
        """/api/events streams open."""
        return self._streams

    @property
    def url(self) -> str:
        host = self.section.bind
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"  # the address to type on this machine
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    async def serve(self) -> None:
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self) -> None:
        with contextlib.suppress(ValueError):  # closed twice
            self.agent.event_listeners.remove(self.verdicts.record)
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            # after the clients: from Python 3.12 on it waits for every connection to end
            await self._server.wait_closed()

    # -- one connection ----------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > self.max_connections:
                await self._send(
                    writer, error_response(HTTPStatus.SERVICE_UNAVAILABLE, "too many clients")
                )
                return
            await self._exchange(reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading: nothing to tell it
        except asyncio.CancelledError:
            # The server is closing. This task is a leaf that asyncio's stream machinery would
            # report as an error if it ended cancelled, so it ends quietly instead.
            pass
        except Exception as exc:  # a page's bug costs this one request, not the agent
            log.error("status page: a request failed: %s", one_line(exc))
            log.debug("status page: a request failed", exc_info=exc)
            with contextlib.suppress(Exception):
                failed = error_response(
                    HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {one_line(exc)}"
                )
                await self._send(writer, failed)
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = parse_head(await self._head(reader, writer))
        except asyncio.LimitOverrunError:
            status, message = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"
            too_large = error_response(status, f"{message} (max {MAX_HEAD} bytes)")
            await self._refuse(reader, writer, too_large)
            return
        except asyncio.IncompleteReadError:
            return  # closed before a whole head arrived
        except TimeoutError:
            await self._send(writer, SLOW_HEAD)
            return
        except HttpError as exc:
            await self._refuse(reader, writer, error_response(exc.status, str(exc)))
            return
        await self._route(request, writer)

    async def _head(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """The request head, within head_timeout."""
        with self._reading(writer, SLOW_HEAD):
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.section.head_timeout)

    @contextlib.contextmanager
    def _reading(self, writer: asyncio.StreamWriter, goodbye: bytes) -> Iterator[None]:
        """While the client is still sending (its head, or what follows a refused one), among
        at most MAX_HEADS such connections: a new one closes the one waiting longest, after
        `goodbye` (b"" when it had its answer)."""
        if len(self._heads) >= MAX_HEADS:
            slowest, last_words = next(iter(self._heads.items()))
            del self._heads[slowest]
            if last_words and not slowest.is_closing():
                slowest.write(last_words)
            slowest.close()  # its own read then ends (IncompleteReadError, or EOF)
        self._heads[writer] = goodbye
        try:
            yield
        finally:
            self._heads.pop(writer, None)

    async def _route(self, request: Request, writer: asyncio.StreamWriter) -> None:
        sockname = writer.get_extra_info("sockname")
        local = str(sockname[0]) if isinstance(sockname, tuple) else None
        refusal, extra = self.routes.admit(request, local)
        if refusal is not None:
            await self._send(writer, refusal)
            return
        if request.path == "/api/events":
            await self._stream(request, writer, extra)
            return
        if request.path in POST_ROUTES:
            peer = writer.get_extra_info("peername")
            await self._send(writer, self.routes.acknowledge(request, peer, extra))
            return
        await self._send(writer, await self.routes.answer(request, extra))

    async def _stream(
        self, request: Request, writer: asyncio.StreamWriter, extra: list[tuple[str, str]]
    ) -> None:
        limit = self.section.max_event_streams
        if self._streams >= limit:
            message = f"too many event streams (max {limit}, [web] max_event_streams)"
            await self._send(writer, error_response(HTTPStatus.SERVICE_UNAVAILABLE, message))
            return
        self._streams += 1
        try:
            await self._events(request, writer, extra)
        finally:
            self._streams -= 1

    async def _events(
        self, request: Request, writer: asyncio.StreamWriter, extra: list[tuple[str, str]]
    ) -> None:
        """Push the state every second until the client leaves or the server stops."""
        head = response(HTTPStatus.OK, b"", "text/event-stream", extra, length=False)
        await self._send(writer, head + b"retry: 2000\n\n", close=False)
        clock = self.agent.clock
        machine = request.param("machine")
        deadline = clock.monotonic()
        while True:
            # Half the interval: each push shows figures newer than the previous push, whatever
            # the phase of this stream against the shared refresh.
            state = await self.state.state(machine, max_age=EVENT_INTERVAL / 2)
            await self._send(
                writer, b"event: state\ndata: " + orjson.dumps(state) + b"\n\n", close=False
            )
            deadline = max(deadline + EVENT_INTERVAL, clock.monotonic())
            await clock.sleep_until(deadline)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes, *, close: bool = True) -> None:
        if writer.is_closing():
            raise ConnectionResetError("client gone")
        writer.write(data)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        if close and writer.can_write_eof():
            writer.write_eof()

    async def _refuse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> None:
        """Answer a bad request, then read what the client still sends for a moment: closing
        with unread data resets the connection, and the client would lose our answer."""
        await self._send(writer, data)
        # Counted with the heads: a client that sends a bad head, then holds the connection,
        # must not take the room left for /healthz.
        with self._reading(writer, b""), contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                while await reader.read(65536):
                    pass

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
(the one route that changes anything; see POST_ROUTES). When a token
is configured, every route but `/healthz` asks for it. Every route but `/healthz` also checks
the Host header against the names the page answers to (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson

from agent.errors import one_line
from agent.web.config import WebError, WebSection, canonical_host
from agent.web.health import not_ready
from agent.web.images import PREFIX as IMAGES
from agent.web.images import NoImage, read_image
from agent.web.reports import REPORT_POLICY, is_report_path, listing, shift_of
from agent.web.state import StateBuilder
from agent.web.trend import TrendError, TrendQuery, read_trend
from agent.web.verdicts import VerdictLog

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from agent.runtime import Agent

log = logging.getLogger("lineside.web")

MAX_HEAD = 8192  # bytes of request line and headers; a browser sends well under 2 KiB
WRITE_TIMEOUT = 10.0  # seconds a client may take to accept what we send
# Connections still sending their request head. A browser or a probe sends its head in the
# first packet, so when a new connection finds them all taken, the oldest is the slowest.
MAX_HEADS = 32
# Room for answers being written, on top of the heads and event streams: the limit of
# connections at once is the sum, so /healthz finds room while both caps are full.
ANSWERS = 32
EVENT_INTERVAL = 1.0  # seconds between two state pushes on /api/events
COOKIE = "lineside_token"
# A field value may hold visible ASCII, spaces and tabs; NUL, CR or LF inside one is smuggling.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
ROUTES = frozenset(
    {*STATIC, "/api/state", "/api/events", "/api/trend", "/metrics", "/healthz", "/readyz"}
)
# The one route that changes anything: acknowledging an alarm. POST, and refused unless the
# request carries ACTION_HEADER (a cross-site form cannot send one, and a cross-site fetch
# with one needs a CORS preflight this server never answers) and any Origin is this page's.
POST_ROUTES = frozenset({"/api/alarms/ack"})
ACTION_HEADER = "x-lineside-action"
OPEN_ROUTES = frozenset({"/healthz"})  # liveness probes carry no token
# Saved images never change under their name (it starts with the time): the browser may keep
# them, so the page's thumbnails are fetched once, not on every redraw.
IMAGE_CACHE = "private, max-age=86400, immutable"

# The page fetches nothing from elsewhere and runs no inline script.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def parse_head(head: bytes) -> Request:
    """The request line and headers (up to the blank line). Raises HttpError(400) when bad."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "the request head is not ASCII") from None
    lines = text.removesuffix("\r\n\r\n").split("\r\n")
    if any(CONTROL.search(line) for line in lines):
        raise HttpError(HTTPStatus.BAD_REQUEST, "control character in the request head")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, _ = parts
    if not target.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "the request target must be a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        key = name.lower()
        joiner = "; " if key == "cookie" else ", "
        headers[key] = f"{headers[key]}{joiner}{value.strip()}" if key in headers else value.strip()
    url = urlsplit(target)
    return Request(method, url.path, parse_qs(url.query), headers)


def host_name(value: str) -> str | None:
    """The host of a Host header (`name`, `name:port`, `[v6]:port`) in the form `allowed_hosts`
    keeps (lower case, short IPv6); None when malformed."""
    if value.startswith("["):
        inside, bracket, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
        if not bracket or (rest and not rest.startswith(":")) or (port and not port.isdigit()):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, _, port = value.partition(":")
    if port and not port.isdigit():  # an empty port after the colon is allowed (RFC 9110)
        return None
    return canonical_host(name)


def host_allowed(host: str, allowed: frozenset[str], local: str | None) -> bool:
    """Whether to answer a request for `host` (from host_name). A browser names the host of the
    page's URL, so a DNS-rebound page names the attacker's name and is refused. An IP address
    cannot be rebound: loopback and the address the client connected to (`local`) are fine."""
    if host == "localhost" or host in allowed:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or (local is not None and address == _unmapped(local))


def _unmapped(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # On a "::" bind an IPv4 client arrives on ::ffff:a.b.c.d, and its Host says a.b.c.d.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _same(offered: str | None, token: str) -> bool:
    # compare_digest takes the same time wherever the strings differ
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


def presented_token(request: Request) -> tuple[str | None, str | None, str | None]:
    """The token as offered by header, query and cookie (each may be None)."""
    bearer = None
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        bearer = value.strip()
    cookie = None
    if "cookie" in request.headers:
        jar: SimpleCookie = SimpleCookie()
        with contextlib.suppress(CookieError):
            jar.load(request.headers["cookie"])
        if COOKIE in jar:
            cookie = jar[COOKIE].value
    return bearer, request.param("token"), cookie


def response(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    length: bool = True,
    cache: str = "no-store",
) -> bytes:
    headers = [
        ("Content-Type", content_type),
        ("Cache-Control", cache),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Connection", "close"),
        *(extra or []),
    ]
    if length:
        headers.append(("Content-Length", str(len(body))))
    head = f"HTTP/1.1 {status.value} {status.phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + body


def json_response(
    status: HTTPStatus, data: Any, extra: list[tuple[str, str]] | None = None
) -> bytes:
    # orjson writes NaN as null: a bad-quality reading must not break the page's JSON.parse
    return response(status, orjson.dumps(data), "application/json", extra)


def _error(status: HTTPStatus, message: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return json_response(status, {"error": message}, extra)


SLOW_HEAD = _error(HTTPStatus.REQUEST_TIMEOUT, "request head too slow")


def _static_files() -> dict[str, bytes]:
    folder = resources.files("agent.web") / "static"
    return {route: (folder / name).read_bytes() for route, (name, _) in STATIC.items()}


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
        # Built at the first scrape: prometheus-client costs memory an agent never scraped
        # does not need.
        self.registry: CollectorRegistry | None = None
        self.files = _static_files()
        self._server: asyncio.Server | None = None
        self._port = section.port
        self._clients: set[asyncio.Task[None]] = set()
        # Connections the server is reading from, oldest first (a dict keeps insertion order),
        # each with what to send it should it be closed to make room.
        self._heads: dict[asyncio.StreamWriter, bytes] = {}
        self._streams = 0  # /api/events streams open
        self.max_connections = MAX_HEADS + section.max_event_streams + ANSWERS
        self.allowed_hosts = frozenset(section.allowed_hosts)
        # One report replay at a time: each reads a shift and 7 days of readings, and the
        # edge box's cores belong to polling first.
        self._reports = asyncio.Semaphore(1)

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
                await self._send(writer, _error(HTTPStatus.SERVICE_UNAVAILABLE, "too many clients"))
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
                failed = _error(
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
            await self._refuse(reader, writer, _error(status, f"{message} (max {MAX_HEAD} bytes)"))
            return
        except asyncio.IncompleteReadError:
            return  # closed before a whole head arrived
        except TimeoutError:
            await self._send(writer, SLOW_HEAD)
            return
        except HttpError as exc:
            await self._refuse(reader, writer, _error(exc.status, str(exc)))
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

    def _misdirected(self, request: Request, writer: asyncio.StreamWriter) -> bytes | None:
        """The refusal of a request whose Host this page does not answer to, or None."""
        value = request.headers.get("host")
        host = None if value is None else host_name(value)
        if host is None:
            return _error(HTTPStatus.BAD_REQUEST, "missing or malformed Host header")
        sockname = writer.get_extra_info("sockname")
        local = str(sockname[0]) if isinstance(sockname, tuple) else None
        if host_allowed(host, self.allowed_hosts, local):
            return None
        message = f"this page does not answer to {host!r}: add it to [web] allowed_hosts"
        return _error(HTTPStatus.MISDIRECTED_REQUEST, message)

    async def _route(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if request.path not in OPEN_ROUTES:  # liveness probes may name any host
            refusal = self._misdirected(request, writer)
            if refusal is not None:
                await self._send(writer, refusal)
                return
        known = request.path.startswith(IMAGES) or is_report_path(request.path)
        posting = request.path in POST_ROUTES
        if request.path not in ROUTES and not known and not posting:
            await self._send(writer, _error(HTTPStatus.NOT_FOUND, f"no such page: {request.path}"))
            return
        method = "POST" if posting else "GET"
        if request.method != method:
            error = _error(HTTPStatus.METHOD_NOT_ALLOWED, f"only {method}", [("Allow", method)])
            await self._send(writer, error)
            return
        extra: list[tuple[str, str]] = []
        if self.token is not None and request.path not in OPEN_ROUTES:
            bearer, query, cookie = presented_token(request)
            if not any(_same(t, self.token) for t in (bearer, query, cookie)):
                message = "token required: send 'Authorization: Bearer <token>' or open /?token=…"
                challenge = [("WWW-Authenticate", 'Bearer realm="lineside"')]
                await self._send(writer, _error(HTTPStatus.UNAUTHORIZED, message, challenge))
                return
            if _same(query, self.token) and not _same(cookie, self.token):
                # The page's own requests (fetch, EventSource) then carry it by themselves.
                cookie_line = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                extra.append(("Set-Cookie", cookie_line))
        if request.path == "/api/events":
            await self._stream(request, writer, extra)
            return
        if posting:
            await self._send(writer, self._acknowledge(request, writer, extra))
            return
        await self._send(writer, await self._answer(request, extra))

    def _acknowledge(
        self, request: Request, writer: asyncio.StreamWriter, extra: list[tuple[str, str]]
    ) -> bytes:
        """`POST /api/alarms/ack?alarm=NAME`: with the token (checked before) or from loopback,
        with the action header, and from this page's origin when the browser names one."""
        peer = writer.get_extra_info("peername")
        address = _unmapped(str(peer[0])) if isinstance(peer, tuple) else None
        if self.token is None and (address is None or not address.is_loopback):
            return _error(HTTPStatus.FORBIDDEN, "acknowledging needs a token beyond loopback")
        if ACTION_HEADER not in request.headers:
            return _error(HTTPStatus.FORBIDDEN, f"missing the {ACTION_HEADER} header")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return _error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        name = request.param("alarm")
        if not name:
            return _error(HTTPStatus.BAD_REQUEST, "name the alarm: ?alarm=...")
        by = "token" if self.token is not None else "loopback"
        if address is not None:
            by = f"{by} {address}"
        if not self.agent.acknowledge_alarm(name, by):
            return _error(HTTPStatus.CONFLICT, f"no active, unacknowledged alarm {name!r}")
        return json_response(HTTPStatus.OK, {"acknowledged": name, "by": by}, extra)

    async def _answer(self, request: Request, extra: list[tuple[str, str]]) -> bytes:
        path = request.path
        if path in STATIC:
            headers = extra + ([("Content-Security-Policy", PAGE_POLICY)] if path == "/" else [])
            return response(HTTPStatus.OK, self.files[path], STATIC[path][1], headers)
        if path == "/healthz":
            return json_response(HTTPStatus.OK, {"status": "alive"}, extra)
        if path.startswith(IMAGES):
            return await self._image(path, extra)
        if is_report_path(path):
            return await self._report(path, extra)
        if path == "/api/state":
            state = await self.state.state(request.param("machine"))
            return json_response(HTTPStatus.OK, state, extra)
        if path == "/api/trend":
            return await self._trend(request, extra)
        if path == "/metrics":
            from agent.web.metrics import CONTENT_TYPE, metrics_registry, render

            if self.registry is None:
                self.registry = metrics_registry(self.agent, self.state)
            await self.state.figures()  # refresh the store's figures the collector reads
            return response(HTTPStatus.OK, render(self.registry), CONTENT_TYPE, extra)
        # /readyz
        reasons = not_ready(await self.state.figures(), self.section.sink_max_unsent_age)
        if reasons:
            return json_response(
                HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False, "reasons": reasons}, extra
            )
        return json_response(HTTPStatus.OK, {"ready": True, "reasons": []}, extra)

    async def _trend(self, request: Request, extra: list[tuple[str, str]]) -> bytes:
        """`/api/trend?machine=M&tag=T[&tag=U]&minutes=60&points=300`, read in a worker thread."""
        try:
            query = TrendQuery.parse(
                request.param("machine"),
                request.query.get("tag", []),
                request.param("minutes"),
                request.param("points"),
            )
            data = await asyncio.to_thread(
                read_trend, self.agent.store, query, self.agent.clock.time_ns()
            )
        except TrendError as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc))
        return json_response(HTTPStatus.OK, data, extra)

    async def _report(self, path: str, extra: list[tuple[str, str]]) -> bytes:
        """`/reports` (the shifts of the last 7 days) or `/reports/<shift>` (its report,
        replayed from the store in a worker thread: it reads, never writes)."""
        from agent.errors import StoreError
        from agent.kpi.document import shift_report
        from agent.kpi.replay import SelectionError

        config = self.agent.config
        now_ns = self.agent.clock.time_ns()
        headers = [*extra, ("Content-Security-Policy", REPORT_POLICY)]
        html = "text/html; charset=utf-8"
        if path.rstrip("/") == "/reports":
            page = listing(config, now_ns)
            return response(HTTPStatus.OK, page.encode(), html, headers)
        shift = shift_of(path)
        if shift is None:
            return _error(HTTPStatus.NOT_FOUND, f"no such report: {path}")
        try:
            async with self._reports:
                page = await asyncio.to_thread(shift_report, config, shift, now_ns)
        except SelectionError as exc:
            return _error(HTTPStatus.NOT_FOUND, str(exc))
        except (StoreError, ValueError) as exc:
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, one_line(exc))
        return response(HTTPStatus.OK, page.encode(), html, headers)

    async def _image(self, path: str, extra: list[tuple[str, str]]) -> bytes:
        try:
            data, content_type = await asyncio.to_thread(read_image, path, self.verdicts.folders)
        except NoImage as exc:
            log.debug("image refused: %s", exc)
            return _error(HTTPStatus.NOT_FOUND, "no such image")
        return response(HTTPStatus.OK, data, content_type, extra, cache=IMAGE_CACHE)

    async def _stream(
        self, request: Request, writer: asyncio.StreamWriter, extra: list[tuple[str, str]]
    ) -> None:
        limit = self.section.max_event_streams
        if self._streams >= limit:
            message = f"too many event streams (max {limit}, [web] max_event_streams)"
            await self._send(writer, _error(HTTPStatus.SERVICE_UNAVAILABLE, message))
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

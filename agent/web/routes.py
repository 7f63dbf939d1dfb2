"""What each route of the status page answers, once its request head is read: the Host and
token checks, the page and its two static files, `/api/state`, `/api/trend`, `/metrics`,
`/healthz`, `/readyz`, the saved images, the shift reports and `POST /api/alarms/ack`. The
connections themselves (limits, streams, writing) are server.py's.

Nothing here blocks the event loop that polls the PLCs: reading the store (the trend, a
report's replay) and an image file runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.errors import one_line
from agent.web.access import COOKIE, host_allowed, host_name, presented_token, same_token, unmapped
from agent.web.config import WebSection
from agent.web.health import not_ready
from agent.web.http import Request, error_response, json_response, response
from agent.web.images import PREFIX as IMAGES
from agent.web.images import NoImage, read_image
from agent.web.reports import REPORT_POLICY, is_report_path, listing, shift_of
from agent.web.state import StateBuilder
from agent.web.trend import TrendError, TrendQuery, read_trend
from agent.web.verdicts import VerdictLog

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("lineside.web")

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


def _static_files() -> dict[str, bytes]:
    folder = resources.files("agent.web") / "static"
    return {route: (folder / name).read_bytes() for route, (name, _) in STATIC.items()}


class Routes:
    """The answers of the status page's routes; the server hands each parsed request here."""

    def __init__(
        self,
        agent: Agent,
        section: WebSection,
        token: str | None,
        state: StateBuilder,
        verdicts: VerdictLog,
    ) -> None:
        self.agent = agent
        self.section = section
        self.token = token
        self.state = state
        self.verdicts = verdicts
        self.files = _static_files()
        self.allowed_hosts = frozenset(section.allowed_hosts)
        # One report replay at a time: each reads a shift and 7 days of readings, and the
        # edge box's cores belong to polling first.
        self._reports = asyncio.Semaphore(1)

    def _misdirected(self, request: Request, local: str | None) -> bytes | None:
        """The refusal of a request whose Host this page does not answer to, or None."""
        value = request.headers.get("host")
        host = None if value is None else host_name(value)
        if host is None:
            return error_response(HTTPStatus.BAD_REQUEST, "missing or malformed Host header")
        if host_allowed(host, self.allowed_hosts, local):
            return None
        message = f"this page does not answer to {host!r}: add it to [web] allowed_hosts"
        return error_response(HTTPStatus.MISDIRECTED_REQUEST, message)

    def admit(
        self, request: Request, local: str | None
    ) -> tuple[bytes | None, list[tuple[str, str]]]:
        """The refusal of a request (its Host, an unknown path, the wrong method, no token), or
        None and the headers every answer to it carries (the token's cookie). `local` is the
        address the client connected to."""
        if request.path not in OPEN_ROUTES:  # liveness probes may name any host
            refusal = self._misdirected(request, local)
            if refusal is not None:
                return refusal, []
        known = request.path.startswith(IMAGES) or is_report_path(request.path)
        posting = request.path in POST_ROUTES
        if request.path not in ROUTES and not known and not posting:
            return error_response(HTTPStatus.NOT_FOUND, f"no such page: {request.path}"), []
        method = "POST" if posting else "GET"
        if request.method != method:
            allow = [("Allow", method)]
            return error_response(HTTPStatus.METHOD_NOT_ALLOWED, f"only {method}", allow), []
        extra: list[tuple[str, str]] = []
        if self.token is not None and request.path not in OPEN_ROUTES:
            bearer, query, cookie = presented_token(request)
            if not any(same_token(t, self.token) for t in (bearer, query, cookie)):
                message = "token required: send 'Authorization: Bearer <token>' or open /?token=…"
                challenge = [("WWW-Authenticate", 'Bearer realm="lineside"')]
                return error_response(HTTPStatus.UNAUTHORIZED, message, challenge), []
            if same_token(query, self.token) and not same_token(cookie, self.token):
                # The page's own requests (fetch, EventSource) then carry it by themselves.
                cookie_line = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                extra.append(("Set-Cookie", cookie_line))
        return None, extra

    def acknowledge(self, request: Request, peer: object, extra: list[tuple[str, str]]) -> bytes:
        """`POST /api/alarms/ack?alarm=NAME`: with the token (checked before) or from loopback,
        with the action header, and from this page's origin when the browser names one. `peer`
        is the connection's peer name (a tuple whose first item is the address)."""
        address = unmapped(str(peer[0])) if isinstance(peer, tuple) else None
        if self.token is None and (address is None or not address.is_loopback):
            return error_response(
                HTTPStatus.FORBIDDEN, "acknowledging needs a token beyond loopback"
            )
        if ACTION_HEADER not in request.headers:
            return error_response(HTTPStatus.FORBIDDEN, f"missing the {ACTION_HEADER} header")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return error_response(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        name = request.param("alarm")
        if not name:
            return error_response(HTTPStatus.BAD_REQUEST, "name the alarm: ?alarm=...")
        by = "token" if self.token is not None else "loopback"
        if address is not None:
            by = f"{by} {address}"
        if not self.agent.acknowledge_alarm(name, by):
            return error_response(HTTPStatus.CONFLICT, f"no active, unacknowledged alarm {name!r}")
        return json_response(HTTPStatus.OK, {"acknowledged": name, "by": by}, extra)

    async def answer(self, request: Request, extra: list[tuple[str, str]]) -> bytes:
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
            # Imported at the first scrape: prometheus-client costs memory an agent that is
            # never scraped does not need.
            from agent.web.metrics import CONTENT_TYPE, render_metrics

            metrics = render_metrics(await self.state.snapshot())
            return response(HTTPStatus.OK, metrics, CONTENT_TYPE, extra)
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
            return error_response(HTTPStatus.BAD_REQUEST, str(exc))
        return json_response(HTTPStatus.OK, data, extra)

    async def _report(self, path: str, extra: list[tuple[str, str]]) -> bytes:
        """`/reports` (the shifts of the last 7 days) or `/reports/<shift>` (its report,
        replayed from the store in a worker thread: it reads, never writes)."""
        from agent.errors import StoreError
        from agent.kpi.document import shift_report
        from agent.kpi.period import SelectionError

        config = self.agent.config
        now_ns = self.agent.clock.time_ns()
        headers = [*extra, ("Content-Security-Policy", REPORT_POLICY)]
        html = "text/html; charset=utf-8"
        if path.rstrip("/") == "/reports":
            page = listing(config, now_ns)
            return response(HTTPStatus.OK, page.encode(), html, headers)
        shift = shift_of(path)
        if shift is None:
            return error_response(HTTPStatus.NOT_FOUND, f"no such report: {path}")
        try:
            async with self._reports:
                page = await asyncio.to_thread(shift_report, config, shift, now_ns)
        except SelectionError as exc:
            return error_response(HTTPStatus.NOT_FOUND, str(exc))
        except (StoreError, ValueError) as exc:
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, one_line(exc))
        return response(HTTPStatus.OK, page.encode(), html, headers)

    async def _image(self, path: str, extra: list[tuple[str, str]]) -> bytes:
        try:
            data, content_type = await asyncio.to_thread(read_image, path, self.verdicts.folders)
        except NoImage as exc:
            log.debug("image refused: %s", exc)
            return error_response(HTTPStatus.NOT_FOUND, "no such image")
        return response(HTTPStatus.OK, data, content_type, extra, cache=IMAGE_CACHE)

"""A real HTTP MES for tests: a `ThreadingHTTPServer` on port 0 in a background thread.

It records every request (headers and body), stores records de-duplicated both by
`Idempotency-Key` and by `(agent_id, stream, seq)` (the two ways an MES may de-duplicate), and
can be scripted, request by request, to misbehave:

    Status(500)           answer with that status (and an optional body and headers, e.g.
                          `Status(503, headers=(("Retry-After", "7"),))`), store nothing
    Hang()                read the request, never answer (until the server stops)
    Reset()               read the request, then drop the connection with a TCP RST
    CommitThenReset()     store the batch, then drop the connection without answering
    Close()               read the request, then close the connection cleanly (FIN), no answer
    Echo(401)             answer with that status and a body quoting the request's credentials
                          (Authorization, X-Api-Key), as careless MES error pages do

`hang_stream("events")` makes every request of that stream hang (until the server stops),
whatever the script says, as an MES whose events endpoint is stuck would.

Unscripted requests are accepted (200). With `refuse` set, records it flags are answered with
`422 {"rejected": [indexes]}` while the others in the batch are stored: the contract the sink's
README documents.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class Status:
    code: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Hang:
    pass


@dataclass(frozen=True, slots=True)
class Reset:
    pass


@dataclass(frozen=True, slots=True)
class CommitThenReset:
    pass


@dataclass(frozen=True, slots=True)
class Close:
    pass


@dataclass(frozen=True, slots=True)
class Echo:
    code: int


ECHOED = ("authorization", "x-api-key")  # the request headers an `Echo` answer quotes

Action = Status | Hang | Reset | CommitThenReset | Close | Echo


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int  # every request that reached a handler
    deliveries: int  # records stored, counting duplicates
    batches: int  # distinct Idempotency-Keys stored
    records: int  # distinct (agent_id, stream, seq)
    readings: int  # readings in the distinct records


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    script: deque[Action] = field(default_factory=deque)
    requests: list[Received] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    records: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    deliveries: int = 0
    refuse: Callable[[dict[str, Any]], bool] | None = None
    hung_streams: frozenset[str] = frozenset()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real MES front end would
    state: _State  # set on a per-server subclass

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read `requests`, not stderr

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        received = Received(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        with self.state.lock:
            self.state.requests.append(received)
            hung = self.state.hung_streams and _stream_of(body) in self.state.hung_streams
            if hung:
                action: Action | None = Hang()
            else:
                action = self.state.script.popleft() if self.state.script else None
        if isinstance(action, Status):
            self._answer(action.code, action.body, action.headers)
        elif isinstance(action, Hang):
            self.state.release.wait()
            self._reset()
        elif isinstance(action, Reset):
            self._reset()
        elif isinstance(action, CommitThenReset):
            self._store(received)
            self._reset()
        elif isinstance(action, Close):
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif isinstance(action, Echo):
            quoted = {name: received.headers.get(name, "") for name in ECHOED}
            self._answer(action.code, json.dumps({"error": "not allowed", **quoted}).encode())
        else:
            code, answer = self._store(received)
            self._answer(code, json.dumps(answer).encode())

    def _store(self, received: Received) -> tuple[int, dict[str, Any]]:
        try:
            document = received.json()
            agent_id = str(document["agent_id"])
            records = records_of(document)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return 400, {"error": f"bad body: {exc}"}
        key = received.headers.get("idempotency-key", "")
        with self.state.lock:
            refuse = self.state.refuse
            rejected = [i for i, r in enumerate(records) if refuse is not None and refuse(r)]
            duplicate = key in self.state.keys
            for i, record in enumerate(records):
                if i in rejected:
                    continue
                # Every arrival counts; storage by (agent_id, stream, seq) keeps one copy.
                self.state.deliveries += 1
                self.state.records.setdefault((agent_id, record["stream"], record["seq"]), record)
            if rejected:
                return 422, {"rejected": rejected}
            self.state.keys.add(key)
        return 200, {"accepted": len(records), "duplicate": duplicate}

    def _answer(self, code: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


QUALITIES = ("good", "uncertain", "bad")


def _stream_of(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    stream = document.get("stream") if isinstance(document, dict) else None
    return stream if isinstance(stream, str) else None


def records_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of a body, one dict each; columnar telemetry (`lineside.mes/2`) is taken
    apart the way an MES would, into records with their readings."""
    if "records" in document:
        return list(document["records"])
    tags, units, tag = document["tags"], document["units"], document["tag"]
    values, quality = document["value"], document["quality"]
    stamps = document.get("reading_ts")
    records = []
    start = 0
    for i, seq in enumerate(document["seq"]):
        rows = range(start, start + document["n"][i])
        start = rows.stop
        readings = [
            {
                "path": tags[tag[r]],
                "value": values[r],
                "quality": QUALITIES[quality[r]],
                "unit": units[tag[r]],
                "ts": stamps[r] if stamps is not None else document["ts"][i],
            }
            for r in rows
        ]
        records.append(
            {
                "stream": document["stream"],
                "seq": seq,
                "ts": document["ts"][i],
                "historical": document["historical"][i],
                "source": document["source"][i],
                "readings": readings,
            }
        )
    if start != len(values):
        raise ValueError(f"n adds up to {start} readings, the columns hold {len(values)}")
    return records


class MesServer:
    """Start with `running()`; `url` is the endpoint, `script()` queues misbehaviour."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._state = _State()
        handler = type("Handler", (_Handler,), {"state": self._state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        # A short poll interval keeps shutdown (once per test) from costing half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}/api/lineside"

    def script(self, *actions: Action) -> None:
        """Answer the next requests with these actions, in order; then accept again."""
        with self._state.lock:
            self._state.script.extend(actions)

    def refuse(self, predicate: Callable[[dict[str, Any]], bool] | None) -> None:
        """Answer 422 naming every record `predicate` flags (the others are stored)."""
        with self._state.lock:
            self._state.refuse = predicate

    def hang_stream(self, stream: str) -> None:
        """Leave every request of `stream` unanswered until the server stops."""
        with self._state.lock:
            self._state.hung_streams |= {stream}

    @property
    def requests(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.requests)

    def stored(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        with self._state.lock:
            return dict(self._state.records)

    def totals(self) -> Totals:
        with self._state.lock:
            records = self._state.records.values()
            return Totals(
                requests=len(self._state.requests),
                deliveries=self._state.deliveries,
                batches=len(self._state.keys),
                records=len(records),
                readings=sum(len(r.get("readings", ())) for r in records),
            )

    @contextmanager
    def running(self) -> Iterator[MesServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._state.release.set()  # let hanging handlers finish
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

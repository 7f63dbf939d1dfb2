"""The pure parts: request parsing, the token, readiness, and the KPI and inspection views."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import pytest

from agent.web.health import not_ready
from agent.web.server import HttpError, Request, parse_head, presented_token
from agent.web.state import inspections_view, oee_view


def test_parse_head() -> None:
    request = parse_head(
        b"GET /api/state?machine=press2&x=1 HTTP/1.1\r\nHost: a\r\n"
        b"Cookie: a=1\r\ncookie: lineside_token=t\r\n\r\n"
    )
    assert (request.method, request.path) == ("GET", "/api/state")
    assert request.param("machine") == "press2" and request.param("nope") is None
    assert request.headers == {"host": "a", "cookie": "a=1; lineside_token=t"}


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/2\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\n\r\n",
        b"G3T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"GET /\xe9 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\rHost: evil.example\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
    ],
)
def test_bad_heads_are_400(head: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        parse_head(head)
    assert caught.value.status is HTTPStatus.BAD_REQUEST


def test_token_places() -> None:
    request = Request(
        "GET",
        "/",
        {"token": ["q"]},
        {"authorization": "Bearer  b ", "cookie": 'x=1; lineside_token=c; y="'},
    )
    assert presented_token(request) == ("b", "q", "c")
    assert presented_token(Request("GET", "/", {}, {"authorization": "Basic b"})) == (
        None,
        None,
        None,
    )


def figures(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sources": [{"name": "plc", "state": "connected", "last_error": None}],
        "store": {"last_error": None, "store_full": False},
        "sinks": [
            {"name": "mes", "state": "connected", "oldest_unsent_age_s": 500.0, "last_error": None}
        ],
    }
    base.update(over)
    return base


def test_ready_and_its_reasons() -> None:
    assert not_ready(figures(), 300) == []  # connected and catching up: ready
    lost = figures(sources=[{"name": "plc", "state": "lost", "last_error": "refused"}])
    assert not_ready(lost, 300) == ["source plc is lost: refused"]
    broken = figures(store={"last_error": "disk I/O error", "store_full": True})
    assert not_ready(broken, 300) == [
        "store cannot be written: disk I/O error",
        "store is full: events wait in memory",
    ]
    sink = {"name": "mes", "state": "failing", "oldest_unsent_age_s": 500.0, "last_error": "503"}
    assert not_ready(figures(sinks=[sink]), 300) == [
        "sink mes is failing with records waiting 500 s (more than 300 s): 503"
    ]
    assert not_ready(figures(sinks=[sink]), 600) == []
    idle = {**sink, "oldest_unsent_age_s": None}  # down, but nothing to send
    assert not_ready(figures(sinks=[idle]), 1) == []


ENGINE_SNAPSHOT = {
    "window": {"kind": "shift", "name": "A", "start_ns": 1, "end_ns": 2},
    "machines": {
        "press1": {
            "line": "l1",
            "classic": {"availability": 0.9, "performance": 0.8, "quality": 1.0, "oee": 0.72},
            "flags": ["unknown_time"],
            "unknown": {"time": 0.05, "parts": 0.02},
            "pareto": [["die change", 600.0, 0.75], ["jam", 200.0, 0.25]],
        },
        "press2": {"classic": {"availability": None, "oee": float("nan")}, "pareto": []},
    },
    "lines": {"l1": {"classic": {"oee": 0.7}, "pareto": [{"reason": "jam", "seconds": 5}]}},
}


def test_oee_view_of_the_engine_snapshot() -> None:
    view = oee_view(ENGINE_SNAPSHOT)
    assert view["available"] is True
    assert view["window"]["name"] == "A"
    press1, press2, line = view["rows"]
    assert press1 == {
        "scope": "machine",
        "name": "press1",
        "availability": 0.9,
        "performance": 0.8,
        "quality": 1.0,
        "oee": 0.72,
        "pareto": [
            {"reason": "die change", "seconds": 600.0, "share": 0.75},
            {"reason": "jam", "seconds": 200.0, "share": 0.25},
        ],
        "unknown": {"time": 0.05, "parts": 0.02},  # the unknown share beside the OEE
        "flags": ["unknown_time"],
    }
    assert press2["unknown"] == {"time": None, "parts": None}
    assert press2["availability"] is None and press2["oee"] is None  # undefined stays undefined
    assert line["scope"] == "line" and line["oee"] == 0.7
    assert line["pareto"] == [{"reason": "jam", "seconds": 5, "share": None}]


@pytest.mark.parametrize("snapshot", [None, {}, {"machines": {}}, [], "x"])
def test_no_kpi(snapshot: Any) -> None:
    assert oee_view(snapshot) == {"available": False, "window": None, "rows": []}


def test_inspections_view() -> None:
    latest = {
        "scratches": {
            "machine": "press1",
            "latest": {"verdict": "NotOK", "score": 0.93, "latency_ms": 12.5, "model": "m"},
            "frames": 10,
        },
        "cracks": {"machine": "mill1", "latest": None},
    }
    view = inspections_view(latest)
    assert view["available"] is True
    scratches, cracks = view["rows"]
    assert scratches["inspection"] == "scratches" and scratches["machine"] == "press1"
    assert scratches["verdict"] == "NotOK" and scratches["latency_s"] == 0.0125
    assert cracks["verdict"] is None and cracks["machine"] == "mill1"
    assert inspections_view({}) == {"available": False, "rows": []}
    assert inspections_view(None) == {"available": False, "rows": []}

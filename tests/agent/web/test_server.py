"""The status page's endpoints, with httpx against a real agent polling the simulated plant."""

from __future__ import annotations

import asyncio
import itertools
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.codenames import PACKML_STATES
from agent.config import load_config
from agent.runtime import Agent
from agent.web.config import TokenError, WebError
from tests.agent.web.running import running_agent
from tests.waiting import until


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics answer, parsed by prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_the_page_and_its_files(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        page = await client.get("/")
        script = await client.get("/app.js")
        style = await client.get("/style.css")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="app.js">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace('href="', "").split("<body>")[0]  # nothing external
    assert script.status_code == 200 and "EventSource" in script.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert all(r.headers["cache-control"] == "no-store" for r in (page, script, style))


async def test_state_has_sources_store_values_and_rates(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        first = (await client.get("/api/state")).json()
        await asyncio.sleep(1.1)  # the rate needs two looks, one refresh (a second) apart
        state = (await client.get("/api/state", params={"machine": "press2"})).json()
        unknown = (await client.get("/api/state", params={"machine": "nope"})).json()
    assert first["machine"] == "press1"  # no choice: the first machine
    assert state["machines"] == ["press1", "press2"]
    sources = {s["name"]: s for s in state["sources"]}
    press1 = sources["press1-plc"]
    assert press1["state"] == "connected" and press1["type"] == "modbus_tcp"
    assert press1["polls"] > first["sources"][0]["polls"]
    assert 5 <= press1["poll_rate_hz"] <= 15  # polled every 100 ms
    assert press1["errors_total"] == 0 and press1["last_error"] is None
    assert 0 <= press1["last_good_age_s"] < 5
    assert state["store"]["readings_written"] > 0 and state["store"]["bytes"] > 0
    assert state["store"]["depth"]["telemetry"] > 0
    assert state["machine"] == "press2"
    values = {v["tag"]: v for v in state["values"]}
    assert values["part_count"]["quality"] == "good"
    assert isinstance(values["part_count"]["value"], int)  # a counter, not 123.0
    # A text tag: its string, read beside the numbers (agent/texts.py).
    assert values["die_id"]["quality"] == "good", values["die_id"]
    assert values["die_id"]["value"].startswith("DR-")  # the press's die, e.g. DR-HOOD-01
    assert values["die_id"]["reason"] is None
    assert unknown["machine"] == "press1"
    has_kpi = callable(getattr(run.agent, "kpi_snapshot", None))
    assert state["oee"]["available"] is (has_kpi and bool(state["oee"]["rows"]))
    if not has_kpi:
        assert state["oee"]["rows"] == []
    assert state["inspections"] == {"available": False, "rows": [], "rejects": []}  # none


async def test_state_names_codes_and_lists_each_sources_errors(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        run.plant.units["press1"].faults.set("exception", code=2)

        async def look() -> dict[str, Any]:
            return dict((await client.get("/api/state", params={"machine": "press2"})).json())

        state = await look()
        async with asyncio.timeout(15):
            while not (error := _press1_errors(state)) or error[0]["count"] < 2:
                await asyncio.sleep(0.2)
                state = await look()
        run.plant.units["press1"].faults.clear()
        async with asyncio.timeout(15):
            while _press1_errors(state)[0]["active"]:
                await asyncio.sleep(0.2)
                state = await look()
    (listed,) = _press1_errors(state)
    assert listed["reason"] == "illegal data address (02)"
    assert listed["first_s"] < listed["last_s"] and listed["count"] >= 2
    assert listed["active"] is False  # cleared, and still listed with its times
    values = {v["tag"]: v for v in state["values"]}
    assert values["state"]["name"] == PACKML_STATES[values["state"]["value"]]
    assert values["state"]["text"] == str(values["state"]["value"])


def _press1_errors(state: dict[str, Any]) -> list[dict[str, Any]]:
    (press1,) = [s for s in state["sources"] if s["name"] == "press1-plc"]
    return list(press1["error_list"])


@pytest.mark.slow
async def test_events_push_the_state_every_second(tmp_path: Path) -> None:
    async with (
        running_agent(tmp_path) as run,
        httpx.AsyncClient(base_url=run.url) as client,
        client.stream("GET", "/api/events", params={"machine": "press2"}) as stream,
    ):
        assert stream.headers["content-type"] == "text/event-stream"
        events = []
        async with asyncio.timeout(10):
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(httpx.Response(200, content=line[6:]).json())
                    if len(events) == 3:
                        break
    assert [e["machine"] for e in events] == ["press2"] * 3
    gaps = [(b["now_ns"] - a["now_ns"]) / 1e9 for a, b in itertools.pairwise(events)]
    assert all(0.8 < gap < 1.5 for gap in gaps), gaps
    assert events[-1]["samples"] > events[0]["samples"]


async def test_metrics_parse_and_count(tmp_path: Path) -> None:
    sink = '[[sinks]]\nname = "mes"\ntype = "http"\nurl = "http://127.0.0.1:9/ingest"\n'
    async with (
        running_agent(tmp_path, more=sink) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        await until(lambda: run.agent.writer.statistics().commits > 2)
        answer = await client.get("/metrics")
        sinks = (await client.get("/api/state")).json()["sinks"]
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(answer.text)
    src = (("source", "press1-plc"),)
    assert got["lineside_source_polls_total", src] > 0
    assert got["lineside_source_requests_total", src] >= got["lineside_source_polls_total", src]
    assert got["lineside_source_up", src] == 1.0
    assert got["lineside_source_errors_total", (("kind", "timeouts"), *src)] == 0
    groups = [dict(labels) for name, labels in got if name == "lineside_source_overruns_total"]
    assert {g["source"] for g in groups} == {"press1-plc", "press2-plc"}
    assert got["lineside_store_depth_records", (("stream", "telemetry"),)] > 0
    assert got["lineside_store_bytes", ()] > 0
    assert got["lineside_readings_total", ()] > 0
    commits = got["lineside_store_commit_latency_seconds_bucket", (("le", "+Inf"),)]
    assert commits > 2
    assert got["lineside_store_commit_latency_seconds_bucket", (("le", "0.001"),)] <= commits
    assert got["lineside_store_commit_latency_seconds_count", ()] == commits
    assert 0 < got["lineside_store_commit_latency_seconds_sum", ()] < commits  # < 1 s each
    # request latency: a real histogram per source, one observation per answered request
    answered = got["lineside_source_request_latency_seconds_count", src]
    assert answered == got["lineside_source_request_latency_seconds_bucket", (("le", "+Inf"), *src)]
    assert 0 < answered <= got["lineside_source_requests_total", src]
    assert 0 < got["lineside_source_request_latency_seconds_sum", src] < answered  # < 1 s each
    local = got["lineside_source_request_latency_seconds_bucket", (("le", "1"), *src)]
    assert local >= got["lineside_source_request_latency_seconds_bucket", (("le", "0.1"), *src)]
    # A simulated PLC on this machine answers in a few ms; a wide margin for a loaded machine.
    assert local > 0.9 * answered
    assert ("lineside_source_request_latency_recent_seconds", (("quantile", "0.5"), *src)) in got
    mes = (("sink", "mes"),)
    assert got["lineside_sink_up", mes] == 0.0  # nothing listens on port 9
    assert got["lineside_sink_backlog_records", (("sink", "mes"), ("stream", "telemetry"))] > 0
    assert (
        got["lineside_sink_oldest_unsent_age_seconds", (("sink", "mes"), ("stream", "telemetry"))]
        >= 0
    )
    assert got["lineside_sink_quarantined_records", mes] == 0
    assert got["lineside_sink_dropped_records_total", mes] == 0  # nothing dropped: room enough
    assert [(s["name"], s["dropped"]) for s in sinks] == [("mes", 0)]
    assert got["lineside_store_dropped_readings_total", ()] == 0


async def test_health_and_readiness_follow_the_plc(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        await until(lambda: all(link.state == "connected" for link in run.agent.links.values()))
        ready = await client.get("/readyz")
        run.plant.units["press1"].faults.set("reboot", down_time=3600)
        await until(lambda: run.agent.links["press1-plc"].state == "lost")
        await asyncio.sleep(1.1)  # past the shared state's one-second refresh
        gone = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "reasons": []}
    assert gone.status_code == 503
    reasons = gone.json()["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("source press1-plc is lost"), reasons
    assert alive.status_code == 200 and alive.json() == {"status": "alive"}


@pytest.mark.slow
async def test_readiness_names_a_sink_failing_past_its_threshold(tmp_path: Path) -> None:
    sink = '[[sinks]]\nname = "mes"\ntype = "http"\nurl = "http://127.0.0.1:9/ingest"\n'
    web = 'port = 0\nsink_max_unsent_age = "1s"'
    async with (
        running_agent(tmp_path, more=sink, web=web) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        await until(lambda: run.agent.forwarders[0].stats.state == "failing")
        await asyncio.sleep(2.2)  # the oldest record gets older than 1 s; one refresh later
        answer = await client.get("/readyz")
    assert answer.status_code == 503
    (reason,) = answer.json()["reasons"]
    assert reason.startswith("sink mes is failing with records waiting"), reason
    assert "more than 1 s" in reason


async def test_token_is_required_beyond_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_TOKEN", "s3cret-token")
    web = 'bind = "0.0.0.0"\nport = 0\ntoken_env = "LINESIDE_TEST_TOKEN"'
    async with running_agent(tmp_path, web=web) as run:
        base = f"http://127.0.0.1:{run.web.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            bare = await client.get("/api/state")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-tokex"})
            short = await client.get("/", params={"token": "s3cret"})
            bearer = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
            health = await client.get("/healthz")
            page = await client.get("/", params={"token": "s3cret-token"})
            # the cookie set by the page's first load carries the token from here on
            by_cookie = await client.get("/api/state")
        async with httpx.AsyncClient(base_url=base) as stranger:
            ready = await stranger.get("/readyz")
    assert bare.status_code == 401 and "token required" in bare.json()["error"]
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401 and short.status_code == 401
    assert bearer.status_code == 200
    assert health.status_code == 200  # liveness probes carry no token
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("lineside_token=s3cret-token;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert by_cookie.status_code == 200 and by_cookie.json()["agent_id"]
    assert ready.status_code == 401


async def test_unset_token_variable_stops_the_agent_before_polling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LINESIDE_UNSET_TOKEN", raising=False)
    web = 'bind = "0.0.0.0"\nport = 0\ntoken_env = "LINESIDE_UNSET_TOKEN"'
    with pytest.raises(TokenError, match="LINESIDE_UNSET_TOKEN is unset"):
        async with running_agent(tmp_path, web=web):
            pass


async def raw(port: int, data: bytes) -> bytes:
    """Send bytes as they are (httpx would fix a bad request) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    return answer


async def test_bad_requests_get_clear_answers(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run:
        port = run.web.port
        host = b"Host: localhost\r\n"
        oversized = await raw(port, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        post = await raw(
            port, b"POST /api/state HTTP/1.1\r\n" + host + b"Content-Length: 2\r\n\r\n{}"
        )
        unknown = await raw(port, b"GET /etc/passwd HTTP/1.1\r\n" + host + b"\r\n")
        traversal = await raw(port, b"GET /../agent/config.py HTTP/1.1\r\n" + host + b"\r\n")
        garbage = await raw(port, b"HELLO\r\n\r\n")
        absolute = await raw(port, b"GET http://x/ HTTP/1.1\r\n\r\n")
        binary = await raw(port, b"GET /\xff HTTP/1.1\r\n\r\n")
        # the server still answers after all that
        async with httpx.AsyncClient(base_url=run.url) as client:
            fine = await client.get("/healthz")
    assert oversized.startswith(b"HTTP/1.1 431 ")
    assert post.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET\r\n" in post
    assert unknown.startswith(b"HTTP/1.1 404 ") and traversal.startswith(b"HTTP/1.1 404 ")
    assert garbage.startswith(b"HTTP/1.1 400 ") and absolute.startswith(b"HTTP/1.1 400 ")
    assert binary.startswith(b"HTTP/1.1 400 ")
    assert fine.status_code == 200


async def test_a_taken_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "lineside.toml"
        path.write_text(
            f'config_version = 1\n[agent]\nid = "a"\n[plant]\nsite = "s"\n[web]\nport = {port}\n',
            encoding="utf-8",
        )
        agent = Agent(load_config(path))
        with pytest.raises(WebError) as caught:
            await agent.start_web()
        # `run` goes on polling without the page (acquisition matters more)
        await agent.run(duration=0.1)
    assert str(caught.value) == (
        f"cannot serve the status page: port {port} on 127.0.0.1 is in use; "
        "choose another with the [web] port key"
    )
    assert agent.web is None


async def test_a_tag_removed_by_a_reload_leaves_the_page(tmp_path: Path) -> None:
    tonnage = '  { name = "tonnage", address = "hr:12", type = "float32", unit = "t", '
    async with running_agent(tmp_path) as run:
        builder = run.web.state

        async def tags(machine: str) -> list[str]:
            return [v["tag"] for v in (await builder.state(machine, max_age=0))["values"]]

        before = await tags("press1")
        path = tmp_path / "lineside.toml"
        text = path.read_text(encoding="utf-8")
        start = text.index(tonnage)  # press1's
        path.write_text(text[:start] + text[text.index("\n", start) + 1 :], encoding="utf-8")
        assert await run.agent.reload() is True
        after = await tags("press1")
        other = await tags("press2")
    assert "tonnage" in before and "tonnage" not in after
    assert sorted(after) == sorted(t for t in before if t != "tonnage")
    assert "tonnage" in other  # press2 keeps its own

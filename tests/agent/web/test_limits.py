"""The status page under load: slow request heads and many event streams, over real sockets.

Whatever fills the caps, `/healthz` is answered: a liveness probe must not restart a healthy
agent because someone held connections open. `make soak` runs the heavy cases for a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agent.web.server import MAX_HEADS
from tests.agent.web.running import running_agent
from tests.waiting import until

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def slow_head(port: int, host: str = "127.0.0.1") -> Stream:
    """A slowloris connection: half a request head, then nothing."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/state HTTP/1.1\r\nHost: localhost\r\n")
    await writer.drain()
    return reader, writer


async def event_stream(port: int) -> tuple[bytes, Stream]:
    """Ask for /api/events and read the status line; the stream is left open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        status = await reader.readline()
    return status, (reader, writer)


async def answer(stream: Stream) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(10):
        return await stream[0].read()


@contextlib.asynccontextmanager
async def held(streams: list[Stream]) -> AsyncIterator[list[Stream]]:
    try:
        yield streams
    finally:
        for _, writer in streams:
            writer.close()


async def test_healthz_answers_while_heads_and_event_streams_fill_their_caps(
    tmp_path: Path,
) -> None:
    # a long head_timeout: here only the cap closes slow heads
    web_config = 'port = 0\nhead_timeout = "1m"'
    async with running_agent(tmp_path, web=web_config) as run, held([]) as streams:
        port, web = run.web.port, run.web
        limit = web.section.max_event_streams
        statuses = []
        for _ in range(limit + 8):
            status, stream = await event_stream(port)
            statuses.append(status.split(b" ")[1])
            streams.append(stream)
        first = await slow_head(port)
        streams.append(first)
        for _ in range(MAX_HEADS - 1):
            streams.append(await slow_head(port))
        await until(lambda: web.waiting_heads == MAX_HEADS)
        probes = []
        async with httpx.AsyncClient(base_url=run.url) as client:
            for _ in range(20):
                # The attacker tops its heads up to the cap before every probe.
                for _ in range(MAX_HEADS - web.waiting_heads):
                    streams.append(await slow_head(port))
                await until(lambda: web.waiting_heads == MAX_HEADS)
                probes.append((await client.get("/healthz")).status_code)
        assert web.event_streams == limit
        evicted = await answer(first)  # the oldest head made room for the first probe
    assert statuses.count(b"200") == limit and statuses.count(b"503") == 8, statuses
    assert probes == [200] * 20
    assert evicted.startswith(b"HTTP/1.1 408 ")


async def test_bad_heads_held_open_leave_room_for_healthz(tmp_path: Path) -> None:
    async def bad_head(port: int) -> tuple[bytes, Stream]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HELLO\r\n\r\n")  # ... then hold the connection open
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.readline(), (reader, writer)

    async with running_agent(tmp_path) as run, held([]) as streams:
        web = run.web
        # As many as the server takes at once: each is answered 400, then read from for a
        # moment (so the client gets its answer), and that moment counts with the heads.
        bad = [await bad_head(web.port) for _ in range(web.max_connections)]
        streams.extend(stream for _, stream in bad)
        async with httpx.AsyncClient(base_url=run.url) as client:
            health = await client.get("/healthz")
        waiting = web.waiting_heads
    assert {status.split(b" ")[1] for status, _ in bad} == {b"400"}
    assert health.status_code == 200
    assert waiting <= MAX_HEADS


async def test_a_slow_head_is_closed_after_head_timeout(tmp_path: Path) -> None:
    async with running_agent(tmp_path, web='port = 0\nhead_timeout = "300ms"') as run:
        async with held([await slow_head(run.web.port)]) as (stream,):
            closed = await answer(stream)  # bounded by answer's 10 s, well under the default
        # ... and the server goes on answering
        async with httpx.AsyncClient(base_url=run.url) as client:
            fine = await client.get("/api/state")
    assert closed.startswith(b"HTTP/1.1 408 ") and b"request head too slow" in closed
    assert fine.status_code == 200


@pytest.mark.slow
async def test_a_refused_event_stream_is_told_why(tmp_path: Path) -> None:
    async with (
        running_agent(tmp_path, web="port = 0\nmax_event_streams = 2") as run,
        held([]) as streams,
    ):
        for _ in range(2):
            status, stream = await event_stream(run.web.port)
            assert status.startswith(b"HTTP/1.1 200 ")
            streams.append(stream)
        status, stream = await event_stream(run.web.port)
        refused = status + await answer(stream)
        stream[1].close()
        streams.pop()[1].close()  # one page closes: its room is free again
        await until(lambda: run.web.event_streams == 1)
        status, stream = await event_stream(run.web.port)
        streams.append(stream)
    assert refused.startswith(b"HTTP/1.1 503 ")
    assert b"too many event streams (max 2, [web] max_event_streams)" in refused
    assert status.startswith(b"HTTP/1.1 200 ")


# -- soak: make soak ------------------------------------------------------------------------


async def probe_for(url: str, seconds: float) -> list[int]:
    """/healthz twice a second for `seconds`, each on a new connection."""
    codes = []
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() < end:
            codes.append((await client.get("/healthz")).status_code)
            await asyncio.sleep(0.5)
    return codes


async def crowd_member(port: int, refused: list[int]) -> None:
    """A page that keeps its event stream open; refused, someone reloads it a few seconds on
    (a browser's EventSource itself gives up on a 503)."""
    while True:
        status, (reader, writer) = await event_stream(port)
        try:
            if status.startswith(b"HTTP/1.1 200 "):
                while await reader.read(65536):
                    pass
            else:
                refused.append(1)
                await reader.read()
        except ConnectionError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(random.uniform(2.0, 8.0))


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_500_event_stream_clients_for_a_minute(tmp_path: Path) -> None:
    refused: list[int] = []
    async with running_agent(tmp_path) as run:
        limit = run.web.section.max_event_streams
        crowd = [asyncio.create_task(crowd_member(run.web.port, refused)) for _ in range(500)]
        try:
            await until(lambda: run.web.event_streams == limit, limit=60)
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, run.web.event_streams)
                    await asyncio.sleep(0.05)

            watcher = asyncio.create_task(watch())
            codes = await probe_for(run.url, 60)
            watcher.cancel()
        finally:
            for task in crowd:
                task.cancel()
            await asyncio.gather(*crowd, return_exceptions=True)
    assert codes and set(codes) == {200}, codes
    assert peak == limit
    assert refused  # the rest were told 503, not left hanging


async def slowloris(port: int, host: str) -> None:
    """One slowloris connection after another: a header line every second, never the end."""
    while True:
        reader, writer = await slow_head(port, host)
        try:
            for n in range(1000):
                if reader.at_eof() or writer.is_closing():
                    break
                writer.write(b"X-a%d: b\r\n" % n)
                await writer.drain()
                await asyncio.sleep(1.0)
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_slowloris_on_all_addresses_for_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_TOKEN", "s3cret-token")
    web = 'bind = "0.0.0.0"\nport = 0\ntoken_env = "LINESIDE_TEST_TOKEN"'
    async with running_agent(tmp_path, web=web) as run:
        # twice the cap: every connection the server makes room for is taken again at once
        attackers = [
            asyncio.create_task(slowloris(run.web.port, "127.0.0.1")) for _ in range(2 * MAX_HEADS)
        ]
        try:
            await until(lambda: run.web.waiting_heads == MAX_HEADS, limit=30)
            codes = await probe_for(run.url, 60)
            heads = run.web.waiting_heads
        finally:
            for task in attackers:
                task.cancel()
            await asyncio.gather(*attackers, return_exceptions=True)
    assert codes and set(codes) == {200}, codes
    assert heads <= MAX_HEADS

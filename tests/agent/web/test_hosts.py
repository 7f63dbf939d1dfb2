"""The Host header check against DNS rebinding, and header values that smuggle lines.

A page on `evil.example` whose name the attacker re-points at 127.0.0.1 makes the browser send
`Host: evil.example` to the agent: that request must not be answered with the plant's data.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.web.server import host_allowed, host_name
from tests.agent.web.running import running_agent


async def get(port: int, path: str, headers: bytes) -> bytes:
    """A GET with exactly these header lines (an HTTP client would set its own Host)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\n".encode() + headers + b"\r\n")
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    return answer


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_only_loopback_and_configured_names_are_answered(tmp_path: Path) -> None:
    web = 'port = 0\nallowed_hosts = ["Line3-Edge.plant.local"]'
    async with running_agent(tmp_path, web=web) as run:
        port = run.web.port
        hosts = [
            "evil.example",
            f"evil.example:{port}",
            "localhost.evil.example",
            f"localhost:{port}",
            "localhost",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            f"LINE3-EDGE.plant.local:{port}",
        ]
        answers = {
            (host, path): await get(port, path, f"Host: {host}\r\n".encode())
            for host in hosts
            for path in ("/", "/api/state", "/metrics")
        }
        missing = await get(port, "/api/state", b"")
        twice = await get(port, "/api/state", b"Host: localhost\r\nHost: evil.example\r\n")
        probe = await get(port, "/healthz", b"Host: evil.example\r\n")
    codes = {key: status(answer) for key, answer in answers.items()}
    assert {codes[h, p] for h in hosts[:3] for p in ("/", "/api/state", "/metrics")} == {421}
    assert {codes[h, p] for h in hosts[3:] for p in ("/", "/api/state", "/metrics")} == {200}
    refused = answers["evil.example", "/api/state"]
    assert refused.endswith(
        b"""{"error":"this page does not answer to 'evil.example': """
        b"""add it to [web] allowed_hosts"}"""
    )
    assert b"agent_id" not in refused
    assert status(missing) == 400 and b"missing or malformed Host header" in missing
    assert status(twice) == 400
    assert status(probe) == 200  # a liveness probe says nothing worth rebinding for


async def test_control_characters_in_a_header_are_400(tmp_path: Path) -> None:
    lines = [
        b"X-Note: a\x00b\r\n",
        b"Host: localhost\x00.evil.example\r\n",
        b"X-Note: a\rHost: evil.example\r\n",
        b"X-Note: a\nHost: evil.example\r\n",
        b"X-Note: \x7f\r\n",
    ]
    async with running_agent(tmp_path) as run:
        host = b"Host: localhost\r\n"
        answers = [await get(run.web.port, "/api/state", host + line) for line in lines]
        tab = await get(run.web.port, "/api/state", host + b"X-Note: a\tb\r\n")
    for answer in answers:
        assert status(answer) == 400 and b"control character in the request head" in answer
    assert status(tab) == 200  # a tab is allowed in a field value


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("localhost", "localhost"),
        ("LocalHost:8470", "localhost"),
        ("localhost:", "localhost"),
        ("127.0.0.1:8470", "127.0.0.1"),
        ("[::1]:8470", "::1"),
        ("[0:0::1]", "::1"),
        ("line3-edge.plant.local", "line3-edge.plant.local"),
        ("::1", None),  # IPv6 needs brackets
        ("[localhost]:80", None),
        ("[::1]x", None),
        ("localhost:http", None),
        ("localhost, evil.example", None),  # two Host lines, joined
        ("evil.example/", None),
        ("", None),
    ],
)
def test_host_name(value: str, host: str | None) -> None:
    assert host_name(value) == host


@pytest.mark.parametrize(
    ("host", "local", "allowed"),
    [
        ("localhost", None, True),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.2", "127.0.0.1", True),
        ("::1", "::1", True),
        ("10.0.0.5", "10.0.0.5", True),  # bound to 0.0.0.0, reached on the LAN by address
        ("10.0.0.5", "::ffff:10.0.0.5", True),  # the same through a "::" bind
        ("10.0.0.6", "10.0.0.5", False),
        ("line3-edge.plant.local", "10.0.0.5", True),
        ("line4-edge.plant.local", "10.0.0.5", False),
        ("evil.example", "127.0.0.1", False),
    ],
)
def test_host_allowed(host: str, local: str | None, allowed: bool) -> None:
    assert host_allowed(host, frozenset({"line3-edge.plant.local"}), local) is allowed

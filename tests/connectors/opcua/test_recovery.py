"""Recovery of the OPC UA source under the agent's link loop: restart, network cut, stall.

Everything is real: the simulated server (in this process, or in a subprocess that can be
SIGSTOPped, or SIGKILLed and started again on its port), a TCP relay that can cut every
connection, and `run_link` reconnecting with its own back-off. Timings are the real clock's:
the assertions are the issue's bounds (recovery within 10 s of the server coming back, a stall
noticed within the configured timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.errors import ConnectError
from agent.model import Event, Quality, ReadingBatch
from agent.poller import Backoff, LinkStatistics, run_link
from connectors.opcua.source import OpcUaSource
from tests.connectors.opcua.sim import make_config, make_source, start_server
from tests.waiting import until

TIMEOUT = 1.0  # the source's timeout: each connect attempt, each request, stall detection


@dataclass
class Link:
    """A source under `run_link`, and what it emitted, with the monotonic time of each batch."""

    source: OpcUaSource
    stats: LinkStatistics = field(default_factory=LinkStatistics)
    batches: list[tuple[float, ReadingBatch]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def since(self, t: float) -> list[ReadingBatch]:
        return [b for at, b in self.batches if at >= t]

    def good_since(self, t: float) -> bool:
        return any((b.quality == Quality.GOOD).any() for b in self.since(t))

    def bad_since(self, t: float) -> bool:
        return any((b.quality == Quality.BAD).all() and len(b) for b in self.since(t))

    def first_bad_since(self, t: float) -> float:
        """When the first all-bad batch at or after `t` was emitted (inf: none yet)."""
        return next(
            (
                at
                for at, b in self.batches
                if at >= t and len(b) and (b.quality == Quality.BAD).all()
            ),
            math.inf,
        )

    def good_between(self, start: float, end: float) -> bool:
        return any(
            start <= at < end and (b.quality == Quality.GOOD).any() for at, b in self.batches
        )


def good_tags(link: Link, since: float) -> set[int]:
    """The tag ids `link` read good at least once since `since`."""
    return {
        int(i)
        for b in link.since(since)
        for i, q in zip(b.tag_ids, b.quality, strict=True)
        if q == Quality.GOOD
    }


@contextlib.asynccontextmanager
async def running(source: OpcUaSource) -> AsyncIterator[Link]:
    link = Link(source)
    task = asyncio.create_task(
        run_link(
            source,
            SystemClock(),
            lambda b: link.batches.append((time.monotonic(), b)),
            link.events.append,
            stats=link.stats,
            backoff=Backoff(initial=0.2, maximum=1.0),
        )
    )
    try:
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def reconnected(link: Link, times: int) -> bool:
    return link.stats.connects > times


def counter_tags(ns: int) -> list[dict[str, object]]:
    return [{"name": "level", "node_id": f"ns={ns};s=m1.level"}]


class Relay:
    """A TCP relay to the server whose `cut()` drops every connection: a network cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            transport = writer.transport
            transport.abort()
        self._writers = []

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.mark.slow
async def test_server_restart_reads_bad_meanwhile_and_resubscribes_within_10s() -> None:
    server = await start_server()
    port = int(server.endpoint.rstrip("/").rsplit(":", 1)[1])
    ns = server.namespace_index
    config = make_config(server.endpoint, counter_tags(ns), interval="100ms", timeout="1s")
    source, _ = make_source(config)
    try:
        async with running(source) as link:
            await until(lambda: link.good_since(0))
            assert server.subscription_count == 1
            await server.stop()
            down = time.monotonic()
            await until(lambda: link.bad_since(down), limit=5)
            assert not link.good_since(down + 0.5)  # never stale good readings while down
            server = await start_server(port=port)
            back = time.monotonic()
            await until(lambda: link.good_since(back), limit=10)
            assert time.monotonic() - back < 10
            assert server.subscription_count == 1
            assert link.stats.disconnects >= 1 and link.stats.connects >= 2
    finally:
        await server.stop()


@pytest.mark.slow
async def test_five_network_cuts_leave_no_subscriptions_behind() -> None:
    server = await start_server()
    relay = Relay(int(server.endpoint.rstrip("/").rsplit(":", 1)[1]))
    await relay.start()
    ns = server.namespace_index
    endpoint = f"opc.tcp://127.0.0.1:{relay.port}/"
    config = make_config(endpoint, counter_tags(ns), interval="100ms", timeout="1s")
    source, _ = make_source(config)
    try:
        async with running(source) as link:
            await until(lambda: link.good_since(0))
            for cut in range(1, 6):
                relay.cut()  # the server keeps the old session and its subscription (Part 4 6.7)
                t = time.monotonic()
                await until(partial(reconnected, link, cut), limit=10)
                await until(partial(link.good_since, t), limit=10)
                # The lost session's subscription was transferred and deleted: never more than
                # the one live subscription (+ at most the one just lost, before reclaim).
                assert server.subscription_count <= 2
            await until(lambda: server.subscription_count == 1, limit=5)
            assert source.statistics().extras["reclaimed_subscriptions"] >= 4
    finally:
        await relay.stop()
        await server.stop()


# argv: the port (0: any), and how many subscriptions another client (asyncua's own) holds
# before the endpoint is printed: they take the ids a previous run gave out first.
SUBPROCESS_SERVER = """
import asyncio, sys
from asyncua import Client, ua
from tests.connectors.opcua.sim import start_server

async def main():
    server = await start_server(port=int(sys.argv[1]))
    subs = await server.add_variable("m1", "subscriptions", ua.Variant(0, ua.VariantType.Int32))
    other = Client(server.endpoint)
    if int(sys.argv[2]):
        await other.connect()
    for _ in range(int(sys.argv[2])):
        await other.create_subscription(1000, None)
    print(server.endpoint, server.namespace_index, flush=True)
    node = f"ns={server.namespace_index};s=m1.level"
    n = 0.0
    while True:
        n += 1
        await server.write_variable(node, ua.Variant(n, ua.VariantType.Double))
        count = ua.Variant(server.subscription_count, ua.VariantType.Int32)
        await server.write_variable(subs, count)
        await asyncio.sleep(0.1)

asyncio.run(main())
"""
# The project root, so the subprocess imports this checkout whatever the working directory.
ROOT = str(Path(__file__).resolve().parents[3])


@dataclass(frozen=True)
class ServerProcess:
    """The simulated server in its own process: `m1.level` counts up every 100 ms and
    `m1.subscriptions` says how many subscriptions the server holds (of every session)."""

    process: asyncio.subprocess.Process
    endpoint: str
    namespace_index: int

    @property
    def port(self) -> int:
        return int(self.endpoint.rstrip("/").rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def server_process(port: int = 0, others: int = 0) -> AsyncIterator[ServerProcess]:
    """A server process listening on `port` (0: any free one) when this yields, another client
    holding `others` subscriptions on it; ended after."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SUBPROCESS_SERVER,
        str(port),
        str(others),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, f"the server process exited ({await proc.wait()}) before listening"
        endpoint, ns = line.decode().split()
        yield ServerProcess(proc, endpoint, int(ns))
    finally:
        if proc.returncode is None:  # never signal a pid already reaped (it may be reused)
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        await proc.wait()


def subscriptions_read(link: Link, subs_id: int, since: float) -> list[float]:
    """The server's subscription counts read good by `link` (tag `subs_id`) since `since`."""
    return [
        float(v)
        for b in link.since(since)
        for i, v, q in zip(b.tag_ids, b.values, b.quality, strict=True)
        if i == subs_id and q == Quality.GOOD
    ]


@pytest.mark.slow
async def test_a_stalled_server_is_noticed_within_the_timeout_and_recovered() -> None:
    async with server_process() as server:
        ns = server.namespace_index
        tags = [
            {"name": "level", "node_id": f"ns={ns};s=m1.level"},
            {"name": "subs", "node_id": f"ns={ns};s=m1.subscriptions", "mode": "poll"},
        ]
        config = make_config(server.endpoint, tags, interval="100ms", timeout=f"{TIMEOUT}s")
        source, table = make_source(config)
        subs_id = table.id_of("m1", "subs")
        proc = server.process

        def counted_since(link: Link, since: float) -> bool:
            return len(subscriptions_read(link, subs_id, since)) > 3

        async with running(source) as link:
            await until(lambda: link.good_since(0), limit=10)
            for _ in range(2):
                os.kill(proc.pid, signal.SIGSTOP)
                stopped = time.monotonic()
                await until(lambda: link.stats.state == "lost", limit=3 * TIMEOUT)
                noticed = time.monotonic() - stopped
                assert noticed <= 2 * TIMEOUT + 0.5, noticed
                # Bad readings follow the next due poll; a wide margin for a loaded box (the
                # bound that matters, noticing the stall, is asserted above).
                await until(partial(link.bad_since, stopped), limit=5 * TIMEOUT)
                await asyncio.sleep(0.5)
                os.kill(proc.pid, signal.SIGCONT)
                resumed = time.monotonic()
                await until(lambda: link.stats.state == "connected", limit=10)
                await until(partial(counted_since, link, resumed), limit=10)
            # The session lost to each stall left its subscription on the server; reclaimed.
            settled = time.monotonic()
            await asyncio.sleep(0.5)
            counts = subscriptions_read(link, subs_id, settled)
            assert counts and counts[-1] == 1.0, counts


@pytest.mark.slow
async def test_a_killed_server_process_reads_bad_and_a_new_one_gets_every_subscription() -> None:
    """SIGKILL the server process, start a new one on its port: a subscriber of two
    subscriptions, a second subscriber and a poller read bad meanwhile (never a stale good
    value), then all recover within 10 s of the new process listening, and the new server holds
    exactly the three subscriptions they recreated besides another client's three, which took
    the ids the first run gave ours: a stale id must not reclaim (delete) them."""
    async with server_process() as first:
        ns = first.namespace_index
        level = {"name": "level", "node_id": f"ns={ns};s=m1.level"}
        slow = {"name": "f64", "node_id": f"ns={ns};s=m1.f64", "interval": "300ms"}
        subs = {"name": "subs", "node_id": f"ns={ns};s=m1.subscriptions"}
        timing = {"interval": "100ms", "timeout": f"{TIMEOUT}s"}
        configs = [  # subscriptions: 2 (one per interval), 1, 0
            make_config(first.endpoint, [level, slow], name="subscriber", **timing),
            make_config(first.endpoint, [level], name="subscriber2", **timing),
            make_config(first.endpoint, [level, subs], name="poller", mode="poll", **timing),
        ]
        made = [make_source(config) for config in configs]
        subs_id = made[2][1].id_of("m1", "subs")
        ours = 3

        async with contextlib.AsyncExitStack() as stack:
            links = [await stack.enter_async_context(running(source)) for source, _ in made]
            poller = links[2]

            def all_good_since(t: float) -> bool:
                # Every tag of every link, so every subscription (group) delivered.
                return all(
                    good_tags(link, t) == {tag.id for tag in table}
                    for link, (_, table) in zip(links, made, strict=True)
                )

            def counted(t: float, expected: int) -> bool:
                return subscriptions_read(poller, subs_id, t)[-1:] == [expected]

            await until(lambda: all_good_since(0) and counted(0, ours), limit=10)

            os.kill(first.process.pid, signal.SIGKILL)
            killed = time.monotonic()
            assert await first.process.wait() == -signal.SIGKILL
            # Down: every link notices (the socket closes: no timeout needed) and retries in
            # vain at least twice, reading bad.
            await until(lambda: all(link.stats.connect_failures >= 2 for link in links))
            noticed = [link.first_bad_since(killed) for link in links]
            assert max(noticed) - killed < 0.5, [n - killed for n in noticed]

            async with server_process(first.port, others=ours) as second:
                back = time.monotonic()
                # Never a stale good value: bad from the notice until the new process listened.
                for link, at in zip(links, noticed, strict=True):
                    assert not link.good_between(at, back), link.source.name
                await until(lambda: all_good_since(back), limit=10)
                expected = ours + ours
                await until(partial(counted, back, expected), limit=10 - (time.monotonic() - back))
                recovered = time.monotonic() - back
                assert recovered < 10, recovered
                assert second.endpoint == first.endpoint
                # Exactly the expected subscriptions, and it stays so (no late pile-up).
                settled = time.monotonic()
                await until(lambda: len(subscriptions_read(poller, subs_id, settled)) >= 5)
                assert set(subscriptions_read(poller, subs_id, settled)) == {expected}
                for link, subscriptions in zip(links, [2, 1, 0], strict=True):
                    stats = link.source.statistics()
                    assert link.stats.connects == 2 and link.stats.disconnects == 1
                    assert stats.extras["subscriptions"] == 2 * subscriptions, link.source.name


async def test_connect_to_nothing_fails_within_the_timeout() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = make_config(
        f"opc.tcp://127.0.0.1:{port}/", [{"name": "a", "node_id": "ns=2;s=a"}], timeout="1s"
    )
    source, _ = make_source(config)
    started = time.monotonic()
    with pytest.raises(ConnectError):
        await source.connect()
    assert time.monotonic() - started < 5.0  # no hang, no retry loop
    with pytest.raises(ConnectError, match="not connected"):
        await source.poll(list(source.poll_groups()))
    assert source.bad_batches(list(source.poll_groups()), 5)[0].quality.tolist() == [Quality.BAD]


@pytest.mark.slow
async def test_nsu_node_ids_resolve_through_the_namespace_array_again_after_a_restart() -> None:
    """`nsu=<uri>;s=...` reads by the URI's index on the server, whichever it is this run."""
    server = await start_server()
    port = int(server.endpoint.rstrip("/").rsplit(":", 1)[1])
    uri = server.namespace
    tags = [
        {"name": "level", "node_id": f"nsu={uri};s=m1.level"},  # subscribed
        {"name": "i16", "node_id": f"nsu={uri};s=m1.i16", "mode": "poll"},
        {"name": "gone", "node_id": "nsu=urn:not-here;s=m1.level", "mode": "poll"},
    ]
    config = make_config(server.endpoint, tags, interval="100ms", timeout="1s")
    source, table = make_source(config)
    ids = {t.name: t.id for t in table}

    def read_good(link: Link, since: float) -> bool:
        return {ids["level"], ids["i16"]} <= good_tags(link, since)

    try:
        async with running(source) as link:
            await until(lambda: read_good(link, 0))
            assert ids["gone"] not in good_tags(link, 0)
            assert source.statistics().extras["errors_bad_node"] == 1
            await server.stop()
            # The next run registers two namespaces first: ours moves from index 2 to 4.
            server = await start_server(port=port, extra_namespaces=["urn:a", "urn:b"])
            assert server.namespace_index == 4
            back = time.monotonic()
            await until(partial(reconnected, link, 1), limit=10)
            await until(lambda: read_good(link, back), limit=10)
            i16 = [
                float(v)
                for b in link.since(back)
                for i, v, q in zip(b.tag_ids, b.values, b.quality, strict=True)
                if i == ids["i16"] and q == Quality.GOOD
            ]
            assert i16 and i16[-1] == -32768.0
    finally:
        await server.stop()

"""The forwarder with a real store and a scripted sink: order, acks, outages, quarantine."""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from agent.clock import SystemClock
from agent.errors import ConnectError, SinkRejected
from agent.forward import Forwarder
from agent.lane import ForwardSettings
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import GapRecord, Record
from agent.statistics import SinkStatistics
from agent.store import Store, StoreWriter, db_path
from agent.tags import Tag
from tests.waiting import until

FAST = ForwardSettings(batch_size=7, idle_wait=0.01)


class ScriptedSink:
    """Accepts records unless told to be down or to refuse a seq."""

    name = "mes"

    def __init__(self) -> None:
        self.received: list[Record] = []
        self.down = 0  # how many more sends fail with ConnectError
        self.refuse: set[int] = set()  # telemetry seqs refused as invalid
        self.connects = 0

    async def connect(self) -> None:
        self.connects += 1

    async def send(self, records: Sequence[Record]) -> None:
        if self.down:
            self.down -= 1
            raise ConnectError("broker unreachable")
        for i, record in enumerate(records):
            if record.stream == "telemetry" and record.seq in self.refuse:
                self.received.extend(records[:i])
                raise SinkRejected(f"seq {record.seq} is not valid", index=i)
        self.received.extend(records)

    async def close(self) -> None:
        pass

    def statistics(self) -> SinkStatistics:
        return SinkStatistics()


def fill(tmp_path: Path, batches: int, ts_ns: int | None = None, stored_ago_s: float = 0.0) -> None:
    """`batches` telemetry records and one event, stamped `ts_ns` (default now) by the device
    and stored `stored_ago_s` ago by the agent."""
    with Store(tmp_path) as store:
        store.register_tags([Tag(path="s/a/l/m/t", machine="m", name="t")])
        store.register_sinks(["mes"])
    writer = StoreWriter(tmp_path, clock=lambda: SystemClock().time_ns() - int(stored_ago_s * 1e9))
    try:
        for i in range(batches):
            ts = ts_ns if ts_ns is not None else SystemClock().time_ns()
            writer.submit_readings(ReadingBatch.from_columns("plc", [1], [i], Quality.GOOD, ts))
        now = SystemClock().time_ns()
        writer.submit_event(Event(EventKind.ALARM, ts_ns=now, machine="m", data={"code": 7}))
        assert writer.flush_blocking(10)
    finally:
        writer.close()


async def run_until(forwarder: Forwarder, condition, limit_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(forwarder.run())
    try:
        async with asyncio.timeout(limit_s):
            # The sink is filled from the forwarder's task and the writer thread: poll it.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def telemetry_seqs(sink: ScriptedSink) -> list[int]:
    return [r.seq for r in sink.received if r.stream == "telemetry"]


async def test_everything_arrives_in_order_and_the_cursor_follows(tmp_path: Path) -> None:
    fill(tmp_path, 30)
    sink = ScriptedSink()
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(sink, store, writer, SystemClock(), FAST)
    await run_until(forwarder, lambda: len(sink.received) == 31)
    assert telemetry_seqs(sink) == list(range(1, 31))
    assert [r.stream for r in sink.received].count("events") == 1
    assert not any(r.historical for r in sink.received)
    await writer.flush()
    assert store.cursor("mes", "telemetry") == 30
    assert store.cursor("mes", "events") == 1
    assert forwarder.stats.sent["telemetry"] == 30
    # a restart resumes after the cursor: nothing is sent twice
    again = ScriptedSink()
    restarted = Forwarder(again, store, writer, SystemClock(), FAST)
    task = asyncio.create_task(restarted.run())
    await asyncio.sleep(0.3)  # many idle looks at the store
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert again.received == []
    writer.close()
    store.close()


async def test_an_outage_holds_data_then_delivers_all_in_order(tmp_path: Path) -> None:
    fill(tmp_path, 20)
    sink = ScriptedSink()
    sink.down = 3
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(sink, store, writer, SystemClock(), FAST)
    forwarder._backoff.initial = 0.01  # keep the test short; back-off itself is tested elsewhere
    await run_until(forwarder, lambda: len(telemetry_seqs(sink)) == 20)
    assert telemetry_seqs(sink) == list(range(1, 21))
    assert forwarder.stats.failures == 3
    assert forwarder.stats.last_error == "broker unreachable"
    assert forwarder.stats.state == "connected"
    writer.close()
    store.close()


async def test_a_refused_record_is_quarantined_and_never_blocks(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    sink = ScriptedSink()
    sink.refuse = {4}
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(sink, store, writer, SystemClock(), FAST)
    await run_until(forwarder, lambda: 10 in telemetry_seqs(sink))
    assert telemetry_seqs(sink) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    await writer.flush()  # the quarantine row goes through the writer like every write
    [entry] = store.quarantined("mes")
    assert (entry.stream, entry.seq, entry.reason) == ("telemetry", 4, "seq 4 is not valid")
    assert forwarder.stats.quarantined == 1
    # the operator fixed the far side and asks for a retry
    sink.refuse.clear()
    assert store.request_retry("mes") == 1
    await run_until(forwarder, lambda: 4 in telemetry_seqs(sink))
    await writer.flush()
    assert store.quarantined("mes") == []
    writer.close()
    store.close()


async def test_quarantining_never_waits_for_the_disk_on_the_event_loop(tmp_path: Path) -> None:
    """Another connection holds the write lock: the refused record is quarantined through the
    writer thread, so the forwarder goes on delivering (a write on the event loop would wait
    out SQLite's busy timeout, then fail)."""
    fill(tmp_path, 10)
    sink = ScriptedSink()
    sink.refuse = {4}
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(sink, store, writer, SystemClock(), FAST)
    blocker = sqlite3.connect(db_path(tmp_path), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        await run_until(forwarder, lambda: 10 in telemetry_seqs(sink), limit_s=5.0)
        assert telemetry_seqs(sink) == [1, 2, 3, 5, 6, 7, 8, 9, 10]
        assert forwarder.stats.quarantined == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await writer.flush()
    [entry] = store.quarantined("mes")
    assert (entry.stream, entry.seq) == ("telemetry", 4)
    assert store.cursor("mes", "telemetry") == 10
    writer.close()
    store.close()


async def test_old_records_go_out_as_historical(tmp_path: Path) -> None:
    old = SystemClock().time_ns() - 3600 * 10**9
    fill(tmp_path, 5, ts_ns=old, stored_ago_s=3600)
    sink = ScriptedSink()
    store, writer = Store(tmp_path), StoreWriter(tmp_path)
    forwarder = Forwarder(sink, store, writer, SystemClock(), FAST)
    await run_until(forwarder, lambda: len(telemetry_seqs(sink)) == 5)
    telemetry = [r for r in sink.received if r.stream == "telemetry"]
    assert all(r.historical for r in telemetry)
    assert forwarder.stats.historical >= 5
    assert np.array_equal(telemetry[2].batch.values, [2.0])  # type: ignore[union-attr]
    writer.close()
    store.close()


@pytest.mark.slow
async def test_live_records_flow_while_a_backlog_replays_at_its_rate(tmp_path: Path) -> None:
    old = SystemClock().time_ns() - 3600 * 10**9
    fill(tmp_path, 40, ts_ns=old, stored_ago_s=3600)  # seqs 1..40: an hour-old backlog
    writer = StoreWriter(tmp_path)
    for i in range(5):  # seqs 41..45: live
        now = SystemClock().time_ns()
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [100 + i], Quality.GOOD, now))
    await writer.flush()
    sink = ScriptedSink()
    store = Store(tmp_path)
    settings = ForwardSettings(batch_size=10, idle_wait=0.01, replay_rate=20.0)
    forwarder = Forwarder(sink, store, writer, SystemClock(), settings)
    await run_until(forwarder, lambda: {41, 42, 43, 44, 45} <= set(telemetry_seqs(sink)))
    first = [r for r in sink.received if r.stream == "telemetry"]
    live = [r for r in first if r.seq > 40]
    assert live and not any(r.historical for r in live), "live records go out live"
    assert len([r for r in first if r.seq <= 40]) <= 10, "the backlog waits for its rate"
    await writer.flush()
    assert store.cursor("mes", "telemetry") < 41, "the cursor never skips the backlog"
    await run_until(forwarder, lambda: set(range(1, 46)) <= set(telemetry_seqs(sink)))
    backlog = [r for r in sink.received if r.stream == "telemetry" and r.seq <= 40]
    assert all(r.historical for r in backlog)
    assert [r.seq for r in backlog] == list(range(1, 41)), "the backlog keeps its order"
    await writer.flush()
    assert store.cursor("mes", "telemetry") == 45
    writer.close()
    store.close()


class GatedSink:
    """Two sends may be in flight (`concurrent_sends`); each waits until the test answers it."""

    name = "mes"
    concurrent_sends = 2

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], asyncio.Future[None]]] = []
        self.received: list[int] = []

    async def connect(self) -> None:
        pass

    async def send(self, records: Sequence[Record]) -> None:
        seqs = [r.seq for r in records]
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.calls.append((seqs, answer))
        await answer
        self.received.extend(seqs)

    async def close(self) -> None:
        pass

    def statistics(self) -> SinkStatistics:
        return SinkStatistics()


@contextlib.asynccontextmanager
async def forwarding(
    sink: ScriptedSink | GatedSink,
    tmp_path: Path,
    settings: ForwardSettings = FAST,
    flush_interval: float | None = None,
    store: Store | None = None,
) -> AsyncIterator[tuple[Forwarder, Store, StoreWriter]]:
    """A forwarder running over the store in `tmp_path` (or `store`, opened on it); stopped,
    and its store closed, on exit."""
    store = Store(tmp_path) if store is None else store
    writer = (
        StoreWriter(tmp_path)
        if flush_interval is None
        else StoreWriter(tmp_path, flush_interval=flush_interval)
    )
    forwarder = Forwarder(sink, store, writer, SystemClock(), settings)
    forwarder._backoff.initial = 0.01  # keep the tests short; back-off itself is tested elsewhere
    task = asyncio.create_task(forwarder.run())
    try:
        yield forwarder, store, writer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        store.close()


async def test_two_sends_in_flight_the_cursor_moves_in_order_on_acknowledgement(
    tmp_path: Path,
) -> None:
    fill(tmp_path, 21)  # and one event, on its own lane
    sink = GatedSink()
    async with forwarding(sink, tmp_path) as (forwarder, store, writer):
        await until(lambda: len([c for c in sink.calls if len(c[0]) == 7]) == 2)
        telemetry = [c for c in sink.calls if len(c[0]) == 7]
        assert [seqs for seqs, _ in telemetry] == [list(range(1, 8)), list(range(8, 15))]
        await asyncio.sleep(0.1)
        assert len([c for c in sink.calls if len(c[0]) == 7]) == 2, "at most two in flight"
        telemetry[1][1].set_result(None)  # the second is acknowledged first
        await asyncio.sleep(0.1)
        await writer.flush()
        assert store.cursor("mes", "telemetry") == 0, "the cursor waits for the first"
        telemetry[0][1].set_result(None)
        await until(lambda: len([c for c in sink.calls if len(c[0]) == 7]) == 3)
        await until(lambda: forwarder.stats.sent["telemetry"] == 14)
        await writer.flush()
        assert store.cursor("mes", "telemetry") == 14
        third = [c for c in sink.calls if len(c[0]) == 7][2]
        assert third[0] == list(range(15, 22))
        third[1].set_exception(ConnectError("connection lost"))  # fails: sent again
        await until(lambda: len([c for c in sink.calls if len(c[0]) == 7]) == 4)
        again = [c for c in sink.calls if len(c[0]) == 7][3]
        assert again[0] == list(range(15, 22))
        again[1].set_result(None)
        await until(lambda: forwarder.stats.sent["telemetry"] == 21)
        await writer.flush()
        assert store.cursor("mes", "telemetry") == 21
        assert forwarder.stats.failures == 1


async def test_a_failed_first_send_takes_the_one_behind_it_along(tmp_path: Path) -> None:
    fill(tmp_path, 14)
    sink = GatedSink()
    async with forwarding(sink, tmp_path) as (forwarder, store, writer):
        await until(lambda: len([c for c in sink.calls if len(c[0]) == 7]) == 2)
        first, second = [c for c in sink.calls if len(c[0]) == 7]
        first[1].set_exception(ConnectError("connection lost"))
        # The second was abandoned with the first: both go again, in order.
        await until(lambda: len([c for c in sink.calls if len(c[0]) == 7]) == 4)
        assert second[1].cancelled()
        resent = [seqs for seqs, _ in sink.calls if len(seqs) == 7][2:]
        assert resent == [list(range(1, 8)), list(range(8, 15))]
        for _, answer in [c for c in sink.calls if len(c[0]) == 7][2:]:
            answer.set_result(None)
        await until(lambda: forwarder.stats.sent["telemetry"] == 14)
        assert sink.received == list(range(1, 15))  # the event's send is never answered
        await writer.flush()
        assert store.cursor("mes", "telemetry") == 14


async def test_a_commit_wakes_an_idle_lane_at_once(tmp_path: Path) -> None:
    fill(tmp_path, 1)
    sink = ScriptedSink()
    lazy = ForwardSettings(batch_size=7, idle_wait=60.0)  # polling alone would take a minute
    async with forwarding(sink, tmp_path, lazy, flush_interval=0.01) as (_, _, writer):
        await until(lambda: telemetry_seqs(sink) == [1])
        await asyncio.sleep(0.1)  # every lane idle now
        now = SystemClock().time_ns()
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [5.0], Quality.GOOD, now))
        await until(lambda: telemetry_seqs(sink) == [1, 2], limit=5.0)
        # A commit wakes the lane of the stream it wrote to: the events lane for an event.
        writer.submit_event(Event(EventKind.ALARM, ts_ns=now, machine="m", data={"code": 8}))
        await until(lambda: [r.seq for r in sink.received if r.stream == "events"] == [1, 2], 5.0)


async def test_a_commit_goes_out_while_the_send_before_it_awaits_its_answer(
    tmp_path: Path,
) -> None:
    # A live record must not wait for the previous send's acknowledgement (a broker may hold
    # a PUBACK for a delayed ack) while the sink has room for another send in flight.
    fill(tmp_path, 1)  # and one event, on its own lane
    sink = GatedSink()
    lazy = ForwardSettings(batch_size=7, idle_wait=60.0)  # no looking again but on a commit
    async with forwarding(sink, tmp_path, lazy, flush_interval=0.01) as (forwarder, store, writer):
        await until(lambda: [seqs for seqs, _ in sink.calls].count([1]) == 2)
        now = SystemClock().time_ns()
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [5.0], Quality.GOOD, now))
        await until(lambda: [2] in [seqs for seqs, _ in sink.calls], limit=5.0)
        assert not any(answer.done() for _, answer in sink.calls), "nothing answered yet"
        await writer.flush()
        assert store.cursor("mes", "telemetry") == 0
        for _, answer in sink.calls:
            answer.set_result(None)
        await until(lambda: forwarder.stats.sent["telemetry"] == 2)
        await writer.flush()
        await until(lambda: store.cursor("mes", "telemetry") == 2)


async def test_a_record_goes_to_a_sink_only_once_it_is_committed(tmp_path: Path) -> None:
    fill(tmp_path, 0)
    sink = ScriptedSink()
    # A long flush interval: after a commit, what is submitted waits for the next one.
    async with forwarding(sink, tmp_path, flush_interval=30) as (_, _, writer):
        now = SystemClock().time_ns()
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [1.0], Quality.GOOD, now))
        await writer.flush()
        await until(lambda: telemetry_seqs(sink) == [1])
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [2.0], Quality.GOOD, now))
        await asyncio.sleep(0.2)  # the lanes look many times (idle_wait 0.01 s)
        assert writer.statistics().pending_batches == 1
        assert telemetry_seqs(sink) == [1], "sent before its commit"
        await writer.flush()
        await until(lambda: telemetry_seqs(sink) == [1, 2])


def poll_of(i: int, readings: int = 50, ago_s: float = 0.0) -> ReadingBatch:
    ts = SystemClock().time_ns() - int(ago_s * 1e9)
    return ReadingBatch.from_columns(
        "plc", np.ones(readings, dtype=np.int32), np.full(readings, float(i)), Quality.GOOD, ts
    )


def accounted(sink: ScriptedSink) -> tuple[list[int], list[int]]:
    """The telemetry seqs the sink received (once each) and those its gap records named."""
    delivered = sorted(set(telemetry_seqs(sink)))
    named = [
        seq
        for r in sink.received
        if isinstance(r, GapRecord) and r.of_stream == "telemetry"
        for seq in range(r.first_seq or 0, (r.last_seq or -1) + 1)
    ]
    return delivered, sorted(named)


async def test_a_hole_the_size_bound_punched_behind_the_cursor_is_crossed(tmp_path: Path) -> None:
    fill(tmp_path, 0)
    sink = ScriptedSink()
    settings = ForwardSettings(batch_size=20, idle_wait=0.01, live_window=0.2)
    store = Store(tmp_path)
    # During the outage the plant's records are an hour old when the far side is back: the
    # writer's clock stores them an hour back, the device stamps them so too.
    ago = [0.0]
    writer = StoreWriter(
        tmp_path,
        max_bytes=150_000,
        housekeeping_interval=0,
        flush_interval=0.01,
        clock=lambda: SystemClock().time_ns() - int(ago[0] * 1e9),
    )
    forwarder = Forwarder(sink, store, writer, SystemClock(), settings)
    forwarder._backoff.initial = 0.01
    task = asyncio.create_task(forwarder.run())

    async def write(first: int, count: int) -> int:
        for i in range(first, first + count):
            writer.submit_readings(poll_of(i, ago_s=ago[0]))
            if i % 20 == 19:
                await writer.flush()
        return (await writer.flush())["telemetry"]

    polled = [0]

    async def polling(first: int) -> int:
        polled[0] = first
        while True:
            writer.submit_readings(poll_of(polled[0]))
            polled[0] += 1
            await asyncio.sleep(0.005)

    async def all_accounted(last: int) -> None:
        """Every record delivered or named in a gap record, never both, and the cursor at
        the end: the lane crossed every hole."""
        await until(lambda: store.cursor("mes", "telemetry") == last)
        gaps = len(store.read_gaps(0, 1000))
        await until(lambda: len([r for r in sink.received if isinstance(r, GapRecord)]) == gaps)
        delivered, named = accounted(sink)
        assert len(named) == len(set(named)), "a seq named by two gap records"
        assert not set(named) & set(delivered), "a delivered record reported lost"
        assert sorted(delivered + named) == list(range(1, last + 1))
        assert writer.statistics().dropped_by_sink.get("mes", 0) == len(named)

    try:
        last = await write(0, 20)
        await all_accounted(last)
        sink.down = 10**9  # the far side goes away; the store overflows behind the cursor
        ago[0] = 3600.0
        i = 20
        while writer.statistics().dropped_batches == 0:
            await write(i, 20)
            i += 20
        last = await write(i, 100)  # and more after the hole
        i += 100
        ago[0] = 0.0
        sink.down = 0
        # The plant keeps polling through the reconnect: live records keep coming.
        plant = asyncio.create_task(polling(i))
        await until(lambda: store.cursor("mes", "telemetry") >= last)
        plant.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await plant
        i = polled[0]
        last = (await writer.flush())["telemetry"]
        await all_accounted(last)
        assert accounted(sink)[1], "the outage dropped records"
        # After the outage the size bound deletes what was delivered first, with no gap record.
        named_before = accounted(sink)[1]
        deleted = writer.statistics().deleted_records
        while writer.statistics().deleted_records == deleted:
            last = await write(i, 20)
            i += 20
        await all_accounted(last)
        assert accounted(sink)[1] == named_before
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        store.close()


async def test_a_record_stored_now_goes_live_whatever_its_device_timestamp(
    tmp_path: Path,
) -> None:
    # An OPC UA value that rarely changes keeps an old SourceTimestamp: its record is current.
    stale = SystemClock().time_ns() - 1583 * 10**9
    fill(tmp_path, 5, ts_ns=stale, stored_ago_s=3600)  # seqs 1..5: a backlog
    fill(tmp_path, 2, ts_ns=stale)  # seqs 6..7: stored now, stamped long ago
    sink = ScriptedSink()
    async with forwarding(sink, tmp_path):
        await until(lambda: len(telemetry_seqs(sink)) == 7)
        telemetry = [r for r in sink.received if r.stream == "telemetry"]
        assert [r.seq for r in telemetry if not r.historical] == [6, 7]
        assert [r.seq for r in telemetry if r.historical] == [1, 2, 3, 4, 5]
        assert [r.seq for r in telemetry][:2] == [6, 7], "live records go first"
        events = [r for r in sink.received if r.stream == "events"]
        assert {r.seq: r.historical for r in events} == {1: True, 2: False}


async def test_oldest_unsent_age_is_how_long_ago_the_agent_stored_it(tmp_path: Path) -> None:
    stale = SystemClock().time_ns() - 1583 * 10**9
    fill(tmp_path, 1, ts_ns=stale, stored_ago_s=1.0)
    with Store(tmp_path) as store:
        age = store.stats().oldest_unsent_age_s["mes"]["telemetry"]
    assert age is not None and 1.0 <= age < 60.0


async def test_a_lane_that_connects_again_wakes_the_others_from_their_back_off(
    tmp_path: Path,
) -> None:
    fill(tmp_path, 5)  # and one event: two lanes with something to send
    sink = ScriptedSink()
    sink.down = 2  # each lane's first send fails
    async with forwarding(sink, tmp_path) as (forwarder, _, _):
        # The first lane to fail waits 50 ms at most, the second 25 s or more: it goes again as
        # soon as the first got through, not when its own back-off ends.
        forwarder._backoff.initial, forwarder._backoff.factor = 0.05, 1000.0
        await until(lambda: len(sink.received) == 6)
        assert forwarder.stats.failures == 2


class CountingStore(Store):
    """The real store, counting the forwarder's reads of it."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.reads = {"telemetry": 0, "events": 0, "gaps": 0, "boundary": 0}

    def read_telemetry_run(self, after_seq: int, limit: int):  # type: ignore[no-untyped-def]
        self.reads["telemetry"] += 1
        return super().read_telemetry_run(after_seq, limit)

    def read_events(self, after_seq: int, limit: int):  # type: ignore[no-untyped-def]
        self.reads["events"] += 1
        return super().read_events(after_seq, limit)

    def read_gaps(self, after_seq: int, limit: int):  # type: ignore[no-untyped-def]
        self.reads["gaps"] += 1
        return super().read_gaps(after_seq, limit)

    def live_boundary(self, stream: str, since_ns: int) -> tuple[int, bool]:
        self.reads["boundary"] += 1
        return super().live_boundary(stream, since_ns)


class AnsweringSink(ScriptedSink):
    """Takes everything, two sends in flight at once (as MQTT does)."""

    concurrent_sends = 2


async def test_a_lane_reads_the_store_once_per_commit_and_not_while_idle(tmp_path: Path) -> None:
    fill(tmp_path, 1)
    sink = AnsweringSink()
    store = CountingStore(tmp_path)
    lazy = ForwardSettings(batch_size=7, idle_wait=60.0)  # no looking but on a commit
    async with forwarding(sink, tmp_path, lazy, 0.01, store) as (forwarder, _, writer):
        await until(lambda: len(sink.received) == 2)  # seq 1 and the event
        await until(lambda: store.reads["gaps"] == 1)  # every lane had its first look
        for stream in store.reads:
            store.reads[stream] = 0
        writer.recent.served = 0
        for i in range(5):  # five commits, one record each, as a plant's ticks
            now = SystemClock().time_ns()
            writer.submit_readings(ReadingBatch.from_columns("plc", [1], [i], Quality.GOOD, now))
            await writer.flush()
            await until(lambda i=i: forwarder.stats.sent["telemetry"] == 2 + i)  # type: ignore[misc]
        await until(lambda: store.cursor("mes", "telemetry") == 6)
        await asyncio.sleep(0.1)  # idle: the lanes wait for the next commit
        # One read per commit, answered from the writer's memory of it (no SQL); no read for
        # the answers, none by the idle lanes, and the live boundary from what the lane knows
        # (the records are seconds old).
        assert writer.recent.served == 5
        assert store.reads == {"telemetry": 0, "events": 0, "gaps": 0, "boundary": 0}
        assert telemetry_seqs(sink) == [1, 2, 3, 4, 5, 6]


async def test_a_record_that_reaches_the_store_another_way_is_found_by_the_next_look(
    tmp_path: Path,
) -> None:
    fill(tmp_path, 1)
    sink = ScriptedSink()
    settings = ForwardSettings(batch_size=7, idle_wait=0.05)
    async with forwarding(sink, tmp_path, settings) as (_, _, writer):
        await until(lambda: telemetry_seqs(sink) == [1])
        # Another writer of the same file: the forwarder's writer never commits this record.
        other = StoreWriter(tmp_path)
        try:
            now = SystemClock().time_ns()
            other.submit_readings(ReadingBatch.from_columns("plc", [1], [2.0], Quality.GOOD, now))
            await other.flush()
        finally:
            other.close()
        assert writer.committed_seq("telemetry") == 1
        await until(lambda: telemetry_seqs(sink) == [1, 2])


async def test_a_backlog_held_back_by_the_replay_rate_goes_on_without_a_commit(
    tmp_path: Path,
) -> None:
    old = SystemClock().time_ns() - 3600 * 10**9
    fill(tmp_path, 10, ts_ns=old, stored_ago_s=3600)  # seqs 1..10: an hour-old backlog
    fill(tmp_path, 1)  # seq 11: live
    sink = ScriptedSink()
    # No commit comes and the lanes' looks are a minute apart: the rate's own timer drains it.
    settings = ForwardSettings(batch_size=10, idle_wait=60.0, replay_rate=100.0)
    async with forwarding(sink, tmp_path, settings) as (_, _, _):
        await until(lambda: sorted(telemetry_seqs(sink)) == list(range(1, 12)))
        assert telemetry_seqs(sink)[0] == 11, "the live record first"
        assert all(r.historical for r in sink.received if r.stream == "telemetry" and r.seq < 11)

"""The store writer thread: batching, flush/close, bounds, full disk (real SQLite files)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.errors import StoreError
from agent.model import Event, EventKind, ReadingBatch
from agent.store import Store, StoreWriter, db_path
from agent.store.bounds import record_bytes, used_bytes
from agent.store.pending import Pending
from agent.store.schedule import ACK_INTERVAL, Schedule
from tests.waiting import until

NOW = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


def poll(i: int, n: int = 100, ts: int | None = None) -> ReadingBatch:
    """Poll number `i`: every value says which poll it came from, so order can be checked."""
    return ReadingBatch.from_columns(
        "plc", np.arange(n), np.full(n, float(i)), np.zeros(n), NOW + i if ts is None else ts
    )


def polls_in_store(store: Store) -> list[int]:
    return [int(b.batch.values[0]) for b in store.read_telemetry(0, 1_000_000)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    yield s
    s.close()


async def test_many_submits_make_few_commits(store: Store, tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30)
    for i in range(1000):
        writer.submit_readings(poll(i, 10))
    await writer.flush()
    stats = writer.statistics()
    writer.close()
    assert stats.batches_written == 1000 and stats.readings_written == 10_000
    assert stats.commits <= 3  # one per 5000 pending readings at most, and the flush
    assert sum(stats.commit_latency_histogram) == stats.commits
    assert 0 < stats.commit_latency_last_s <= stats.commit_latency_max_s
    assert polls_in_store(store) == list(range(1000))


async def test_pending_rows_trigger_a_commit_without_waiting_for_the_interval(
    store: Store, tmp_path: Path
) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30, flush_rows=500)
    for i in range(5):
        writer.submit_readings(poll(i))
    # Nobody calls flush and the interval is 30 s: only the row threshold can commit this.
    for _ in range(200):
        if writer.statistics().commits:
            break
        await asyncio.sleep(0.01)  # polling a real thread; there is no clock to inject here
    assert writer.statistics().batches_written == 5
    writer.close()


async def test_an_idle_writer_commits_at_once_and_gathers_while_busy(
    store: Store, tmp_path: Path
) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30)
    with writer._cond:  # idle for longer than its interval (a test cannot wait 30 s for that)
        writer._last_start = -math.inf
    writer.submit_readings(poll(0))
    # No commit started within the interval: committed at once, not at the interval's end.
    await until(lambda: store.stats().streams["telemetry"].last_seq == 1, limit=10)
    # A commit started less than 30 s ago: these gather for the next one.
    for i in range(1, 4):
        writer.submit_readings(poll(i))
    stats = writer.statistics()
    assert stats.pending_batches == 3 and stats.last_seq["telemetry"] == 1
    await writer.flush()
    stats = writer.statistics()
    writer.close()
    assert stats.commits == 2 and polls_in_store(store) == [0, 1, 2, 3]


async def test_submitting_wakes_the_writer_once_per_commit_not_per_batch(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30, flush_rows=500)
    writer.submit_readings(poll(0, 10))
    await writer.flush()  # a commit just started: what follows waits for the next
    notified: list[int] = []
    real_notify = threading.Condition.notify

    def counted(cond: threading.Condition, n: int = 1) -> None:
        notified.append(n)
        real_notify(cond, n)

    before = writer.statistics().commits
    monkeypatch.setattr(threading.Condition, "notify", counted)
    for i in range(1, 101):  # 1000 readings: past flush_rows halfway
        writer.submit_readings(poll(i, 10))
    # flush_rows was reached halfway: that commit ends; the rest wait for the interval.
    await until(lambda: writer.statistics().batches_written >= 51, limit=10)
    monkeypatch.undo()
    cycles = writer.statistics().commits - before + 1  # the last one still gathering
    # Per writer cycle one wake-up for its first batch (records wait) and one when flush_rows
    # was reached; a notify per batch would be 51 or more.
    assert len(notified) <= 2 * cycles < 20
    await writer.flush()
    writer.close()
    assert polls_in_store(store) == list(range(101))


def test_acknowledgements_alone_wait_their_interval_from_their_own_arrival() -> None:
    # At a poll period of about ACK_INTERVAL the acknowledgements of one commit came ~10 ms
    # after it and were due ACK_INTERVAL after the commit's start, racing the next poll's
    # records: often a commit (an fsync) of their own, and those records then waited a
    # flush_interval behind it. Now they are due ACK_INTERVAL after they came.
    schedule = Schedule(0.01, 5000, 5.0, 0.05, 5.0)
    pending = Pending(acks={("mqtt", "telemetry"): 7}, acks_since=100.012)

    def due(now: float) -> float:
        return schedule.due(pending, now, 100.0, 0.0, 105.0, urgent=False, stopping=False)

    assert due(100.05) == pytest.approx(100.012 + ACK_INTERVAL)
    # The next poll's records, at 100.1, find no commit of acknowledgements before them: they
    # are committed at once, the acknowledgements with them.
    pending.telemetry.append(poll(1))
    pending.readings += 100
    assert due(100.1) == pytest.approx(100.01)
    # Acknowledgements with no known arrival (left over from a failed commit): from the last
    # commit's start, never sooner than flush_interval after it.
    pending = Pending(acks={("mqtt", "telemetry"): 7})
    assert due(100.05) == pytest.approx(100.0 + ACK_INTERVAL)
    assert Schedule(0.5, 5000, 5.0, 0.05, 5.0).due(
        Pending(acks={("mqtt", "telemetry"): 7}, acks_since=100.012),
        100.05,
        100.0,
        0.0,
        105.0,
        urgent=False,
        stopping=False,
    ) == pytest.approx(100.5)


async def test_taking_the_queue_starts_the_next_acknowledgements_interval(
    store: Store, tmp_path: Path
) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30)
    writer.submit_readings(poll(0))
    writer.submit_ack("mqtt", "telemetry", 0)
    with writer._cond:
        first = writer._pending.acks_since
    assert first is not None
    await writer.flush()
    with writer._cond:
        assert writer._pending.acks_since is None  # taken with the commit
    writer.submit_ack("mqtt", "telemetry", 1)
    with writer._cond:
        later = writer._pending.acks_since
    assert later is not None and later > first
    writer.close()


def test_a_record_written_behind_the_writers_back_costs_one_retry_not_a_seq(
    store: Store, tmp_path: Path
) -> None:
    # The writer counts the seqs itself instead of asking the file in every commit (one
    # agent per store: nothing else inserts). Should something else have, the insert fails
    # on the taken seq (never reuses it), and the retry reads the seqs from the file again.
    writer = StoreWriter(tmp_path, retry_initial=0.01, retry_max=0.05)
    writer.submit_readings(poll(0))
    assert writer.flush_blocking(10)
    other = sqlite3.connect(db_path(tmp_path), isolation_level=None)
    other.execute(
        "INSERT INTO telemetry (source, n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, ts) "
        "SELECT source, n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, ts FROM telemetry"
    )
    other.close()
    writer.submit_readings(poll(1))
    assert writer.flush_blocking(10)
    stats = writer.statistics()
    writer.close()
    assert stats.errors == 1 and stats.last_seq["telemetry"] == 3
    assert [b.seq for b in store.read_telemetry(0, 10)] == [1, 2, 3]
    assert polls_in_store(store) == [0, 0, 1]


def test_close_drains_everything_submitted(store: Store, tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30)
    for i in range(300):
        writer.submit_readings(poll(i))
    writer.submit_event(Event(EventKind.STATE, NOW, "press", {"state": "down"}))
    assert writer.close(timeout=10)
    assert polls_in_store(store) == list(range(300))
    assert len(store.read_events(0, 10)) == 1
    with pytest.raises(StoreError, match="closed"):
        writer.submit_readings(poll(0))


def test_flush_blocking_for_threads_without_a_loop(store: Store, tmp_path: Path) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30)
    writer.submit_readings(poll(1))
    assert writer.flush_blocking(timeout=10)
    assert writer.statistics().last_seq["telemetry"] == 1
    writer.close()


# -- bounds ----------------------------------------------------------------------------------


async def test_over_max_bytes_the_oldest_telemetry_is_dropped_with_a_gap_record(
    store: Store, tmp_path: Path
) -> None:
    store.register_sinks(["mqtt"])
    writer = StoreWriter(tmp_path, max_bytes=200_000, housekeeping_interval=0)
    for i in range(300):  # 300 batches of 100 readings ≈ 400 kB of blobs
        writer.submit_readings(poll(i))
        if i % 50 == 49:
            await writer.flush()
    await writer.flush()
    stats = writer.statistics()
    writer.close()

    kept = polls_in_store(store)
    assert stats.dropped_batches > 0 and not stats.store_full
    assert kept == list(range(300 - len(kept), 300))  # the newest survive, in order
    gaps = store.read_gaps(0, 100)
    assert gaps and all(g.stream == "telemetry" and g.reason == "max_bytes" for g in gaps)
    # The gap records name exactly the dropped seq ranges, end to end, nothing uncounted.
    dropped = [s for g in gaps for s in range(g.first_seq or 0, (g.last_seq or -1) + 1)]
    assert dropped == list(range(1, 300 - len(kept) + 1))
    assert sum(g.count for g in gaps) == stats.dropped_batches == 300 - len(kept)
    assert sum(g.readings for g in gaps) == stats.dropped_readings == 100 * stats.dropped_batches


async def test_unacknowledged_events_are_kept_and_the_store_reports_full(
    store: Store, tmp_path: Path
) -> None:
    store.register_sinks(["mqtt"])
    writer = StoreWriter(tmp_path, max_bytes=120_000, housekeeping_interval=0, flush_interval=30)
    blob = "x" * 2000
    for i in range(80):  # ≈ 170 kB of events nobody has acknowledged
        writer.submit_event(Event(EventKind.INSPECTION, NOW + i, "press", {"i": i, "b": blob}))
    await writer.flush()
    for i in range(5):
        writer.submit_readings(poll(i))
    writer.submit_event(Event(EventKind.ALARM, NOW, "press", {"i": 80}))
    waiting = asyncio.ensure_future(writer.flush())
    for _ in range(300):  # until the writer's housekeeping has seen the store full
        if writer.statistics().store_full:
            break
        await asyncio.sleep(0.01)
    stats = writer.statistics()
    assert stats.store_full
    assert len(store.read_events(0, 1000)) == 80  # not one event dropped
    assert stats.pending_events == 2  # the new event waits in memory, and the alarm's
    assert stats.full_reason == "max_size reached with events no sink has acknowledged"
    assert not waiting.done()

    # The sink catches up: its acknowledgements free the space, the waiting records land.
    writer.submit_ack("mqtt", "events", 80)
    await asyncio.wait_for(waiting, 10)
    await writer.flush()
    stats = writer.statistics()
    assert not stats.store_full and stats.pending_events == 0
    writer.close()
    events = store.read_events(0, 1000)
    # Delivered events leave the local history, oldest first, as far as the size bound
    # needs; the waiting one landed after them, between the alarm raised when the store became
    # full (before the new event came) and the one that cleared it.
    delivered, landed = events[:-3], events[-3:]
    kept = [e.data["i"] for e in delivered]
    assert stats.deleted_records == 80 - len(kept)
    assert kept == list(range(80 - len(kept), 80))
    assert [e.data.get("i") for e in landed] == [None, 80, None]
    assert [e.seq for e in landed] == [81, 82, 83]
    assert [(e.kind, e.data["alarm"], e.data["active"]) for e in (landed[0], landed[2])] == [
        (EventKind.ALARM, "store_full", True),
        (EventKind.ALARM, "store_full", False),
    ]
    assert store.read_gaps(0, 10) == []  # they were delivered: no loss
    assert polls_in_store(store) == [0, 1, 2, 3, 4]


async def test_the_size_bound_drops_delivered_telemetry_first_and_names_only_the_rest(
    store: Store, tmp_path: Path
) -> None:
    store.register_sinks(["mqtt"])
    writer = StoreWriter(tmp_path, max_bytes=200_000, housekeeping_interval=0)
    for i in range(50):
        writer.submit_readings(poll(i))
    await writer.flush()
    writer.submit_ack("mqtt", "telemetry", 50)
    await writer.flush()
    assert len(polls_in_store(store)) == 50  # delivered, and kept: no bound is reached yet
    for i in range(50, 300):
        writer.submit_readings(poll(i))
        if i % 50 == 49:
            await writer.flush()
    await writer.flush()
    stats = writer.statistics()
    writer.close()
    kept = polls_in_store(store)
    assert kept == list(range(300 - len(kept), 300))
    gaps = store.read_gaps(0, 100)
    named = [s for g in gaps for s in range(g.first_seq or 0, (g.last_seq or -1) + 1)]
    assert named and min(named) == 51, "a gap names only what the sink never had"
    assert named == list(range(51, 300 - len(kept) + 1))
    assert stats.deleted_records == 50
    assert stats.dropped_by_sink == {"mqtt": len(named)}


def test_beyond_the_memory_bound_new_telemetry_is_dropped_never_events(
    store: Store, tmp_path: Path
) -> None:
    writer = StoreWriter(tmp_path, flush_interval=30, max_pending_readings=250)
    accepted = [writer.submit_readings(poll(i)) for i in range(4)]
    writer.submit_event(Event(EventKind.ALARM, NOW, None, {}))
    assert accepted == [True, True, False, False]
    stats = writer.statistics()
    assert (stats.dropped_batches, stats.dropped_readings) == (2, 200)
    assert stats.pending_events == 1
    writer.close()
    gaps = store.read_gaps(0, 10)
    assert [(g.first_seq, g.last_seq, g.count, g.readings) for g in gaps] == [(None, None, 2, 200)]
    assert polls_in_store(store) == [0, 1]


async def test_acknowledged_records_stay_until_max_age(tmp_path: Path) -> None:
    """The store is the plant's local history: an acknowledgement only moves a cursor."""
    now = [NOW]
    store = Store(tmp_path)
    store.register_sinks(["mqtt", "http"])
    writer = StoreWriter(tmp_path, max_age=3600, housekeeping_interval=0, clock=lambda: now[0])
    for i in range(4):
        writer.submit_readings(poll(i, ts=NOW + i * SECOND))
    await writer.flush()
    writer.submit_ack("mqtt", "telemetry", 4)
    writer.submit_ack("http", "telemetry", 2)
    await writer.flush()
    now[0] = NOW + 3599 * SECOND
    writer.submit_ack("http", "telemetry", 2)  # any commit runs housekeeping here
    await writer.flush()
    assert polls_in_store(store) == [0, 1, 2, 3]  # every sink has them, and they stay
    assert writer.statistics().deleted_records == 0

    now[0] = NOW + 3601 * SECOND
    writer.submit_ack("http", "telemetry", 2)
    await writer.flush()
    assert polls_in_store(store) == [2, 3]  # past max_age, only what both sinks have goes
    assert writer.statistics().deleted_records == 2
    assert store.read_gaps(0, 10) == []  # deleting delivered records is no loss
    writer.close()
    store.close()


async def test_the_age_bound_goes_by_when_a_record_was_stored(tmp_path: Path) -> None:
    # Without sinks, and with a device stamp far older than max_age: what counts is when the
    # agent stored the record (an OPC UA value that rarely changes keeps an old stamp).
    now = [NOW]
    store = Store(tmp_path)
    writer = StoreWriter(tmp_path, max_age=3600, housekeeping_interval=0, clock=lambda: now[0])
    writer.submit_readings(poll(0, ts=NOW - 86400 * SECOND))
    await writer.flush()
    now[0] = NOW + 1800 * SECOND
    writer.submit_readings(poll(1, ts=NOW - 86400 * SECOND))
    await writer.flush()
    assert polls_in_store(store) == [0, 1]
    now[0] = NOW + 3601 * SECOND
    writer.submit_event(Event(EventKind.STATE, now[0], "press", {}))
    await writer.flush()
    assert polls_in_store(store) == [1]
    writer.close()
    store.close()


# -- full disk -------------------------------------------------------------------------------


async def test_sqlite_full_is_retried_and_nothing_is_lost_once_there_is_room(
    store: Store, tmp_path: Path
) -> None:
    conn = sqlite3.connect(db_path(tmp_path))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    writer = StoreWriter(
        tmp_path, max_page_count=pages + 4, flush_rows=1000, retry_initial=0.01, retry_max=0.05
    )
    for i in range(200):
        writer.submit_readings(poll(i))
    for _ in range(500):
        if writer.statistics().errors >= 2:
            break
        await asyncio.sleep(0.01)
    stats = writer.statistics()
    assert stats.errors >= 2  # real SQLITE_FULL, retried
    assert stats.last_error is not None and "full" in stats.last_error
    assert stats.pending_batches + stats.batches_written == 200
    assert stats.pending_batches > 0

    writer.set_max_page_count(100_000)
    await asyncio.wait_for(writer.flush(), 10)
    stats = writer.statistics()
    writer.close()
    assert stats.pending_batches == 0 and stats.last_error is None
    assert polls_in_store(store) == list(range(200))  # every reading, in order
    assert [b.seq for b in store.read_telemetry(0, 1000)] == list(range(1, 201))


@pytest.mark.parametrize("readings", [1, 20, 50, 400])
async def test_the_size_estimate_validate_uses_matches_the_store(
    tmp_path: Path, readings: int
) -> None:
    # `lineside validate` says how long max_size holds from `record_bytes`: check it against
    # the pages the store really uses for such records.
    Store(tmp_path).close()
    conn = sqlite3.connect(db_path(tmp_path))
    before = used_bytes(conn)
    writer = StoreWriter(tmp_path)
    rng = np.random.default_rng(1)
    for i in range(1000):
        writer.submit_readings(
            ReadingBatch.from_columns(
                "press1-plc", np.arange(readings), rng.random(readings), np.zeros(readings), NOW + i
            )
        )
    await writer.flush()
    writer.close()
    measured = (used_bytes(conn) - before) / 1000
    conn.close()
    assert record_bytes(readings) == pytest.approx(measured, rel=0.15)


async def test_a_full_disk_raises_the_alarm_once_and_clears_it_with_an_event(
    store: Store, tmp_path: Path
) -> None:
    conn = sqlite3.connect(db_path(tmp_path))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    writer = StoreWriter(tmp_path, max_page_count=pages, retry_initial=0.01, retry_max=0.05)
    for i in range(50):
        writer.submit_readings(poll(i))
    for _ in range(500):
        if writer.statistics().errors >= 3:
            break
        await asyncio.sleep(0.01)
    stats = writer.statistics()
    assert stats.store_full and stats.full_reason is not None
    assert stats.full_reason.startswith("the disk is full (database or disk is full)")
    assert stats.pending_events == 1  # the alarm, once for every failed try
    writer.set_max_page_count(100_000)
    await asyncio.wait_for(writer.flush(), 10)
    stats = writer.statistics()
    writer.close()
    assert not stats.store_full and stats.full_reason is None
    events = store.read_events(0, 10)
    assert [(e.kind, e.data["active"]) for e in events] == [
        (EventKind.ALARM, True),
        (EventKind.ALARM, False),
    ]
    assert polls_in_store(store) == list(range(50))


def test_close_gives_up_after_its_timeout_while_the_disk_is_full(
    store: Store, tmp_path: Path
) -> None:
    conn = sqlite3.connect(db_path(tmp_path))
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    writer = StoreWriter(tmp_path, max_page_count=pages, retry_initial=0.01, retry_max=0.05)
    for i in range(50):
        writer.submit_readings(poll(i))
    assert writer.close(timeout=0.5) is False  # bounded: it returns, the thread stops
    assert not writer._thread.is_alive()
    stats = writer.statistics()
    # An idle writer commits the first poll at once (group commit), so one may have fit before
    # the file was full; every other reading is held and counted as lost.
    written = polls_in_store(store)
    assert written == list(range(len(written))) and len(written) <= 1
    assert stats.pending_readings == 5000 - 100 * len(written) and stats.store_full


async def test_a_full_store_holding_records_does_not_spin(store: Store, tmp_path: Path) -> None:
    store.register_sinks(["mqtt"])
    writer = StoreWriter(tmp_path, max_bytes=60_000, housekeeping_interval=0, flush_rows=100)
    blob = "x" * 2000
    for i in range(40):  # ≈ 85 kB of events nobody has acknowledged
        writer.submit_event(Event(EventKind.INSPECTION, NOW + i, "press", {"b": blob}))
    await until(lambda: writer.statistics().store_full, limit=10)
    for i in range(5):  # more pending rows than flush_rows: they wait, held back
        writer.submit_readings(poll(i))
    before = writer.statistics().commits
    await asyncio.sleep(0.5)
    # One look per 0.1 s while full; a loop that spins makes thousands.
    assert writer.statistics().commits - before <= 10
    assert writer.close(timeout=0.5) is False

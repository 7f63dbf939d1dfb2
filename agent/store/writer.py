"""`StoreWriter`: the one write connection, in a thread of its own (docs/decisions/0001)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import StoreError
from agent.model import Event, EventKind, ReadingBatch
from agent.secrets import redact, redact_tree
from agent.store.blob import encode_batch
from agent.store.bounds import Housework
from agent.store.figures import Counters, WriterStats
from agent.store.schema import (
    Clock,
    Synchronous,
    check_stream,
    connect,
    db_path,
    last_seqs,
    migrate_connection,
)
from agent.store.transaction import Bounds, EventRow, QuarantineRow, Work, disk_full, write

log = logging.getLogger("lineside.store")

# ---------------------------------------------------------------------------------------------
# The writer thread

ABANDON_WAIT = 1.0  # seconds close() waits for the thread once it was told to give up
# Acknowledgements alone (no record waiting) are committed at most this often: a sink's cursor
# may lag its deliveries by this much (a crash then resends, never skips), and a delivery does
# not cost an fsync of its own. They ride with the next commit of records in any case.
ACK_INTERVAL = 0.1
# While the store is full and holds records back, commits (each with the bounds) are retried
# this often at most, however short the flush interval.
FULL_RETRY = 0.1

# How soon a submission wants the writer thread awake (docs/decisions/0008): submitting
# notifies the thread only when this rises, so one writer cycle costs one wake-up, not one
# per batch.
_IDLE, _ACKS, _RECORDS, _NOW = 0, 1, 2, 3


@dataclass(slots=True)
class _Pending:
    # Batches as submitted: encoded into records on the writer thread, at commit time.
    telemetry: list[ReadingBatch] = field(default_factory=list)
    readings: int = 0
    events: list[EventRow] = field(default_factory=list)
    acks: dict[tuple[str, str], int] = field(default_factory=dict)
    quarantine: list[QuarantineRow] = field(default_factory=list)
    releases: list[int] = field(default_factory=list)
    # telemetry dropped in memory since the last gap record about it: (batches, readings)
    unstored_drops: tuple[int, int] = (0, 0)
    submitted: int = 0  # submissions so far; flush() waits for `committed` to reach it


class StoreWriter:
    """The one write connection, in a thread of its own.

    `submit_*` never block on the disk and may be called from any thread; they append to a
    queue and wake the thread at most once per commit (docs/decisions/0008). Group commit: a
    record submitted when no commit started within the last `flush_interval` seconds is
    committed at once; what arrives while a commit runs, or sooner than `flush_interval` after
    the last one started, goes together into the next one, so a record waits at most
    `flush_interval` (plus a commit under way) and the commits are at most one per
    `flush_interval`. Sooner when `flush_rows` readings are pending or someone waits in
    `flush()`. Acknowledgements alone are committed within `ACK_INTERVAL` (or with the next
    records). Bounds are enforced every `housekeeping_interval` seconds (after every commit
    while the store is full). A failing write (disk full, I/O error) is rolled back, counted
    and retried with back-off; what was submitted stays pending.

    The store is full when the disk (or SQLite's page limit) refuses a commit, or when
    `max_bytes` is reached with events no sink has acknowledged. Then the alarm is raised once
    (a log line, `store_full` and `full_reason` in the statistics, an alarm event stored as
    soon as there is room), readings wait in memory up to `max_pending_readings` and are then
    dropped and counted (a gap record says how many), events wait, and the alarm clears by
    itself (another log line and event) at the first commit that works again.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        synchronous: Synchronous = "FULL",
        flush_interval: float = 0.01,
        flush_rows: int = 5000,
        max_bytes: int | None = None,
        max_age: float | None = None,
        housekeeping_interval: float = 5.0,
        max_pending_readings: int = 1_000_000,
        max_page_count: int | None = None,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        clock: Clock = time.time_ns,
    ) -> None:
        self.path = db_path(data_dir)
        self._flush_interval = flush_interval
        self._flush_rows = flush_rows
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._housekeeping_interval = housekeeping_interval
        self._max_pending_readings = max_pending_readings
        self._retry = (retry_initial, retry_max)
        self._clock = clock
        self._conn = connect(self.path, synchronous)
        try:
            migrate_connection(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._page_count_request = max_page_count
        self._cond = threading.Condition()
        self._pending = _Pending()
        self._counters = Counters()
        self._committed = 0
        self._last_seq = last_seqs(self._conn)
        self._store_full = False  # max_bytes reached with unacknowledged events
        self._disk_full: str | None = None  # the error while the disk refuses commits
        self._alarm: _Alarm | None = None  # raised while either holds
        self._stopping = False
        self._abandoned = False  # close() gave up waiting: stop without committing the rest
        self._urgent = False
        # How soon the submissions since the thread last took its queue want it awake (_IDLE
        # .. _NOW): a submission notifies only when it raises this.
        self._wanted = _IDLE
        # When the last commit started (monotonic). The start counts as one: a writer gathers
        # for its first `flush_interval` (tests hold records in memory with a long one).
        self._last_start = time.monotonic()
        self._waiters: list[tuple[int, Callable[[], None]]] = []
        self._listeners: list[Callable[[], None]] = []  # told after a commit that wrote records
        self._thread = threading.Thread(target=self._run, name="lineside-store", daemon=True)
        self._thread.start()

    # -- submitting (any thread) -----------------------------------------------------------

    def submit_readings(self, batch: ReadingBatch) -> bool:
        """Queue a batch; False when it was dropped because too much is already pending.

        The batch is kept as it is and encoded by the writer thread, off the caller's path: its
        arrays must not change after the call (the agent's sources make new ones per poll).
        """
        n = len(batch)
        if not n:
            return True
        with self._cond:
            self._check_open()
            p = self._pending
            if p.readings + n > self._max_pending_readings:
                b, r = p.unstored_drops
                p.unstored_drops = (b + 1, r + n)
                self._counters.dropped_batches += 1
                self._counters.dropped_readings += n
                if b == 0:  # once per run of drops: the gap record that ends it has the count
                    log.warning(
                        "store: %d readings wait in memory (the bound); new readings are "
                        "dropped and counted until the store takes them again",
                        p.readings,
                    )
                return False
            p.telemetry.append(batch)
            p.readings += n
            p.submitted += 1
            self._want(_NOW if p.readings >= self._flush_rows else _RECORDS)
            return True

    def submit_event(self, event: Event) -> None:
        """Queue an event; events are never dropped. Bad data (not JSON) raises here."""
        # Event details may quote a far side's error text, which may echo a credential.
        data = json.dumps(redact_tree(event.data), separators=(",", ":"), allow_nan=False)
        with self._cond:
            self._check_open()
            self._pending.events.append((event.ts_ns, str(event.kind), event.machine, data))
            self._pending.submitted += 1
            self._want(_RECORDS)

    def submit_ack(self, sink: str, stream: str, seq: int) -> None:
        """Advance a sink's cursor in the next transaction (forwards only)."""
        check_stream(stream)
        with self._cond:
            self._check_open()
            key = (sink, stream)
            self._pending.acks[key] = max(seq, self._pending.acks.get(key, 0))
            self._pending.submitted += 1
            self._want(_ACKS)

    def submit_quarantine(self, sink: str, stream: str, seq: int, reason: str) -> None:
        """Keep a record the far side refused, with its reason, in the next transaction (a
        refusal repeated replaces the reason and clears a retry request)."""
        check_stream(stream)
        # The reason is the far side's text, which may echo our credentials.
        row = (sink, stream, seq, self._clock(), redact(reason))
        with self._cond:
            self._check_open()
            self._pending.quarantine.append(row)
            self._pending.submitted += 1
            self._want(_RECORDS)

    def submit_release(self, entry_id: int) -> None:
        """A quarantined record was delivered after all: forget it in the next transaction."""
        with self._cond:
            self._check_open()
            self._pending.releases.append(entry_id)
            self._pending.submitted += 1
            self._want(_RECORDS)

    def _want(self, level: int) -> None:
        """Wake the thread if this submission wants it sooner than those before it in this
        cycle (under the lock): one notify per writer cycle, not one per batch."""
        if level > self._wanted:
            self._wanted = level
            self._cond.notify()

    def set_max_page_count(self, pages: int) -> None:
        """Change SQLite's hard page limit (applied by the writer thread before its next try)."""
        with self._cond:
            self._page_count_request = pages
            self._urgent = True
            self._cond.notify()

    def add_commit_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the writer thread: it must not block) after every commit that
        wrote records, so readers such as the forwarder look at once instead of polling."""
        with self._cond:
            self._listeners.append(listener)

    def committed_seq(self, stream: str) -> int:
        """The last seq of `stream` committed so far (cheap: for a commit listener)."""
        with self._cond:
            return self._last_seq[stream]

    def remove_commit_listener(self, listener: Callable[[], None]) -> None:
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- waiting ---------------------------------------------------------------------------

    async def flush(self) -> dict[str, int]:
        """Wait until everything submitted so far is committed; the last seq per stream."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake() -> None:
            # RuntimeError: the loop is closed, nobody waits any more (a drain that gave up).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

        self._request(wake)
        await done
        return dict(self.statistics().last_seq)

    def flush_blocking(self, timeout: float | None = None) -> bool:
        """`flush` for threads without an event loop; False on timeout."""
        ready = threading.Event()
        self._request(ready.set)
        return ready.wait(timeout)

    def _request(self, wake: Callable[[], None]) -> None:
        with self._cond:
            target = self._pending.submitted
            if self._committed >= target:
                wake()
                return
            self._waiters.append((target, wake))
            self._urgent = True
            self._cond.notify()

    def close(self, timeout: float | None = None) -> bool:
        """Commit everything pending, stop the thread, close the connection.

        False when `timeout` passed first (the store was full or the disk kept failing): the
        thread is then told to give up, what was still pending is lost, and the statistics
        (`pending_*`) say how much.
        """
        with self._cond:
            if self._stopping:
                return not self._thread.is_alive()
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        drained = not self._thread.is_alive()
        if not drained:
            with self._cond:
                self._abandoned = True
                self._cond.notify()
            # It stops at its next turn; a commit under way ends first (or the process does).
            self._thread.join(ABANDON_WAIT)
        if not self._thread.is_alive():
            self._conn.close()
        return drained

    def _check_open(self) -> None:
        if self._stopping:
            raise StoreError(f"{self.path}: the store writer is closed")

    # -- statistics ------------------------------------------------------------------------

    def statistics(self) -> WriterStats:
        with self._cond:
            c, p = self._counters, self._pending
            return WriterStats(
                batches_written=c.batches,
                readings_written=c.readings,
                events_written=c.events,
                gaps_written=c.gaps,
                commits=c.commits,
                commit_latency_last_s=c.latency_last,
                commit_latency_max_s=c.latency_max,
                commit_latency_histogram=tuple(c.histogram.counts),
                commit_latency_sum_s=c.histogram.sum,
                dropped_by_sink=dict(c.dropped_by_sink),
                pending_batches=len(p.telemetry),
                pending_readings=p.readings,
                pending_events=len(p.events),
                dropped_batches=c.dropped_batches,
                dropped_readings=c.dropped_readings,
                deleted_records=c.deleted,
                errors=c.errors,
                last_error=c.last_error,
                store_full=self._alarm is not None,
                full_reason=self._alarm.reason if self._alarm is not None else None,
                max_pending_readings=self._max_pending_readings,
                last_seq=dict(self._last_seq),
            )

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.0
        # No commit before this (monotonic) but on request: a failure's back-off, or the
        # store full and holding records back.
        retry_at = 0.0
        next_housekeeping = time.monotonic() + self._housekeeping_interval
        while True:
            with self._cond:
                while not self._abandoned:
                    now = time.monotonic()
                    due = self._due(now, retry_at, next_housekeeping)
                    if due <= now:
                        break
                    self._cond.wait(due - now)
                if self._abandoned:
                    return
                self._urgent = False
                self._wanted = _IDLE
                stopping = self._stopping
                work = self._take()
            self._last_start = time.monotonic()
            housekeep = self._store_full or self._last_start >= next_housekeeping
            ok = self._commit(work, housekeep)
            if ok:
                backoff = 0.0
                held = work.held  # the store is full: records wait in the queue
                retry_at = time.monotonic() + max(self._flush_interval, FULL_RETRY) if held else 0.0
                if housekeep:
                    next_housekeeping = time.monotonic() + self._housekeeping_interval
            else:
                backoff = min(self._retry[1], max(self._retry[0], backoff * 2))
                retry_at = time.monotonic() + backoff
            with self._cond:
                if stopping and ok and self._committed >= self._pending.submitted:
                    return

    def _due(self, now: float, retry_at: float, next_housekeeping: float) -> float:
        """When the next commit is due (monotonic; under the lock).

        After a failure, and while the store is full, only a flush request or a new page
        limit cuts the wait short (not even close(): it would spin on a disk that keeps
        failing). Else: at once when closing or `flush_rows` readings wait; records one
        `flush_interval` after the last commit started (at once when that is past: the writer
        was idle); acknowledgements alone, and the bounds alone (on their interval), at most
        every `ACK_INTERVAL`.
        """
        if self._urgent:
            return now
        if retry_at > now:
            return retry_at
        p = self._pending
        if self._stopping or p.readings >= self._flush_rows:
            return now
        # The bounds alone, like acknowledgements alone, every ACK_INTERVAL at most (a
        # housekeeping interval of 0 means "with every commit", not a commit loop): each
        # commit grows the WAL, which the size bound counts.
        due = max(next_housekeeping, self._last_start + max(self._flush_interval, ACK_INTERVAL))
        if p.telemetry or p.events or p.quarantine or p.releases or p.unstored_drops != (0, 0):
            due = min(due, self._last_start + self._flush_interval)
        elif p.acks:
            due = min(due, self._last_start + max(self._flush_interval, ACK_INTERVAL))
        return due

    def _take(self) -> Work:
        """A snapshot of what is pending; it leaves the queue only once committed."""
        p = self._pending
        # While the store is full, records wait here; acknowledgements still go through,
        # because they are what frees space.
        full = self._store_full
        return Work(
            telemetry=[] if full else list(p.telemetry),
            events=[] if full else list(p.events),
            acks=dict(p.acks),
            unstored_drops=(0, 0) if full else p.unstored_drops,
            submitted=p.submitted,
            held=full and bool(p.telemetry or p.events),
            page_count=self._page_count_request,
            quarantine=list(p.quarantine),
            releases=list(p.releases),
        )

    def _commit(self, work: Work, housekeep: bool) -> bool:
        conn = self._conn
        started = time.perf_counter()
        try:
            # Encoded here, before the transaction, so it stays as short as the inserts.
            encoded = [encode_batch(b) for b in work.telemetry]
            if work.page_count is not None:
                conn.execute(f"PRAGMA max_page_count = {int(work.page_count)}")
            conn.execute("BEGIN IMMEDIATE")
            bounds = Bounds(self._max_age, self._max_bytes) if housekeep else None
            written = write(conn, work, encoded, self._clock(), bounds, self._store_full)
            conn.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error mostly; the thread must survive anything
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            with self._cond:
                self._counters.errors += 1
                self._counters.last_error = f"{type(exc).__name__}: {exc}"
                if disk_full(exc):
                    self._disk_full = f"the disk is full ({exc})"
                    self._update_alarm()
            return False
        latency = time.perf_counter() - started
        with self._cond:
            self._settle(work, latency, written.gaps, written.housework)
            by_sink = self._counters.dropped_by_sink
            for sink, n in written.lost.items():
                by_sink[sink] = by_sink.get(sink, 0) + n
        return True

    def _settle(self, work: Work, latency: float, gaps: int, hw: Housework) -> None:
        """Book a committed transaction: dequeue what it wrote, count, wake flush waiters."""
        p, c = self._pending, self._counters
        del p.telemetry[: len(work.telemetry)]
        written = sum(len(b) for b in work.telemetry)
        p.readings -= written
        del p.events[: len(work.events)]
        for key, seq in work.acks.items():
            if p.acks.get(key) == seq:
                del p.acks[key]
        del p.quarantine[: len(work.quarantine)]
        del p.releases[: len(work.releases)]
        if work.unstored_drops != (0, 0):
            b, r = p.unstored_drops
            p.unstored_drops = (b - work.unstored_drops[0], r - work.unstored_drops[1])
        self._last_seq["telemetry"] += len(work.telemetry)
        self._last_seq["events"] += len(work.events)
        self._last_seq["gaps"] += gaps
        c.batches += len(work.telemetry)
        c.readings += written
        c.events += len(work.events)
        c.gaps += gaps
        c.commits += 1
        c.latency_last = latency
        c.latency_max = max(c.latency_max, latency)
        c.histogram.observe(latency)
        c.dropped_batches += hw.dropped_batches
        c.dropped_readings += hw.dropped_readings
        c.deleted += hw.deleted
        c.last_error = None
        self._store_full = hw.store_full
        self._disk_full = None
        self._update_alarm()
        # A full store holds records back: those are not committed yet.
        if not work.held:
            self._committed = work.submitted
        elif not self._store_full:
            self._urgent = True  # room again: write what was held without waiting an interval
        if work.telemetry or work.events or gaps:
            for listener in self._listeners:
                # A listener must not raise; if one does, the writer thread must survive it.
                with contextlib.suppress(Exception):
                    listener()
        woken = [w for w in self._waiters if w[0] <= self._committed]
        self._waiters = [w for w in self._waiters if w[0] > self._committed]
        for _, wake in woken:
            wake()

    def _update_alarm(self) -> None:
        """Raise or clear the store-full alarm (under the lock): a log line and an alarm event
        per change. The events wait in the queue like any other, so the one that says the store
        became full is stored as soon as there is room again, before the one that says so."""
        if self._disk_full is not None:
            reason: str | None = self._disk_full
        elif self._store_full:
            reason = "max_size reached with events no sink has acknowledged"
        else:
            reason = None
        alarm = self._alarm
        if reason is not None and alarm is None:
            self._alarm = _Alarm(reason, time.monotonic(), self._counters.dropped_readings)
            remedy = (
                f"free space on the disk of {self.path}"
                if self._disk_full is not None
                else "the sinks free it as they catch up"
            )
            log.error(
                "store: full: %s; polling goes on, readings wait in memory (up to %d, then "
                "new ones are dropped and counted), events wait; %s",
                reason,
                self._max_pending_readings,
                remedy,
            )
            self._queue_alarm({"alarm": "store_full", "active": True, "reason": reason})
        elif reason is None and alarm is not None:
            self._alarm = None
            seconds = round(time.monotonic() - alarm.since, 1)
            dropped = self._counters.dropped_readings - alarm.dropped_readings
            log.warning(
                "store: takes writes again after %.1f s full; %d readings were dropped "
                "meanwhile (a gap record counts them)",
                seconds,
                dropped,
            )
            data = {"alarm": "store_full", "active": False, "reason": alarm.reason}
            self._queue_alarm({**data, "full_s": seconds, "dropped_readings": dropped})

    def _queue_alarm(self, data: dict[str, object]) -> None:
        body = json.dumps(data, separators=(",", ":"))
        self._pending.events.append((self._clock(), str(EventKind.ALARM), None, body))
        self._pending.submitted += 1


@dataclass(frozen=True, slots=True)
class _Alarm:
    reason: str
    since: float  # time.monotonic() when it was raised
    dropped_readings: int  # the drop counter then

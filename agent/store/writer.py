"""`StoreWriter`: the one write connection, in a thread of its own (docs/decisions/0001)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from agent.errors import StoreError
from agent.model import Event, EventKind, ReadingBatch
from agent.secrets import redact, redact_tree
from agent.store.alarm import FullState
from agent.store.bounds import Housework
from agent.store.figures import Counters, WriterStats
from agent.store.pending import Pending
from agent.store.recent import RECENT_BYTES, RecentTelemetry
from agent.store.schedule import Schedule
from agent.store.schema import (
    Clock,
    Synchronous,
    check_stream,
    connect,
    db_path,
    last_seqs,
    migrate_connection,
)
from agent.store.transaction import Bounds, Work, commit, disk_full

ABANDON_WAIT = 1.0  # seconds close() waits for the thread once it was told to give up

# How soon a submission wants the writer thread awake (docs/decisions/0008): submitting
# notifies the thread only when this rises, so one writer cycle costs one wake-up, not one
# per batch.
_IDLE, _ACKS, _RECORDS, _NOW = 0, 1, 2, 3


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

    `recent` keeps the telemetry rows of the last 8 commits (`recent_bytes` at most) once they
    are committed, for the forwarder's live reads (agent/store/recent.py); a commit that
    applies the bounds empties it first, and refills it only when they deleted nothing.
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
        recent_bytes: int = RECENT_BYTES,
    ) -> None:
        self.path = db_path(data_dir)
        # When the thread commits: group commit, the bounds, back-off (agent/store/schedule.py).
        self._schedule = Schedule(
            flush_interval, flush_rows, housekeeping_interval, retry_initial, retry_max
        )
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._max_pending_readings = max_pending_readings
        self._clock = clock
        self._conn = connect(self.path, synchronous)
        try:
            migrate_connection(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._page_count_request = max_page_count
        self._cond = threading.Condition()
        self._pending = Pending()  # agent/store/pending.py
        self._counters = Counters()
        self._committed = 0
        self._last_seq = last_seqs(self._conn)
        self._full = FullState()  # the store full, and its alarm (agent/store/alarm.py)
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
        # The telemetry rows of the last commits, for the forwarder's live reads (recent.py).
        self.recent = RecentTelemetry(recent_bytes)
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
                p.drop(n)
                self._counters.dropped_batches += 1
                self._counters.dropped_readings += n
                return False
            p.telemetry.append(batch)
            p.readings += n
            p.submitted += 1
            self._want(_NOW if p.readings >= self._schedule.flush_rows else _RECORDS)
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
            if self._pending.acks_since is None:
                self._pending.acks_since = time.monotonic()
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

    @property
    def flush_interval(self) -> float:
        """The longest a record waits to be committed with others (group commit)."""
        return self._schedule.flush_interval

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
            p, alarm = self._pending, self._full.alarm
            return self._counters.snapshot(
                pending=(len(p.telemetry), p.readings, len(p.events)),
                full_reason=alarm.reason if alarm is not None else None,
                max_pending_readings=self._max_pending_readings,
                last_seq=self._last_seq,
            )

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        schedule = self._schedule
        backoff = 0.0
        # No commit before this (monotonic) but on request: a failure's back-off, or the
        # store full and holding records back.
        retry_at = 0.0
        next_housekeeping = time.monotonic() + schedule.housekeeping_interval
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
            housekeep = self._full.store_full or self._last_start >= next_housekeeping
            ok = self._commit(work, housekeep)
            if ok:
                backoff = 0.0
                held = work.held  # the store is full: records wait in the queue
                retry_at = time.monotonic() + schedule.full_retry if held else 0.0
                if housekeep:
                    next_housekeeping = time.monotonic() + schedule.housekeeping_interval
            else:
                backoff = schedule.backoff(backoff)
                retry_at = time.monotonic() + backoff
            with self._cond:
                if stopping and ok and self._committed >= self._pending.submitted:
                    return

    def _due(self, now: float, retry_at: float, next_housekeeping: float) -> float:
        """When the next commit is due (monotonic; under the lock): `Schedule.due`."""
        return self._schedule.due(
            self._pending,
            now,
            self._last_start,
            retry_at,
            next_housekeeping,
            urgent=self._urgent,
            stopping=self._stopping,
        )

    def _take(self) -> Work:
        """A snapshot of what is pending; it leaves the queue only once committed."""
        return self._pending.take(self._full.store_full, self._page_count_request)

    def _commit(self, work: Work, housekeep: bool) -> bool:
        started = time.perf_counter()
        bounds = Bounds(self._max_age, self._max_bytes) if housekeep else None
        if bounds is not None:
            # The bounds may delete rows the memory holds: none is served once the commit is in.
            self.recent.clear()
        try:
            # `_last_seq` changes on this thread only (`_settle`): no lock to read it here.
            written = commit(
                self._conn, work, self._clock, bounds, self._full.store_full, self._last_seq
            )
        except Exception as exc:  # sqlite3.Error mostly; the thread must survive anything
            # The seqs the commits count on, from the file again: should something else have
            # written records (it must not: one writer per store), the retry gets past them.
            seqs = None
            with contextlib.suppress(sqlite3.Error):
                seqs = last_seqs(self._conn)
            with self._cond:
                if seqs is not None:
                    self._last_seq = seqs
                self._counters.errors += 1
                self._counters.last_error = f"{type(exc).__name__}: {exc}"
                if disk_full(exc):
                    self._full.disk_full = f"the disk is full ({exc})"
                    self._update_alarm()
            return False
        latency = time.perf_counter() - started
        hw = written.housework
        if not (hw.deleted or hw.dropped_batches):  # before the listeners wake a lane
            self.recent.add(written.telemetry, work.telemetry)
        with self._cond:
            self._settle(work, latency, written.gaps, written.housework)
            self._counters.count_lost(written.lost)
        return True

    def _settle(self, work: Work, latency: float, gaps: int, hw: Housework) -> None:
        """Book a committed transaction: dequeue what it wrote, count, wake flush waiters."""
        written = self._pending.settle(work)
        self._last_seq["telemetry"] += len(work.telemetry)
        self._last_seq["events"] += len(work.events)
        self._last_seq["gaps"] += gaps
        batches, events = len(work.telemetry), len(work.events)
        self._counters.count_commit(batches, written, events, gaps, latency, hw)
        self._full.store_full = hw.store_full
        self._full.disk_full = None
        self._update_alarm()
        # A full store holds records back: those are not committed yet.
        if not work.held:
            self._committed = work.submitted
        elif not self._full.store_full:
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
        data = self._full.update(
            self.path, self._max_pending_readings, self._counters.dropped_readings
        )
        if data is not None:
            self._queue_alarm(data)

    def _queue_alarm(self, data: dict[str, object]) -> None:
        body = json.dumps(data, separators=(",", ":"))
        self._pending.events.append((self._clock(), str(EventKind.ALARM), None, body))
        self._pending.submitted += 1

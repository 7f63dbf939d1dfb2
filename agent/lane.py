"""One sink's place in one stream (`Lane`), the sends in flight on it, the records it
reads, where its live records begin and what wakes it (`Bell`): the forwarder's bookkeeping,
without I/O beyond the store's reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.clock import Clock
from agent.sink import EventRecord, GapRecord, RecordBatch, Records, TelemetryRecords
from agent.store import STREAMS, RecentTelemetry, StoreReader


def read_records(
    store: StoreReader,
    stream: str,
    after: int,
    limit: int,
    recent: RecentTelemetry | None = None,
) -> RecordBatch:
    """Up to `limit` records of `stream` after seq `after`, as sinks receive them.

    Telemetry comes as one columnar `TelemetryRecords` (no object per record until a sink
    asks for one): from `recent`, the writer's memory of its last commits, when it holds the
    records from `after + 1` on, else from the file. Both give the same run; the live records
    of a lane that keeps up cost no SQL.
    """
    if stream == "telemetry":
        run = None if recent is None else recent.run(after, limit)
        return TelemetryRecords(store.read_telemetry_run(after, limit) if run is None else run)
    if stream == "events":
        return Records(
            stream, [EventRecord(e.seq or 0, e) for e in store.read_events(after, limit)]
        )
    gaps = store.read_gaps(after, limit)
    return Records(
        stream,
        [
            GapRecord(
                g.seq, g.stream, g.first_seq, g.last_seq, g.count, g.readings, g.ts_ns, g.reason
            )
            for g in gaps
        ],
    )


def live_boundary(store: StoreReader, lane: Lane, stream: str, since_ns: int) -> tuple[int, bool]:
    """`store.live_boundary(stream, since_ns)` as the lane's decisions see it, asked of the
    store only when the answer may have moved past the lane's cursor.

    While the store holds a record at or before `lane.cursor + 1` stored at or after
    `since_ns`, the query answers a seq at or before `lane.cursor + 1` (it is the first seq
    stored since then): every record after the cursor is live, and that is all the lane uses
    the boundary for. The lane remembers when that record was stored (`live_until_ns`) and
    asks the store again only once the live window begins after it, about once a
    `live_window` on a lane that keeps up. The cursor never moves back, so the record stays at
    or before it.
    """
    if since_ns <= lane.live_until_ns:
        return lane.cursor + 1, True
    live_from, held = store.live_boundary(stream, since_ns)
    if held and live_from <= lane.cursor + 1:
        stored = store.stored_ns_at(stream, lane.cursor + 1)
        lane.live_until_ns = -1 if stored is None else stored
    return live_from, held


def keep(records: RecordBatch, lane: Lane, below: int | None = None) -> RecordBatch:
    """The records not already done ahead of the lane's cursor and, given `below`, with a
    smaller seq."""
    if not lane.ahead and below is None:
        return records
    seqs = records.seqs
    keep = ~lane.is_ahead(seqs)
    if below is not None:
        keep &= seqs < below
    return records.select(keep)


def mark_historical(records: RecordBatch, live_from: int) -> RecordBatch:
    """The records (in seq order, as read) marked historical when their seq is below
    `live_from`: stored before the live window began (when the agent stored them, not the
    device's timestamp, decides). All live or all historical, as one mark."""
    seqs = records.seqs
    if not len(seqs) or int(seqs[0]) >= live_from:
        return records.marked(False)
    if int(seqs[-1]) < live_from:
        return records.marked(True)
    return records.marked(seqs < live_from)


@dataclass(slots=True)
class Send:
    """One send in flight on a lane: its records, the range of seqs they stand for (`after`
    exclusive to `last`, holes included) and the task awaiting the acknowledgement."""

    records: RecordBatch
    after: int
    last: int
    task: asyncio.Task[None]


class Lane:
    """Where one sink is in one stream.

    `cursor` is the last seq with nothing undelivered at or before it: the store's cursor.
    Live records sent ahead of a backlog wait in `ahead` until the backlog reaches them, so a
    crash sends them again (at least once) rather than skipping the backlog.

    The lane moves over ranges of seqs, not single records: a read after seq `a` that returned
    records up to seq `b` stands for all of `a + 1..b`, and the seqs of that range it did not
    return are no longer in the store (the size bound dropped them; a gap record names them).
    So a hole punched into the backlog is crossed like delivered records, and a restart does
    not stop at it either.
    """

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.acked = cursor
        # Ranges `(first, last)` done beyond the cursor, sorted and apart (usually empty).
        self.ahead: list[tuple[int, int]] = []
        self.live_next = cursor + 1  # the next live record to send ahead
        self.issued = cursor  # the last seq handed to a send still in flight (pipelining)
        # The writer's last committed seq when the lane last read to the end of the store: no
        # read until the writer commits past it (-1: read at the next turn).
        self.seen = -1
        # A record at or before `cursor + 1` the store holds was stored at this time
        # (`live_boundary`; -1: unknown).
        self.live_until_ns = -1

    def read_again(self) -> None:
        """The sends in flight were abandoned: read again from the cursor."""
        self.issued = self.cursor
        self.seen = -1

    def done_range(self, after: int, last: int) -> None:
        """Every seq in `after + 1..last` is delivered, refused or gone from the store."""
        if last <= after or last <= self.cursor:
            return
        self.live_next = max(self.live_next, last + 1)
        if after <= self.cursor:
            self.cursor = last
        else:
            self.ahead.append((after + 1, last))
            self.ahead.sort()
        if not self.ahead:  # a plain drain: nothing more to do per batch
            return
        merged: list[tuple[int, int]] = []
        for first, end in self.ahead:
            if first <= self.cursor + 1:
                self.cursor = max(self.cursor, end)
            elif merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((first, end))
        self.ahead = [(first, end) for first, end in merged if end > self.cursor]
        self.live_next = max(self.live_next, self.cursor + 1)

    def is_ahead(self, seqs: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Which of `seqs` lie in a range already done beyond the cursor."""
        done = np.zeros(seqs.shape[0], dtype=np.bool_)
        for first, last in self.ahead:
            done |= (seqs >= first) & (seqs <= last)
        return done


class Bell:
    """What wakes a waiting lane: a commit to its stream, the answer to a send, a timer.

    A ring while nobody waits is kept for the next `wait`, so none is lost. One future per
    wait and at most one sleep on the clock, where `asyncio.wait` over an event and a sleep
    would make two tasks and a wait each time.
    """

    __slots__ = ("_rung", "_waiter")

    def __init__(self) -> None:
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None

    def ring(self, *_: object) -> None:
        """Wake the lane (any arguments: it is also a task's done-callback)."""
        self._rung = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, clock: Clock, deadline: float | None) -> None:
        """Until rung since the last wait returned, or `clock` reaches `deadline` (None:
        no timer)."""
        if not self._rung:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer: asyncio.Task[None] | None = None
            if deadline is not None:
                timer = asyncio.ensure_future(clock.sleep_until(deadline))
                timer.add_done_callback(lambda _: _wake(waiter))
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        self._rung = False


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    """How a forwarder reads and paces: the `[forward]` section."""

    batch_size: int = 200  # records per send
    live_window: float = 10.0  # seconds: older records are sent as historical
    replay_rate: float = 0.0  # historical records per second; 0: as fast as the sink takes
    # Seconds at most between looks at the store with nothing committed: a lane wakes on the
    # writer's commits; this finds what reached the store another way.
    idle_wait: float = 1.0


@dataclass(slots=True)
class ForwardStatistics:
    """A sink's forwarding figures: its state, records sent per stream, failures."""

    state: str = "connecting"  # connecting | connected | failing
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    historical: int = 0
    quarantined: int = 0
    failures: int = 0
    last_error: str = ""


class ReplayBudget:
    """How many historical records may go now: a token bucket filled at `rate` records a
    second, up to one batch (`replay_rate`; 0 means no limit)."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self._tokens = 0.0
        self._at = now

    def allowance(self, batch: int, now: float) -> int:
        if self.rate <= 0:
            return batch
        elapsed = now - self._at
        self._at = now
        self._tokens = min(float(batch), self._tokens + elapsed * self.rate)
        return int(self._tokens)

    def due(self) -> float | None:
        """When the rate allows the next historical record (None: it allows one now, or there
        is no rate: nothing to wait for but a commit or the next look)."""
        if self.rate <= 0 or self._tokens >= 1.0:
            return None
        return self._at + (1.0 - self._tokens) / self.rate

    def spend(self, records: int) -> None:
        if self.rate > 0:
            self._tokens = max(0.0, self._tokens - records)

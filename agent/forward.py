"""Store and forward: each sink reads the store after its own cursor and sends in order.

One task per sink and stream (telemetry, events, gaps). Each reads up to `batch_size` records
after the sink's cursor, hands them to `sink.send`, and moves the cursor only when `send`
returned, i.e. when the far side acknowledged every record: delivery is at least once and
ordered per stream, and `(agent_id, stream, seq)` lets the receiver drop duplicates.

- A far side that is down (`ConnectorError`) is retried with jittered exponential back-off;
  nothing moves until it answers again.
- A record the far side refuses as invalid (`SinkRejected`) is quarantined with the reason and
  the cursor passes it, so one poisoned record never blocks the queue. `lineside quarantine
  retry` asks for quarantined records to be sent again.
- After an outage the records older than `live_window` are a backlog: live records go first
  (so current values keep flowing), the backlog follows marked historical, at most
  `replay_rate` records per second when that is set. The store's cursor moves only over records
  with nothing undelivered before them, so a crash resends rather than skips.
- Telemetry is read as one columnar run per batch (`TelemetryRecords`), never an object per
  reading. A sink that keeps concurrent sends in order (`concurrent_sends`, MQTT) gets the next
  batch while the previous one waits for its acknowledgement; the cursor still moves in order,
  and a failure sends both again.
- An idle lane waits for the store writer's next commit (or `idle_wait` at most), not a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.clock import Clock
from agent.errors import ConnectorError, SinkRejected
from agent.poller import Backoff
from agent.secrets import redact
from agent.sink import EventRecord, GapRecord, Record, Sink, TelemetryRecord, TelemetryRecords
from agent.store import STREAMS, Store, StoreWriter

log = logging.getLogger("lineside.forward")


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    batch_size: int = 200  # records per send
    live_window: float = 10.0  # seconds: older records are sent as historical
    replay_rate: float = 0.0  # historical records per second; 0: as fast as the sink takes
    idle_wait: float = 0.05  # seconds at most between looks at the store with nothing new


@dataclass(slots=True)
class SinkStatistics:
    state: str = "connecting"  # connecting | connected | failing
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    historical: int = 0
    quarantined: int = 0
    failures: int = 0
    last_error: str = ""


def read_records(store: Store, stream: str, after: int, limit: int) -> Sequence[Record]:
    """Up to `limit` records of `stream` after seq `after`, as sinks receive them.

    Telemetry comes as one columnar `TelemetryRecords` (no object per record until a sink
    asks for one).
    """
    if stream == "telemetry":
        return TelemetryRecords(store.read_telemetry_run(after, limit))
    if stream == "events":
        return [EventRecord(e.seq or 0, e) for e in store.read_events(after, limit)]
    return [
        GapRecord(g.seq, g.stream, g.first_seq, g.last_seq, g.count, g.readings, g.ts_ns, g.reason)
        for g in store.read_gaps(after, limit)
    ]


def _seqs(records: Sequence[Record]) -> list[int]:
    if isinstance(records, TelemetryRecords):
        return records.seqs.tolist()  # type: ignore[no-any-return]
    return [r.seq for r in records]


def _keep(records: Sequence[Record], ahead: set[int], below: int | None = None) -> Sequence[Record]:
    """The records not in `ahead` (already delivered) and, given `below`, with a smaller seq."""
    if isinstance(records, TelemetryRecords):
        keep = np.ones(len(records), dtype=np.bool_)
        if ahead:
            keep &= ~np.isin(records.seqs, np.fromiter(ahead, dtype=np.int64, count=len(ahead)))
        if below is not None:
            keep &= records.seqs < below
        return records.select(keep)
    limit = below if below is not None else 1 << 62
    return [r for r in records if r.seq < limit and r.seq not in ahead]


def _ts_ns(record: Record) -> int:
    if isinstance(record, TelemetryRecord):
        return int(record.batch.ts_ns[0]) if len(record.batch) else 0
    if isinstance(record, EventRecord):
        return record.event.ts_ns
    return record.ts_ns


def _with_historical(record: Record, historical: bool) -> Record:
    if not historical:
        return record
    if isinstance(record, TelemetryRecord):
        return TelemetryRecord(record.seq, record.batch, True)
    if isinstance(record, EventRecord):
        return EventRecord(record.seq, record.event, True)
    return GapRecord(
        record.seq,
        record.of_stream,
        record.first_seq,
        record.last_seq,
        record.count,
        record.readings,
        record.ts_ns,
        record.reason,
        True,
    )


def _marked(
    records: Sequence[Record], historical: bool | None, old_before_ns: int
) -> Sequence[Record]:
    """The records marked historical: all, none, or (None) those stamped before `old_before_ns`."""
    if isinstance(records, TelemetryRecords):
        if historical is None:
            return records.marked(records.run.ts_ns < old_before_ns)
        return records.marked(historical)
    if historical is None:
        return [_with_historical(r, _ts_ns(r) < old_before_ns) for r in records]
    return [_with_historical(r, historical) for r in records]


def _historical_count(records: Sequence[Record]) -> int:
    if isinstance(records, TelemetryRecords):
        return int(records.historical.sum())
    return sum(1 for r in records if r.historical)


@dataclass(slots=True)
class _Send:
    """One send in flight on a lane: its records and the task awaiting the acknowledgement."""

    records: Sequence[Record]
    task: asyncio.Task[None]


class _Lane:
    """Where one sink is in one stream.

    `cursor` is the last seq with nothing undelivered at or before it: the store's cursor.
    Live records sent ahead of a backlog wait in `ahead` until the backlog reaches them, so a
    crash sends them again (at least once) rather than skipping the backlog.
    """

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.acked = cursor
        self.ahead: set[int] = set()
        self.live_next = cursor + 1  # the next live record to send ahead
        self.issued = cursor  # the last seq handed to a send still in flight (pipelining)

    def done_all(self, seqs: list[int]) -> None:
        """`done` for each of `seqs` (ascending); a run right after the cursor in one step."""
        if seqs and seqs[0] == self.cursor + 1 and seqs[-1] - seqs[0] + 1 == len(seqs):
            self.skip_to(seqs[-1])
            return
        for seq in seqs:
            self.done(seq)

    def done(self, seq: int) -> None:
        if seq == self.cursor + 1:
            self.skip_to(seq)
        elif seq > self.cursor:
            self.ahead.add(seq)
            self.live_next = max(self.live_next, seq + 1)

    def skip_to(self, seq: int) -> None:
        """Everything up to `seq` is delivered (or no longer in the store)."""
        self.cursor = max(self.cursor, seq)
        if self.ahead:  # empty in a plain drain: no new set per batch
            self.ahead = {s for s in self.ahead if s > self.cursor}
        while self.cursor + 1 in self.ahead:
            self.cursor += 1
            self.ahead.discard(self.cursor)
        self.live_next = max(self.live_next, self.cursor + 1)


class Forwarder:
    """Runs one sink: its connection, and one ordered lane per stream."""

    def __init__(
        self,
        sink: Sink,
        store: Store,
        writer: StoreWriter,
        clock: Clock,
        settings: ForwardSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.sink = sink
        self.store = store
        self.writer = writer
        self.clock = clock
        self.settings = settings or ForwardSettings()
        self.stats = SinkStatistics()
        self._rng = rng or random.Random()
        self._backoff = Backoff()
        self._connected = False
        self._lock = asyncio.Lock()  # one send at a time on the sink's connection
        self._replay_tokens = 0.0
        self._replay_at = clock.monotonic()
        # Set by the store writer's commits: an idle lane looks again at once (latency).
        self._commits: dict[str, asyncio.Event] = {}

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._commits = {stream: asyncio.Event() for stream in STREAMS}

        def committed() -> None:  # on the writer thread
            # RuntimeError: the loop is closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_lanes)

        self.writer.add_commit_listener(committed)
        try:
            async with asyncio.TaskGroup() as group:
                for stream in STREAMS:
                    group.create_task(self._lane(stream), name=f"{self.sink.name}-{stream}")
                group.create_task(self._retries(), name=f"{self.sink.name}-retries")
                background = getattr(self.sink, "background", None)
                if background is not None:
                    group.create_task(
                        self._background(background), name=f"{self.sink.name}-background"
                    )
        finally:
            self.writer.remove_commit_listener(committed)
            await self.sink.close()

    async def _background(self, background: Callable[[], Awaitable[None]]) -> None:
        """The sink's work beside sending; a bug in it must not stop the lanes."""
        try:
            await background()
        except Exception:
            log.exception("%s: its background work stopped", self.sink.name)

    def _wake_lanes(self) -> None:
        for event in self._commits.values():
            event.set()

    async def _idle(self, stream: str) -> None:
        """Wait for the writer's next commit, or `idle_wait` at most (the clock's, for tests
        and for records that reach the store another way)."""
        commit = self._commits.setdefault(stream, asyncio.Event())
        if commit.is_set():
            commit.clear()
            return
        deadline = self.clock.monotonic() + self.settings.idle_wait
        sleeping = asyncio.ensure_future(self.clock.sleep_until(deadline))
        waking = asyncio.ensure_future(commit.wait())
        try:
            await asyncio.wait({sleeping, waking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            waking.cancel()
        commit.clear()

    async def _lane(self, stream: str) -> None:
        lane = _Lane(self.store.cursor(self.sink.name, stream))
        window_ns = round(self.settings.live_window * 1e9)
        batch = self.settings.batch_size
        in_flight: deque[_Send] = deque()
        try:
            while True:
                boundary = self.store.first_seq_since(stream, self.clock.time_ns() - window_ns)
                sent = 0
                if boundary is not None and boundary > lane.cursor + 1:
                    # A backlog (older than the live window) waits before the live records:
                    # live records go first, then a slice of the backlog as the replay rate
                    # allows. One send at a time here: the order across the split matters.
                    sent += await self._settle(stream, lane, in_flight, wait_all=True)
                    after = max(boundary, lane.live_next) - 1
                    live = read_records(self.store, stream, after, batch)
                    sent += await self._deliver(stream, live, lane, historical=False)
                    allowed = self._replay_allowance(batch)
                    if allowed:
                        older = read_records(self.store, stream, lane.cursor, allowed)
                        backlog = _keep(older, lane.ahead, below=boundary)
                        if not any(seq < boundary for seq in _seqs(older)):
                            lane.skip_to(boundary - 1)  # the rest of the backlog was dropped
                        sent += await self._deliver(stream, backlog, lane, historical=True)
                    lane.issued = lane.cursor
                else:
                    # Caught up, or a backlog with no live records behind it: read after what
                    # is in flight, so the next batch is read and encoded while the previous
                    # one waits for its acknowledgement (up to `concurrent_sends` of them).
                    after = max(lane.cursor, lane.issued)
                    records = read_records(self.store, stream, after, batch)
                    pending = _keep(records, lane.ahead)
                    if records and not len(pending) and not in_flight:
                        lane.skip_to(_seqs(records)[-1])
                    if len(pending):
                        old_before = self.clock.time_ns() - window_ns
                        marked = _marked(pending, None, old_before)
                        task = asyncio.create_task(self._send(marked))
                        in_flight.append(_Send(marked, task))
                        lane.issued = _seqs(marked)[-1]
                    full = len(in_flight) >= self._window
                    if full or (in_flight and not len(pending)):
                        sent += await self._settle(stream, lane, in_flight, wait_all=False)
                    elif len(pending):
                        sent += len(pending)  # in flight: look again at once
                self._acknowledge(stream, lane)
                if not sent and not in_flight:
                    await self._idle(stream)
        finally:
            for send in in_flight:
                send.task.cancel()
            await asyncio.gather(*(s.task for s in in_flight), return_exceptions=True)

    @property
    def _window(self) -> int:
        """Sends the sink keeps in flight at once, in order (its `concurrent_sends`, else 1)."""
        return max(1, int(getattr(self.sink, "concurrent_sends", 1)))

    async def _send(self, records: Sequence[Record]) -> None:
        """One attempt at `records`: connect if need be, send, wait for the acknowledgement."""
        if self._window > 1:
            # The sink keeps concurrent sends in order on its connection: only connecting is
            # one at a time.
            async with self._lock:
                await self._ensure_connected()
            await self.sink.send(records)
            return
        async with self._lock:
            await self._ensure_connected()
            await self.sink.send(records)

    async def _settle(
        self, stream: str, lane: _Lane, in_flight: deque[_Send], *, wait_all: bool
    ) -> int:
        """Wait for the oldest send in flight (or all), in order; returns how many records the
        far side answered for. A failure abandons the later sends: the lane reads again from
        its cursor, so they are sent again (at least once, never skipped)."""
        taken = 0
        while in_flight:
            send = in_flight.popleft()
            try:
                await send.task
            except SinkRejected as exc:
                await self._abandon(lane, in_flight)
                # The records after the refused one are read again from the store next.
                return taken + self._rejected(stream, lane, send.records, exc)
            except ConnectorError as exc:
                await self._abandon(lane, in_flight)
                await self._failed(exc)
                return taken
            taken += self._took(stream, lane, send.records, len(send.records))
            if not wait_all:
                break
        return taken

    async def _abandon(self, lane: _Lane, in_flight: deque[_Send]) -> None:
        for send in in_flight:
            send.task.cancel()
        await asyncio.gather(*(s.task for s in in_flight), return_exceptions=True)
        in_flight.clear()
        lane.issued = lane.cursor

    def _replay_allowance(self, batch: int) -> int:
        """How many historical records may go now (a token bucket at `replay_rate`)."""
        rate = self.settings.replay_rate
        if rate <= 0:
            return batch
        now = self.clock.monotonic()
        elapsed = now - self._replay_at
        self._replay_at = now
        self._replay_tokens = min(float(batch), self._replay_tokens + elapsed * rate)
        return int(self._replay_tokens)

    async def _deliver(
        self, stream: str, records: Sequence[Record], lane: _Lane, *, historical: bool | None
    ) -> int:
        """Send until the far side took or refused every record, or could not be reached;
        returns how many it took. A far side that is down costs one back-off, then the lane
        plans again, so what it sends first after an outage is what is live then, not what
        was live when the outage began.

        `historical` None means: decide by each record's age against the live window.
        """
        if not len(records):
            return 0
        old_before = self.clock.time_ns() - round(self.settings.live_window * 1e9)
        marked = _marked(records, historical, old_before)
        taken = 0
        while len(marked):
            try:
                await self._send(marked)
            except SinkRejected as exc:
                taken += self._rejected(stream, lane, marked, exc)
                marked = [] if exc.index is None else marked[exc.index + 1 :]
            except ConnectorError as exc:
                await self._failed(exc)
                return taken
            else:
                taken += self._took(stream, lane, marked, len(marked))
                marked = []
        return taken

    def _rejected(
        self, stream: str, lane: _Lane, marked: Sequence[Record], exc: SinkRejected
    ) -> int:
        """Quarantine what the far side refused; the records before it were accepted."""
        bad = 0 if exc.index is None else exc.index
        # The far side answered for the batch as a whole only when index is None, and then
        # all are refused.
        refused = list(marked) if exc.index is None else [marked[bad]]
        for record in refused:
            self.store.quarantine(self.sink.name, stream, record.seq, str(exc))
            self.stats.quarantined += 1
            log.warning("%s: %s seq %d quarantined: %s", self.sink.name, stream, record.seq, exc)
        done = marked if exc.index is None else marked[: bad + 1]
        return self._took(stream, lane, done, len(done) - len(refused))

    def _took(self, stream: str, lane: _Lane, records: Sequence[Record], accepted: int) -> int:
        """The far side answered for `records` (accepted or quarantined): the lane moves on."""
        lane.done_all(_seqs(records))
        historical = _historical_count(records)
        self.stats.historical += historical
        if self.settings.replay_rate > 0:
            self._replay_tokens = max(0.0, self._replay_tokens - historical)
        self.stats.sent[stream] += accepted
        return len(records)

    def _acknowledge(self, stream: str, lane: _Lane) -> None:
        """Move the store's cursor over what is delivered without a hole before it."""
        if lane.cursor > lane.acked:
            self.writer.submit_ack(self.sink.name, stream, lane.cursor)
            lane.acked = lane.cursor

    async def _ensure_connected(self) -> None:
        if self._connected:
            return
        await self.sink.connect()
        self._connected = True
        self._backoff.reset()
        if self.stats.state != "connected":
            log.info("%s: connected", self.sink.name)
        self.stats.state = "connected"

    async def _failed(self, exc: ConnectorError) -> None:
        self.stats.failures += 1
        self.stats.last_error = redact(str(exc))  # shown in status, status.json and the page
        if self.stats.state != "failing":
            log.warning("%s: %s; holding data in the store and retrying", self.sink.name, exc)
        self.stats.state = "failing"
        if self._connected:
            self._connected = False
            await self.sink.close()
        await self.clock.sleep_until(self.clock.monotonic() + self._backoff.next(self._rng))

    async def _retries(self) -> None:
        """Send again what `lineside quarantine retry` marked, one record at a time."""
        while True:
            for entry in self.store.quarantined(self.sink.name, retry_only=True):
                records = read_records(self.store, entry.stream, entry.seq - 1, 1)
                if not records or records[0].seq != entry.seq:
                    self.store.release(entry.id)  # no longer held by the store
                    continue
                try:
                    await self._send(records)
                except SinkRejected as exc:
                    self.store.quarantine(self.sink.name, entry.stream, entry.seq, str(exc))
                except ConnectorError as exc:
                    await self._failed(exc)
                    break
                else:
                    self.store.release(entry.id)
                    self.stats.sent[entry.stream] += 1
            await self.clock.sleep_until(self.clock.monotonic() + 1.0)

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
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.clock import Clock
from agent.errors import ConnectorError, SinkRejected
from agent.poller import Backoff
from agent.sink import EventRecord, GapRecord, Record, Sink, TelemetryRecord
from agent.store import STREAMS, Store, StoreWriter

log = logging.getLogger("lineside.forward")


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    batch_size: int = 200  # records per send
    live_window: float = 10.0  # seconds: older records are sent as historical
    replay_rate: float = 0.0  # historical records per second; 0: as fast as the sink takes
    idle_wait: float = 0.05  # seconds between looks at the store when there is nothing new


@dataclass(slots=True)
class SinkStatistics:
    state: str = "connecting"  # connecting | connected | failing
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    historical: int = 0
    quarantined: int = 0
    failures: int = 0
    last_error: str = ""


def _ts_ns(record: Record) -> int:
    if isinstance(record, TelemetryRecord):
        return int(record.batch.ts_ns[0]) if len(record.batch) else 0
    if isinstance(record, EventRecord):
        return record.event.ts_ns
    return record.ts_ns


def read_records(store: Store, stream: str, after: int, limit: int) -> list[Record]:
    """Up to `limit` records of `stream` after seq `after`, as sinks receive them."""
    if stream == "telemetry":
        return [TelemetryRecord(b.seq, b.batch) for b in store.read_telemetry(after, limit)]
    if stream == "events":
        return [EventRecord(e.seq or 0, e) for e in store.read_events(after, limit)]
    return [
        GapRecord(g.seq, g.stream, g.first_seq, g.last_seq, g.count, g.readings, g.ts_ns, g.reason)
        for g in store.read_gaps(after, limit)
    ]


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

    def done(self, seq: int) -> None:
        if seq == self.cursor + 1:
            self.skip_to(seq)
        elif seq > self.cursor:
            self.ahead.add(seq)
            self.live_next = max(self.live_next, seq + 1)

    def skip_to(self, seq: int) -> None:
        """Everything up to `seq` is delivered (or no longer in the store)."""
        self.cursor = max(self.cursor, seq)
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

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for stream in STREAMS:
                    group.create_task(self._lane(stream), name=f"{self.sink.name}-{stream}")
                group.create_task(self._retries(), name=f"{self.sink.name}-retries")
        finally:
            await self.sink.close()

    async def _lane(self, stream: str) -> None:
        lane = _Lane(self.store.cursor(self.sink.name, stream))
        window_ns = round(self.settings.live_window * 1e9)
        batch = self.settings.batch_size
        while True:
            boundary = self.store.first_seq_since(stream, self.clock.time_ns() - window_ns)
            sent = 0
            if boundary is not None and boundary > lane.cursor + 1:
                # A backlog (older than the live window) waits before the live records: live
                # records go first, then a slice of the backlog as the replay rate allows.
                live = read_records(self.store, stream, max(boundary, lane.live_next) - 1, batch)
                sent += await self._deliver(stream, live, lane, historical=False)
                allowed = self._replay_allowance(batch)
                if allowed:
                    older = read_records(self.store, stream, lane.cursor, allowed)
                    backlog = [r for r in older if r.seq < boundary and r.seq not in lane.ahead]
                    if not any(r.seq < boundary for r in older):
                        lane.skip_to(boundary - 1)  # the rest of the backlog was dropped
                    sent += await self._deliver(stream, backlog, lane, historical=True)
            else:
                records = read_records(self.store, stream, lane.cursor, batch)
                pending = [r for r in records if r.seq not in lane.ahead]
                if records and not pending:
                    lane.skip_to(records[-1].seq)
                sent += await self._deliver(stream, pending, lane, historical=None)
            self._acknowledge(stream, lane)
            if not sent:
                await self.clock.sleep_until(self.clock.monotonic() + self.settings.idle_wait)

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
        self, stream: str, records: list[Record], lane: _Lane, *, historical: bool | None
    ) -> int:
        """Send until the far side took or refused every record; returns how many it took.

        `historical` None means: decide by each record's age against the live window.
        """
        if not records:
            return 0
        if historical is None:
            old_before = self.clock.time_ns() - round(self.settings.live_window * 1e9)
            marked = [_with_historical(r, _ts_ns(r) < old_before) for r in records]
        else:
            marked = [_with_historical(r, historical) for r in records]
        taken = 0
        while marked:
            try:
                async with self._lock:
                    await self._ensure_connected()
                    await self.sink.send(marked)
            except SinkRejected as exc:
                bad = 0 if exc.index is None else exc.index
                # The records before the refused one were accepted: the far side answered
                # for the batch as a whole only when index is None, and then all are refused.
                refused = marked if exc.index is None else [marked[bad]]
                for record in refused:
                    self.store.quarantine(self.sink.name, stream, record.seq, str(exc))
                    self.stats.quarantined += 1
                    log.warning(
                        "%s: %s seq %d quarantined: %s", self.sink.name, stream, record.seq, exc
                    )
                done = marked if exc.index is None else marked[: bad + 1]
                taken += self._took(stream, lane, done, len(done) - len(refused))
                marked = [] if exc.index is None else marked[bad + 1 :]
            except ConnectorError as exc:
                await self._failed(exc)
            else:
                taken += self._took(stream, lane, marked, len(marked))
                marked = []
        return taken

    def _took(self, stream: str, lane: _Lane, records: Sequence[Record], accepted: int) -> int:
        """The far side answered for `records` (accepted or quarantined): the lane moves on."""
        for record in records:
            lane.done(record.seq)
        historical = sum(1 for r in records if r.historical)
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
        self.stats.last_error = str(exc)
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
                    async with self._lock:
                        await self._ensure_connected()
                        await self.sink.send(records)
                except SinkRejected as exc:
                    self.store.quarantine(self.sink.name, entry.stream, entry.seq, str(exc))
                except ConnectorError as exc:
                    await self._failed(exc)
                    break
                else:
                    self.store.release(entry.id)
                    self.stats.sent[entry.stream] += 1
            await self.clock.sleep_until(self.clock.monotonic() + 1.0)

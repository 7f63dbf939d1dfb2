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
- After an outage the records the store took in before the last `live_window` are a backlog:
  live records go first (so current values keep flowing), the backlog follows marked
  historical, at most `replay_rate` records per second when that is set. When the agent stored a
  record decides, never the device's timestamp (an OPC UA value that rarely changes keeps an old
  SourceTimestamp). The store's cursor moves only over records with nothing undelivered before
  them, so a crash resends rather than skips.
- A lane moves over ranges of seqs: records the size bound dropped behind its cursor leave a
  hole that it crosses (a gap record names them), so the backlog drains at full rate after an
  outage that overflowed the store, and a restart does not stop at the hole either.
- Telemetry is read as one columnar run per batch (`TelemetryRecords`), never an object per
  reading. A sink that keeps concurrent sends in order (`concurrent_sends`, MQTT) gets the next
  batch while the previous one waits for its acknowledgement, and a commit that comes while a
  send waits is sent at once if the window has room (a broker may hold a PUBACK back by a
  delayed ack); the cursor still moves in order, and a failure sends both again.
- A lane reads the store only when the writer committed past what it last read to the end of
  (`StoreWriter.committed_seq`), or once an `idle_wait` (1 s) for records that reached the
  store another way; else it waits on one `Bell`, rung by the writer's next commit to its
  stream, a send's answer or that timer, not a poll. The writer commits a record at once when
  it was idle (group commit, docs/decisions/0008-group-commit-and-live-forwarding.md), so a
  live record is sent within a commit of its poll, and never before that commit. The live
  boundary is asked of the store only when it may have moved past the lane's cursor
  (`agent.lane.live_boundary`).
- A sink whose streams are independent (`independent_streams`, HTTP: a client per stream)
  sends on each stream on its own: a request hanging on one stream holds back no other, and a
  failing stream backs off alone without closing the sink under the others.
- A failure that says how long to wait (`ConnectorError.retry_after`, an HTTP Retry-After)
  backs off at least that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable

from agent.clock import Clock
from agent.errors import ConnectError, ConnectorError, SinkRejected, one_line
from agent.lane import (
    Bell,
    ForwardSettings,
    ForwardStatistics,
    Lane,
    ReplayBudget,
    Send,
    keep,
    live_boundary,
    mark_historical,
    read_records,
)
from agent.poller import Backoff
from agent.secrets import redact
from agent.sink import HasBackground, IndependentStreams, RecordBatch, SendsAhead, Sink
from agent.store import STREAMS, Store, StoreWriter

log = logging.getLogger("lineside.forward")


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
        self._abilities: tuple[Sink, bool, bool] | None = None  # `_sink_can`
        self.store = store
        self.writer = writer
        self.clock = clock
        self.settings = settings or ForwardSettings()
        self.stats = ForwardStatistics()
        self._rng = rng or random.Random()
        self._backoff = Backoff()
        self._connected = False
        self._lock = asyncio.Lock()  # one send at a time on the sink's connection
        # Independent streams: one send at a time per stream, a back-off per stream, and the
        # streams failing now (the sink is "failing" while any is).
        self._stream_locks: dict[str, asyncio.Lock] = {}
        self._stream_backoffs: dict[str, Backoff] = {}
        self._failing: set[str] = set()
        self._budget = ReplayBudget(self.settings.replay_rate, clock.monotonic())
        # Rung by the store writer's commits: an idle lane looks again at once (latency).
        self._bells: dict[str, Bell] = {}
        self._committed: dict[str, int] = {}  # the writer's last seq per stream, lanes woken for
        # Set (and replaced) whenever a lane connects the sink again.
        self._reconnected = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._bells = {stream: Bell() for stream in STREAMS}

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
                if isinstance(self.sink, HasBackground):
                    group.create_task(
                        self._background(self.sink.background),
                        name=f"{self.sink.name}-background",
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
        """After a commit: wake the lanes whose stream it wrote to (telemetry, mostly)."""
        for stream, bell in self._bells.items():
            seq = self.writer.committed_seq(stream)
            if seq != self._committed.get(stream):
                self._committed[stream] = seq
                bell.ring()

    async def _sleep_or(self, event: asyncio.Event, deadline: float) -> None:
        """Until the clock reaches `deadline` or `event` is set, whichever comes first."""
        sleeping = asyncio.ensure_future(self.clock.sleep_until(deadline))
        waking = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeping, waking}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            waking.cancel()

    async def _lane(self, stream: str) -> None:
        """One stream's lane: settle what the far side answered, read and send what the
        writer committed, then sleep until the next commit, answer or look."""
        lane = Lane(self.store.cursor(self.sink.name, stream))
        bell = self._bells.setdefault(stream, Bell())
        in_flight: deque[Send] = deque()
        look_at = self.clock.monotonic()  # when to look at the store even with no commit
        try:
            while True:
                # The far side's answers, in order: the cursor moves over what it took.
                while in_flight and in_flight[0].task.done():
                    await self._settle(stream, lane, in_flight, wait_all=False)
                committed = self.writer.committed_seq(stream)
                room = len(in_flight) < self._window
                if room and (committed > lane.seen or self.clock.monotonic() >= look_at):
                    held = await self._look(stream, lane, in_flight, bell, committed)
                    look_at = self.clock.monotonic() + self.settings.idle_wait
                    if held is not None:  # the replay rate holds the backlog back until then
                        look_at = min(look_at, held)
                self._acknowledge(stream, lane)
                if in_flight and in_flight[0].task.done():
                    continue
                if len(in_flight) >= self._window:
                    await bell.wait(self.clock, None)  # a send's answer rings
                elif lane.seen >= committed:
                    # Read to the end: a commit, an answer or the next look rings.
                    await bell.wait(self.clock, look_at)
        finally:
            for send in in_flight:
                send.task.cancel()
            await asyncio.gather(*(s.task for s in in_flight), return_exceptions=True)

    async def _look(
        self, stream: str, lane: Lane, in_flight: deque[Send], bell: Bell, committed: int
    ) -> float | None:
        """Read after the lane's place and send what is new; `committed` is the writer's last
        seq of `stream` before the read. Returns when the replay rate allows the backlog to
        go again, when it held it back and nothing else could go."""
        batch = self.settings.batch_size
        since = self.clock.time_ns() - round(self.settings.live_window * 1e9)
        # Records from `live_from` on were stored within the live window.
        live_from, live_held = live_boundary(self.store, lane, stream, since)
        if live_held and live_from > lane.cursor + 1:
            return await self._replay(stream, lane, in_flight, live_from, committed)
        # Caught up, or a backlog with no live records behind it: read after what is in
        # flight, so the next batch is read and encoded while the previous one waits for its
        # acknowledgement (up to `concurrent_sends` of them). A commit that comes while a send
        # waits goes out at once (a broker's PUBACK can take a delayed-ack 40 ms) as long as
        # the window has room.
        after = max(lane.cursor, lane.issued)
        records = read_records(self.store, stream, after, batch, self.writer.recent)
        if len(records):
            last = int(records.seqs[-1])
            pending = keep(records, lane)
            if len(pending):
                marked = mark_historical(pending, live_from)
                task = asyncio.create_task(self._send(marked))
                task.add_done_callback(bell.ring)
                in_flight.append(Send(marked, after, last, task))
            else:  # all sent ahead already (and holes): nothing to send
                lane.done_range(after, last)
            lane.issued = last
        # A short read saw everything committed before it: no read until the next commit.
        lane.seen = max(committed, lane.issued) if len(records) < batch else -1
        return None

    async def _replay(
        self, stream: str, lane: Lane, in_flight: deque[Send], live_from: int, committed: int
    ) -> float | None:
        """A backlog (stored before the live window) waits before the live records: live
        records go first, then a slice of the backlog as the replay rate allows. One send at
        a time here: the order across the split matters."""
        batch = self.settings.batch_size
        sent = await self._settle(stream, lane, in_flight, wait_all=True)
        before = (lane.cursor, lane.live_next, self.stats.failures)
        after = max(live_from, lane.live_next) - 1
        live = read_records(self.store, stream, after, batch, self.writer.recent)
        if len(live):
            last = int(live.seqs[-1])
            sent += await self._deliver(stream, live, lane, after, last, live_from=0)
        allowed = self._budget.allowance(batch, self.clock.monotonic())
        if allowed:
            after = lane.cursor
            older = read_records(self.store, stream, after, allowed, self.writer.recent)
            if len(older):
                # The read stands for every seq up to its last one, or up to the live
                # records when it reached them: what it skipped was dropped.
                last = min(int(older.seqs[-1]), live_from - 1)
                backlog = keep(older, lane, below=live_from)
                sent += await self._deliver(stream, backlog, lane, after, last, live_from=live_from)
        lane.read_again()
        if sent or (lane.cursor, lane.live_next, self.stats.failures) != before:
            return None  # read again at once
        # Nothing could go: the rate holds the backlog back, and the live records are sent.
        lane.seen = committed
        return self._budget.due()

    @property
    def _window(self) -> int:
        """Sends the sink keeps in flight at once, in order (its `concurrent_sends`, else 1)."""
        sink = self.sink
        return max(1, sink.concurrent_sends) if self._sink_can()[0] else 1  # type: ignore[attr-defined]

    @property
    def _independent(self) -> bool:
        return self._sink_can()[1] and self.sink.independent_streams  # type: ignore[attr-defined]

    def _sink_can(self) -> tuple[bool, bool]:
        """Whether the sink sends ahead and keeps streams apart, asked once per sink object:
        a runtime Protocol check costs ~10 us, and these are asked per send."""
        if self._abilities is None or self._abilities[0] is not self.sink:
            sink = self.sink
            self._abilities = (
                sink,
                isinstance(sink, SendsAhead),
                isinstance(sink, IndependentStreams),
            )
        return self._abilities[1], self._abilities[2]

    async def _send(self, records: RecordBatch) -> None:
        """One attempt at `records`: connect if need be, send, wait for the acknowledgement.

        A sink failing in a way it did not foresee (a KeyError in its encoder, a library's bare
        assertion) fails the send like a lost connection: the records stay in the store and go
        again after the back-off, and the reason is one line in the sink's status.
        """
        try:
            await self._attempt(records)
        except ConnectorError:
            raise
        except Exception as exc:
            log.debug("%s: send failed", self.sink.name, exc_info=exc)
            raise ConnectError(one_line(exc)) from None

    async def _attempt(self, records: RecordBatch) -> None:
        if self._independent:
            await self._send_on_stream(records)
            return
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

    async def _send_on_stream(self, records: RecordBatch) -> None:
        """`_send` for a sink with independent streams: only connecting is one at a time."""
        stream = records.stream
        async with self._lock:
            await self._ensure_connected()
        async with self._stream_locks.setdefault(stream, asyncio.Lock()):
            await self.sink.send(records)
        if stream in self._failing:
            self._failing.discard(stream)
            self._stream_backoffs.pop(stream, None)
            if not self._failing and self.stats.state != "connected":
                log.info("%s: delivering again", self.sink.name)
                self.stats.state = "connected"

    async def _settle(
        self, stream: str, lane: Lane, in_flight: deque[Send], *, wait_all: bool
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
                took, upto = self._rejected(stream, send.records, exc)
                lane.done_range(send.after, send.last if upto is None else upto)
                return taken + took
            except ConnectorError as exc:
                await self._abandon(lane, in_flight)
                await self._failed(exc, stream)
                return taken
            taken += self._took(stream, send.records, len(send.records))
            lane.done_range(send.after, send.last)
            if not wait_all:
                break
        return taken

    async def _abandon(self, lane: Lane, in_flight: deque[Send]) -> None:
        for send in in_flight:
            send.task.cancel()
        await asyncio.gather(*(s.task for s in in_flight), return_exceptions=True)
        in_flight.clear()
        lane.read_again()

    async def _deliver(
        self,
        stream: str,
        records: RecordBatch,
        lane: Lane,
        after: int,
        last: int,
        *,
        live_from: int,
    ) -> int:
        """Send `records`, which stand for the seqs `after + 1..last`, until the far side took
        or refused every one, or could not be reached; returns how many it took. A far side
        that is down costs one back-off, then the lane plans again, so what it sends first
        after an outage is what is live then, not what was live when the outage began.

        Records below `live_from` go out marked historical.
        """
        marked = mark_historical(records, live_from)
        taken = 0
        while len(marked):
            try:
                await self._send(marked)
            except SinkRejected as exc:
                took, upto = self._rejected(stream, marked, exc)
                taken += took
                if upto is None or exc.index is None:  # refused as a whole: all are done
                    break
                lane.done_range(after, upto)
                after, marked = upto, marked[exc.index + 1 :]
            except ConnectorError as exc:
                await self._failed(exc, stream)
                return taken
            else:
                taken += self._took(stream, marked, len(marked))
                break
        lane.done_range(after, last)
        return taken

    def _rejected(
        self, stream: str, marked: RecordBatch, exc: SinkRejected
    ) -> tuple[int, int | None]:
        """Quarantine what the far side refused; the records before it were accepted.

        Returns how many records the far side answered for and the seq of the refused one
        (None: it refused the send as a whole, so every record is done)."""
        bad = 0 if exc.index is None else exc.index
        # The far side answered for the batch as a whole only when index is None, and then
        # all are refused.
        refused = list(marked) if exc.index is None else [marked[bad]]
        for record in refused:
            self.writer.submit_quarantine(self.sink.name, stream, record.seq, str(exc))
            self.stats.quarantined += 1
            log.warning("%s: %s seq %d quarantined: %s", self.sink.name, stream, record.seq, exc)
        done = marked if exc.index is None else marked[: bad + 1]
        took = self._took(stream, done, len(done) - len(refused))
        return took, None if exc.index is None else marked[bad].seq

    def _took(self, stream: str, records: RecordBatch, accepted: int) -> int:
        """The far side answered for `records` (accepted or quarantined): count them."""
        historical = records.historical_count()
        self.stats.historical += historical
        self._budget.spend(historical)
        self.stats.sent[stream] += accepted
        return len(records)

    def _acknowledge(self, stream: str, lane: Lane) -> None:
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
        self._reconnected.set()  # wake the lanes waiting out a back-off
        self._reconnected = asyncio.Event()
        if self.stats.state != "connected":
            log.info("%s: connected", self.sink.name)
        self.stats.state = "connected"

    async def _failed(self, exc: ConnectorError, stream: str | None = None) -> None:
        self.stats.failures += 1
        self.stats.last_error = redact(str(exc))  # shown in status, status.json and the page
        if self.stats.state != "failing":
            log.warning("%s: %s; holding data in the store and retrying", self.sink.name, exc)
        self.stats.state = "failing"
        backoff = self._backoff
        if self._independent and stream is not None:
            # The other streams go on: the sink stays open and this stream backs off alone.
            self._failing.add(stream)
            backoff = self._stream_backoffs.setdefault(
                stream, Backoff(initial=self._backoff.initial, maximum=self._backoff.maximum)
            )
        elif self._connected:
            self._connected = False
            try:
                await self.sink.close()
            except Exception as closing:
                log.warning("%s: closing: %s", self.sink.name, one_line(closing))
        delay = backoff.next(self._rng)
        if exc.retry_after is not None:  # the far side said how long: not sooner
            await self.clock.sleep_until(self.clock.monotonic() + max(delay, exc.retry_after))
            return
        # The lanes share the connection: when one of them got through, the others stop
        # waiting out their back-off (up to 30 s), so every stream drains at once after an
        # outage, the gap records with the telemetry.
        await self._sleep_or(self._reconnected, self.clock.monotonic() + delay)

    async def _retries(self) -> None:
        """Send again what `lineside quarantine retry` marked, one record at a time."""
        released: set[int] = set()  # submitted to the writer, maybe not committed yet
        while True:
            entries = self.store.quarantined(self.sink.name, retry_only=True)
            released &= {e.id for e in entries}
            for entry in entries:
                if entry.id in released:
                    continue
                records = read_records(self.store, entry.stream, entry.seq - 1, 1)
                if not records or records[0].seq != entry.seq:
                    self._release(entry.id, released)  # no longer held by the store
                    continue
                try:
                    await self._send(records)
                except SinkRejected as exc:
                    self.writer.submit_quarantine(self.sink.name, entry.stream, entry.seq, str(exc))
                except ConnectorError as exc:
                    await self._failed(exc, entry.stream)
                    break
                else:
                    self._release(entry.id, released)
                    self.stats.sent[entry.stream] += 1
            await self.clock.sleep_until(self.clock.monotonic() + 1.0)

    def _release(self, entry_id: int, released: set[int]) -> None:
        self.writer.submit_release(entry_id)
        released.add(entry_id)

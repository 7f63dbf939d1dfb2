"""The lane's bookkeeping with a real store: where its live records begin, what wakes it."""

import asyncio
from pathlib import Path

from agent.clock import FakeClock, SystemClock
from agent.lane import Bell, Lane, live_boundary
from agent.model import Quality, ReadingBatch
from agent.store import Store, StoreWriter

T0 = 1_700_000_000_000_000_000
S = 10**9


class CountingStore(Store):
    """The real store, counting its live-boundary queries."""

    queries = 0

    def live_boundary(self, stream: str, since_ns: int) -> tuple[int, bool]:
        self.queries += 1
        return super().live_boundary(stream, since_ns)


def store_at(writer: StoreWriter, now: list[int], stored_ns: int, count: int = 1) -> None:
    """`count` records, each committed on its own, stored at `stored_ns` by the writer."""
    now[0] = stored_ns
    for i in range(count):
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [i], Quality.GOOD, T0))
        assert writer.flush_blocking(10)


def split(answer: tuple[int, bool], cursor: int, last: int) -> tuple[bool, list[int]]:
    """What the lane makes of a boundary: whether a backlog waits before live records, and
    which records after its cursor go out historical."""
    live_from, held = answer
    return held and live_from > cursor + 1, [
        s for s in range(cursor + 1, last + 1) if s < live_from
    ]


def same_split(store: CountingStore, lane: Lane, last: int, since: int) -> None:
    remembered = split(live_boundary(store, lane, "telemetry", since), lane.cursor, last)
    queried = split(Store.live_boundary(store, "telemetry", since), lane.cursor, last)
    assert remembered == queried, f"cursor {lane.cursor}, since {(since - T0) / S:+g} s"


def test_the_lane_splits_live_and_backlog_as_the_store_query_does(tmp_path: Path) -> None:
    now = [T0]
    writer = StoreWriter(tmp_path, clock=lambda: now[0])
    store = CountingStore(tmp_path)
    try:
        for i in range(30):  # seqs 1..30, stored a second apart
            store_at(writer, now, T0 + i * S)
        lane = Lane(0)
        # Time moves on in steps of half a second, the live window 10 s behind it; the lane
        # keeps up with what was stored by then.
        steps = 0
        for half in range(0, 70):
            at = T0 + half * S // 2
            lane.done_range(lane.cursor, min(30, half // 2))
            same_split(store, lane, 30, at - 10 * S)
            steps += 1
        assert store.queries <= steps // 10, "the store is asked only when the answer may move"

        # A restart: a new lane at the cursor knows nothing, and asks.
        for cursor in (0, 4, 30):
            for half in range(-4, 70, 3):
                same_split(store, Lane(cursor), 30, T0 + half * S // 2)

        # An outage: the far side is away and the writer's clock is an hour back (the lane is
        # caught up at 30 and last saw the boundary before it): seqs 31..35 are stored then.
        lane = Lane(0)
        lane.done_range(0, 30)
        same_split(store, lane, 30, T0 + 25 * S)
        store_at(writer, now, T0 - 3600 * S, count=5)
        for since in (T0 - 3601 * S, T0 + 25 * S, T0 + 29 * S, T0 + 29 * S + 1, T0 + 40 * S):
            same_split(store, lane, 35, since)
        # ... then it is back and its clock too: seqs 36..37 are live, 31..35 a backlog.
        store_at(writer, now, T0 + 50 * S, count=2)
        for since in (T0 + 29 * S, T0 + 45 * S, T0 + 50 * S, T0 + 51 * S):
            same_split(store, lane, 37, since)
            same_split(store, Lane(lane.cursor), 37, since)
        lane.done_range(30, 35)
        for since in (T0 + 45 * S, T0 + 50 * S, T0 + 51 * S):
            same_split(store, lane, 37, since)
    finally:
        writer.close()
        store.close()


async def test_a_bell_rung_while_nobody_waits_wakes_the_next_wait() -> None:
    bell = Bell()
    bell.ring()
    await asyncio.wait_for(bell.wait(SystemClock(), None), 5.0)  # at once: the ring was kept
    waiting = asyncio.ensure_future(bell.wait(SystemClock(), None))
    await asyncio.sleep(0.01)
    assert not waiting.done(), "a ring wakes one wait, not every one after it"
    bell.ring()
    await asyncio.wait_for(waiting, 5.0)


async def test_a_bell_wakes_at_its_deadline_on_the_clock_it_is_given() -> None:
    clock = FakeClock()
    bell = Bell()
    waiting = asyncio.ensure_future(bell.wait(clock, 1.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await clock.run_until(1.0)
    await asyncio.wait_for(waiting, 5.0)
    assert clock.sleepers() == 0
    # A ring before the deadline ends the wait and cancels its timer.
    waiting = asyncio.ensure_future(bell.wait(clock, 5.0))
    await asyncio.sleep(0.01)
    bell.ring()
    await asyncio.wait_for(waiting, 5.0)
    assert clock.sleepers() == 0

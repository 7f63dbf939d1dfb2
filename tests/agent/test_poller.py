"""The link loop with a scripted source on a fake clock: reconnects, back-off, bad quality."""

import asyncio
import random
from collections.abc import Mapping, Sequence

import numpy as np

from agent.clock import FakeClock
from agent.errors import ConnectError
from agent.model import Event, Quality, ReadingBatch
from agent.poller import LINK_BACKOFF_MAX, Backoff, LinkStatistics, run_link
from agent.statistics import SourceStatistics
from agent.texts import Texts


class ScriptedSource:
    """A link whose health the test switches; every poll reads tag 0 = poll count."""

    name = "plc1"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.up = True
        self.connect_attempts = 0
        self.polls = 0
        self.closed = 0

    def poll_groups(self) -> Mapping[str, float]:
        return {"1s": 1.0}

    async def connect(self) -> None:
        self.connect_attempts += 1
        if not self.up:
            raise ConnectError("connection refused")

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        if not self.up:
            raise ConnectError("connection reset")
        self.polls += 1
        return [ReadingBatch.from_columns(self.name, [0], [self.polls], Quality.GOOD, 1)]

    def bad_batches(self, groups: Sequence[str], ts_ns: int) -> list[ReadingBatch]:
        return [ReadingBatch.from_columns(self.name, [0], [np.nan], Quality.BAD, ts_ns)]

    async def close(self) -> None:
        self.closed += 1

    def statistics(self) -> SourceStatistics:
        return SourceStatistics()


async def run_for(
    source: ScriptedSource, clock: FakeClock, seconds: float, **kw: object
) -> tuple[asyncio.Future[None], list[ReadingBatch], list[Event], LinkStatistics]:
    readings: list[ReadingBatch] = []
    events: list[Event] = []
    stats = LinkStatistics()
    task = asyncio.ensure_future(
        run_link(source, clock, readings.append, events.append, stats=stats, **kw)  # type: ignore[arg-type]
    )
    await clock.run_until(clock.monotonic() + seconds)
    return task, readings, events, stats


async def test_polls_on_schedule_and_reports_connected_once() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock)
    task, readings, events, stats = await run_for(source, clock, 10.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert source.polls == 11  # ticks at 0, 1, ..., 10
    assert [e.data["state"] for e in events] == ["connected"]
    assert all(r.quality[0] == Quality.GOOD for r in readings)
    assert stats.polls == 11
    assert source.closed == 1  # closed on cancel


async def test_outage_gives_bad_quality_every_tick_and_backs_off() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock)
    backoff = Backoff(initial=1.0, maximum=8.0)
    task, readings, events, stats = await run_for(
        source, clock, 3.0, backoff=backoff, rng=random.Random(1)
    )
    source.up = False
    attempts_before = source.connect_attempts
    await clock.run_until(63.0)
    down = readings[4:]
    assert down, "ticks during the outage still produce readings"
    assert all(r.quality[0] == Quality.BAD and np.isnan(r.values[0]) for r in down)
    # back-off: far fewer connection attempts than ticks (60 ticks, attempts 1,2,4,8,8,...)
    attempts = source.connect_attempts - attempts_before
    assert 3 <= attempts <= 12, attempts
    states = [e.data["state"] for e in events]
    assert states == ["connected", "lost"], "lost is reported once, not once per attempt"
    source.up = True
    await clock.run_until(80.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [e.data["state"] for e in events] == ["connected", "lost", "restored"]
    assert readings[-1].quality[0] == Quality.GOOD
    assert stats.disconnects == 1
    assert stats.connect_failures == attempts


async def test_never_reachable_reports_lost_once_and_keeps_trying() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock)
    source.up = False
    task, readings, events, stats = await run_for(source, clock, 120.0, rng=random.Random(2))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [e.data["state"] for e in events] == ["lost"]
    assert stats.connect_failures == source.connect_attempts
    assert source.connect_attempts >= 5
    assert len(readings) == 121
    assert stats.last_error == "connection refused"


def test_backoff_grows_to_its_maximum_with_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0)
    rng = random.Random(3)
    waits = [backoff.next(rng) for _ in range(10)]
    ceilings = [min(30.0, 0.5 * 2**i) for i in range(10)]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True))
    backoff.reset()
    assert backoff.next(rng) <= 0.5


async def test_a_link_down_for_minutes_is_back_within_10s_of_the_device() -> None:
    waits = []
    for seed in range(8):  # the jitter differs per seed; the bound holds for every one
        clock = FakeClock()
        source = ScriptedSource(clock)
        source.up = False
        task, readings, events, _ = await run_for(source, clock, 300.0, rng=random.Random(seed))
        source.up = True  # the device answers again after five minutes
        down_readings = len(readings)
        await clock.run_until(clock.monotonic() + 10.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        after = [r.quality[0] == Quality.GOOD for r in readings[down_readings:]]
        assert True in after, f"seed {seed}: still down 10 s after the device came back"
        waits.append(after.index(True))  # ticks (seconds) until the first good reading
        assert [e.data["state"] for e in events] == ["lost", "connected"]
    assert max(waits) <= LINK_BACKOFF_MAX + 1, waits


class FlappingSource(ScriptedSource):
    """Accepts every connection, then loses it at the first poll while `garbling`."""

    garbling = True

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        if self.garbling:
            raise ConnectError("connection closed after a malformed answer")
        return await super().poll(groups)


async def test_a_flapping_link_backs_off_and_its_changes_are_held_back_and_counted() -> None:
    clock = FakeClock()
    source = FlappingSource(clock)
    backoff = Backoff(initial=0.5, maximum=LINK_BACKOFF_MAX)
    task, _, events, stats = await run_for(source, clock, 300.0, backoff=backoff,
                                           rng=random.Random(4))  # fmt: skip
    # The back-off grows though every connect works (it was reset by each): at most one
    # connect per LINK_BACKOFF_MAX / 2 seconds once grown, not one per tick.
    assert source.connect_attempts <= 300 / (LINK_BACKOFF_MAX / 2) + 5
    states = [e.data["state"] for e in events]
    # connected, then a lost and a restored at most once a minute each.
    assert states[:3] == ["connected", "lost", "restored"]
    assert len(states) <= 1 + 2 * (300 // 60 + 1), states
    assert any(e.data.get("repeats", 0) > 1 for e in events)
    # The device settles: the held-back change is told once its minute is over, so the last
    # event says where the link is.
    source.garbling = False
    await clock.run_until(clock.monotonic() + 70.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert stats.state == "connected"
    assert events[-1].data["state"] in ("connected", "restored")


class BackToBackSource(ScriptedSource):
    """Polled back to back (`poll_interval = "0s"`); each poll takes 250 ms on the clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.in_poll = 0
        self.most_in_poll = 0

    def poll_groups(self) -> Mapping[str, float]:
        return {"0s": 0.0}

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        self.in_poll += 1
        self.most_in_poll = max(self.most_in_poll, self.in_poll)
        try:
            await self.clock.sleep_until(self.clock.monotonic() + 0.25)
            return await super().poll(groups)
        finally:
            self.in_poll -= 1


async def test_back_to_back_polls_follow_each_other_without_overlap() -> None:
    clock = FakeClock()
    source = BackToBackSource(clock)
    task, readings, _, stats = await run_for(source, clock, 10.0)
    assert source.most_in_poll == 1  # never two polls of one link at once
    assert source.polls == 40  # 10 s of 250 ms polls, each right after the last
    source.up = False
    before = len(readings)
    await clock.run_until(clock.monotonic() + 10.0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Down, it does not spin: one bad poll per connect attempt, attempts backed off.
    bad = readings[before:]
    assert all(r.quality[0] == Quality.BAD for r in bad)
    assert 1 <= len(bad) <= source.connect_attempts + 1 < 40
    assert stats.polls == 40


class TextOnlySource(ScriptedSource):
    """A unit whose only tags are text tags: its polls carry no numeric reading."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.texts = Texts([7])

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        if not self.up:
            raise ConnectError("connection reset")
        self.polls += 1
        self.texts.put(7, "DR-DOOR-LH", Quality.GOOD, self.clock.time_ns())
        return []


async def test_a_link_of_text_tags_alone_counts_its_good_polls() -> None:
    clock = FakeClock()
    source = TextOnlySource(clock)
    backoff = Backoff(initial=1.0, maximum=8.0)
    task, _, _, stats = await run_for(source, clock, 3.0, backoff=backoff, rng=random.Random(3))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert stats.polls == 4 and stats.last_good_ns > 0  # a string read is a good poll


class StepCount:
    """Counts the link's poll steps as `Readings` does, and what it handed over in each."""

    def __init__(self, readings: list[ReadingBatch]) -> None:
        self.readings = readings
        self.polling = 0
        self.steps: list[int] = []  # readings handed over by each step, at its end

    def began(self, source: str) -> None:
        self.polling += 1
        self.at_start = len(self.readings)

    def ended(self) -> None:
        self.polling -= 1
        self.steps.append(len(self.readings) - self.at_start)


async def test_each_step_is_counted_begun_and_ended_through_failures_and_a_cancel() -> None:
    clock = FakeClock()
    source = ScriptedSource(clock)
    readings: list[ReadingBatch] = []
    count = StepCount(readings)
    task = asyncio.ensure_future(
        run_link(source, clock, readings.append, lambda _: None, polls=count)
    )
    await clock.run_until(3.0)
    source.up = False  # polls fail, then connects fail: bad readings, still one per step
    await clock.run_until(8.0)
    assert count.polling == 0
    # Every step handed over its readings before it ended: one batch each.
    assert count.steps == [1] * 9 and len(readings) == 9
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class HangingSource(ScriptedSource):
    """Connects, then never answers a poll."""

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_step_cancelled_in_the_middle_of_a_poll_is_ended() -> None:
    clock = FakeClock()
    readings: list[ReadingBatch] = []
    count = StepCount(readings)
    task = asyncio.ensure_future(
        run_link(HangingSource(clock), clock, readings.append, lambda _: None, polls=count)
    )
    await clock.run_until(0.5)
    assert count.polling == 1  # inside its first poll
    task.cancel()  # a reload removing the source, or the agent stopping
    await asyncio.gather(task, return_exceptions=True)
    assert count.polling == 0 and count.steps == [0]

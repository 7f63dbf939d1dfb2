"""Drift-free ticks, overruns skipped and counted, poll groups on one link; fake clock only."""

import asyncio

import pytest

from agent.clock import FakeClock
from agent.scheduler import LATENESS_WINDOW, Schedule, Tick, Ticker, Wakeups


async def test_no_drift_over_ten_thousand_ticks() -> None:
    clock = FakeClock(start_monotonic=1000.0)
    ticker = Ticker(0.1, clock)

    async def run() -> list[Tick]:
        ticks = []
        for _ in range(10_000):
            tick = await ticker.wait()
            clock.advance(0.013)  # each poll takes 13 ms: "now + interval" would drift 130 s
            ticks.append(tick)
        return ticks

    ticks = await clock.run(run())
    assert [t.index for t in ticks] == list(range(10_000))
    assert ticks[-1].due == pytest.approx(1000.0 + 9_999 * 0.1, abs=1e-9)
    # Every due time is on the grid, not just the last one.
    assert max(abs(t.due - (1000.0 + t.index * 0.1)) for t in ticks) < 1e-9
    assert all(t.lateness == 0.0 and t.skipped == 0 for t in ticks)
    stats = ticker.statistics()
    assert (stats.ticks, stats.overruns) == (10_000, 0)


async def test_first_tick_is_due_at_the_first_wait_plus_phase() -> None:
    clock = FakeClock(start_monotonic=50.0)
    ticker = Ticker(1.0, clock, phase=0.25)
    clock.advance(7.0)  # time spent connecting before the first poll is not an overrun
    tick = await clock.run(ticker.wait())
    assert (tick.index, tick.due, tick.started, tick.skipped) == (0, 57.25, 57.25, 0)
    tick = await clock.run(ticker.wait())
    assert (tick.index, tick.due) == (1, 58.25)
    assert ticker.statistics().overruns == 0


async def test_an_explicit_start_anchors_the_grid() -> None:
    clock = FakeClock(start_monotonic=0.0)
    ticker = Ticker(0.5, clock, start=10.0)
    tick = await clock.run(ticker.wait())
    assert (tick.index, tick.due, tick.started) == (0, 10.0, 10.0)


async def test_a_poll_exactly_one_interval_long_is_not_an_overrun() -> None:
    clock = FakeClock()
    ticker = Ticker(0.1, clock)
    first = await clock.run(ticker.wait())
    await clock.run_until(first.due + 0.1)  # the poll ends exactly when the next tick is due
    second = await clock.run(ticker.wait())
    assert (second.index, second.skipped, second.lateness) == (1, 0, 0.0)


@pytest.mark.parametrize(
    ("poll_seconds", "next_index", "skipped"),
    [
        (0.05, 1, 0),  # within the interval
        (0.1000001, 2, 1),  # just over: tick 1 passed while polling
        (0.25, 3, 2),  # ticks 1 and 2 passed
        (1.0, 10, 9),  # ran up to tick 10's due time exactly: it is due, not missed
        (1.05, 11, 10),
    ],
)
async def test_overrun_skips_and_counts_missed_ticks(
    poll_seconds: float, next_index: int, skipped: int
) -> None:
    clock = FakeClock()
    ticker = Ticker(0.1, clock)
    await clock.run(ticker.wait())
    clock.advance(poll_seconds)
    tick = await clock.run(ticker.wait())
    assert (tick.index, tick.skipped) == (next_index, skipped)
    assert tick.due == pytest.approx(next_index * 0.1)
    assert tick.due >= poll_seconds - 1e-12  # the next tick is in the future grid
    assert ticker.statistics().overruns == skipped
    # Nothing was queued: the tick after comes one interval later.
    following = await clock.run(ticker.wait())
    assert following.index == next_index + 1


async def test_overruns_accumulate_across_ticks() -> None:
    clock = FakeClock()
    ticker = Ticker(1.0, clock)

    async def run() -> list[int]:
        indices = []
        for poll in (0.5, 2.5, 0.1, 3.2, 0.0):
            tick = await ticker.wait()
            indices.append(tick.index)
            clock.advance(poll)
        return indices

    assert await clock.run(run()) == [0, 1, 4, 5, 9]
    stats = ticker.statistics()
    assert (stats.ticks, stats.overruns) == (5, 2 + 3)


async def test_lateness_is_measured_when_the_wake_up_is_late() -> None:
    clock = FakeClock()
    ticker = Ticker(1.0, clock)
    assert ticker.statistics().lateness_p50 is None  # undefined before the first tick
    lates = [0.0, 0.001, 0.002, 0.003, 0.1]
    for late in lates:
        waiter = asyncio.create_task(ticker.wait())
        await asyncio.sleep(0)
        deadline = clock.next_deadline()
        if deadline is None:  # first wait: due at once
            tick = await waiter
        else:
            clock.advance(deadline - clock.monotonic() + late)  # the loop woke us late
            tick = await waiter
        assert tick.lateness == pytest.approx(late)
        assert tick.started - tick.due == pytest.approx(late)
    stats = ticker.statistics()
    assert stats.ticks == 5
    assert stats.overruns == 0
    assert stats.lateness_p50 == pytest.approx(0.002)
    assert stats.lateness_max == pytest.approx(0.1)
    assert 0.003 < (stats.lateness_p99 or 0.0) <= 0.1


async def test_lateness_percentiles_cover_the_recent_window_and_max_covers_all() -> None:
    clock = FakeClock()
    ticker = Ticker(1.0, clock)
    await clock.run(ticker.wait())  # tick 0, lateness 0
    # One very late tick, then a full window of on-time ones pushes it out of the percentiles.
    waiter = asyncio.create_task(ticker.wait())
    await asyncio.sleep(0)
    clock.advance(1.5)
    assert (await waiter).lateness == pytest.approx(0.5)

    async def on_time(n: int) -> None:
        for _ in range(n):
            await ticker.wait()

    await clock.run(on_time(LATENESS_WINDOW))
    stats = ticker.statistics()
    assert stats.lateness_p99 == 0.0
    assert stats.lateness_max == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("interval", "phase", "error"),
    [
        (0.0, 0.0, ValueError),
        (-1.0, 0.0, ValueError),
        (float("nan"), 0.0, ValueError),
        (float("inf"), 0.0, ValueError),
        (1e-12, 0.0, ValueError),  # below one nanosecond
        ("100ms", 0.0, TypeError),
        (True, 0.0, TypeError),
        (1.0, -0.1, ValueError),
        (1.0, 1.0, ValueError),  # a phase of one interval is phase 0 one tick later
        (1.0, float("nan"), ValueError),
    ],
)
def test_interval_and_phase_validation(interval: object, phase: object, error: type) -> None:
    with pytest.raises(error):
        Ticker(interval, FakeClock(), phase=phase)  # type: ignore[arg-type]


def test_good_intervals_are_kept() -> None:
    assert Ticker(0.1, FakeClock()).interval == 0.1
    assert Ticker(2, FakeClock(), phase=1.5).interval == 2.0


async def test_groups_of_100ms_and_1s_are_due_together_every_tenth_tick() -> None:
    clock = FakeClock(start_monotonic=123.456)
    schedule = Schedule({"fast": 0.1, "slow": 1.0}, clock)

    async def run() -> list[tuple[float, list[str]]]:
        out = []
        for _ in range(31):
            due = await schedule.wait()
            out.append((round(clock.monotonic() - 123.456, 6), due))
        return out

    result = await clock.run(run())
    for k, (at, due) in enumerate(result):
        assert at == pytest.approx(k * 0.1)
        assert due == (["fast", "slow"] if k % 10 == 0 else ["fast"])
    stats = schedule.statistics()
    assert (stats["fast"].ticks, stats["slow"].ticks) == (31, 4)
    assert (stats["fast"].overruns, stats["slow"].overruns) == (0, 0)


async def test_groups_interleave_when_their_grids_do_not_meet() -> None:
    clock = FakeClock()
    schedule = Schedule({"a": 0.3, "b": 0.5}, clock)

    async def run() -> list[tuple[float, list[str]]]:
        out = []
        for _ in range(8):
            due = await schedule.wait()
            out.append((round(clock.monotonic(), 9), due))
        return out

    assert await clock.run(run()) == [
        (0.0, ["a", "b"]),
        (0.3, ["a"]),
        (0.5, ["b"]),
        (0.6, ["a"]),
        (0.9, ["a"]),
        (1.0, ["b"]),
        (1.2, ["a"]),
        (1.5, ["a", "b"]),
    ]


async def test_schedule_counts_overruns_per_group() -> None:
    clock = FakeClock()
    schedule = Schedule({"fast": 0.1, "slow": 1.0}, clock)
    assert await clock.run(schedule.wait()) == ["fast", "slow"]
    clock.advance(0.35)  # the poll overran: fast missed 0.1, 0.2, 0.3; slow missed nothing
    assert await clock.run(schedule.wait()) == ["fast"]
    assert clock.monotonic() == pytest.approx(0.4)
    assert schedule.last_ticks()["fast"].skipped == 3
    clock.advance(1.75)  # now 2.15: fast missed 0.5..2.1 (17), slow missed 1.0 and 2.0
    assert await clock.run(schedule.wait()) == ["fast"]
    assert clock.monotonic() == pytest.approx(2.2)
    assert await clock.run(schedule.wait()) == ["fast"]
    stats = schedule.statistics()
    assert stats["fast"].overruns == 3 + 17
    assert stats["slow"].overruns == 2
    # slow's skips are reported on its next tick, at 3.0, together with fast.
    while "slow" not in (due := await clock.run(schedule.wait())):
        assert due == ["fast"]
    assert due == ["fast", "slow"]
    assert clock.monotonic() == pytest.approx(3.0)
    assert schedule.last_ticks()["slow"].skipped == 2


async def test_a_late_wake_up_serves_every_group_already_due() -> None:
    clock = FakeClock()
    schedule = Schedule({"a": 1.0, "b": 1.05}, clock)
    await clock.run(schedule.wait())
    waiter = asyncio.create_task(schedule.wait())
    await asyncio.sleep(0)
    clock.advance(1.1)  # slept until 1.0, woke at 1.1: b (1.05) is due too, not missed
    assert await waiter == ["a", "b"]
    last = schedule.last_ticks()
    assert last["a"].lateness == pytest.approx(0.1)
    assert last["b"].lateness == pytest.approx(0.05)
    assert schedule.statistics()["b"].overruns == 0


@pytest.mark.parametrize(
    ("groups", "error"),
    [
        ({}, ValueError),
        ({"": 1.0}, ValueError),
        ({"a": -0.0001}, ValueError),
        ({"a": 1.0, "b": -1.0}, ValueError),
        ({"a": "1s"}, TypeError),
    ],
)
def test_schedule_validation(groups: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        Schedule(groups, FakeClock())  # type: ignore[arg-type]


async def test_a_back_to_back_group_is_due_at_every_wait_and_never_late() -> None:
    clock = FakeClock(start_monotonic=5.0)
    schedule = Schedule({"0s": 0.0, "slow": 1.0}, clock)
    assert schedule.back_to_back

    async def run() -> list[tuple[float, list[str]]]:
        out = []
        for _ in range(12):
            due = await schedule.wait()
            out.append((round(clock.monotonic() - 5.0, 6), due))
            clock.advance(0.25)  # each poll takes 250 ms; the next starts when it ended
        return out

    result = await run()  # never sleeps on the clock: no clock.run needed
    assert [at for at, _ in result] == [k * 0.25 for k in range(12)]
    assert [k for k, (_, due) in enumerate(result) if "slow" in due] == [0, 4, 8]
    assert all(due[0] == "0s" for _, due in result)
    stats = schedule.statistics()
    assert list(stats) == ["0s", "slow"]
    assert (stats["0s"].ticks, stats["0s"].overruns, stats["0s"].lateness_p99) == (12, 0, 0.0)
    assert schedule.last_ticks()["0s"].index == 11


async def test_a_back_to_back_wait_lets_other_tasks_run() -> None:
    """A poll that never awaits (a link that is down) must not starve the event loop."""
    schedule = Schedule({"0s": 0.0}, FakeClock())
    other = asyncio.Event()

    async def spin() -> int:
        turns = 0
        while not other.is_set() and turns < 1000:
            await schedule.wait()
            turns += 1
        return turns

    async def set_it() -> None:
        other.set()

    spinning = asyncio.ensure_future(spin())
    setter = asyncio.ensure_future(set_it())
    assert await spinning < 1000  # stopped by the other task, not by its bound
    await setter


async def test_aligned_schedules_of_one_interval_sleep_on_one_timer() -> None:
    """Links started at different instants tick together on the multiples of the interval."""
    clock = FakeClock(start_monotonic=100.03)
    wakeups = Wakeups(clock)
    first = Schedule({"1s": 1.0}, clock, align=True, wakeups=wakeups)
    second = Schedule({"1s": 1.0}, clock, align=True, wakeups=wakeups)
    woken: list[tuple[str, float]] = []

    async def link(name: str, schedule: Schedule, polls: int) -> None:
        for _ in range(polls):
            await schedule.wait()
            woken.append((name, round(clock.monotonic(), 6)))

    async def run() -> None:
        a = asyncio.ensure_future(link("a", first, 3))
        await clock.run_until(100.6)  # b starts later, in the same second
        b = asyncio.ensure_future(link("b", second, 3))
        await asyncio.sleep(0)
        assert wakeups.timers == 1  # both sleep until 101.0, on one timer
        await asyncio.gather(a, b)

    await clock.run(run())
    assert woken == [
        ("a", 100.03),  # the first tick of each is served at once
        ("b", 100.6),
        ("a", 101.0),
        ("b", 101.0),
        ("a", 102.0),
        ("b", 102.0),
    ]
    # The first tick's lateness (up to an interval: when the link started) is not counted.
    assert first.statistics()["1s"].lateness_max == 0.0
    assert wakeups.timers == 0


async def test_a_cancelled_sleeper_leaves_and_its_timer_goes_with_the_last() -> None:
    clock = FakeClock()
    wakeups = Wakeups(clock)
    sleepers = [asyncio.ensure_future(wakeups.sleep_until(5.0)) for _ in range(2)]
    await asyncio.sleep(0)
    assert wakeups.timers == 1
    sleepers[0].cancel()
    await asyncio.sleep(0)
    assert wakeups.timers == 1  # the other still sleeps
    await clock.run_until(5.0)
    assert sleepers[1].done() and not sleepers[1].cancelled()
    late = asyncio.ensure_future(wakeups.sleep_until(9.0))
    await asyncio.sleep(0)
    late.cancel()
    await asyncio.sleep(0)
    assert wakeups.timers == 0


async def test_a_back_to_back_only_schedule_counts_its_ticks() -> None:
    clock = FakeClock(start_monotonic=2.0)
    schedule = Schedule({"a": 0.0, "b": 0.0}, clock)
    assert schedule.last_ticks() == {}
    for _ in range(3):
        assert await schedule.wait() == ["a", "b"]
        clock.advance(0.5)
    assert schedule.last_ticks()["b"] == Tick(2, 3.0, 3.0, 0.0, 0)
    assert schedule.statistics()["a"].ticks == 3

"""The fake clock wakes sleepers in deadline order and only when told; the system clock is real."""

import asyncio
import math
import time

import pytest

from agent.clock import DEFAULT_START_NS, Clock, FakeClock, SystemClock


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_both_clocks_satisfy_the_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FakeClock()]
    assert all(isinstance(c.monotonic(), float) for c in clocks)


def test_fake_clock_starts_where_told_and_moves_only_on_advance() -> None:
    clock = FakeClock(start_monotonic=5.0, start_ns=1_000)
    assert clock.monotonic() == 5.0
    assert clock.time_ns() == 1_000
    assert clock.monotonic() == 5.0  # reading it does not move it
    clock.advance(0.25)
    assert clock.monotonic() == 5.25
    assert clock.time_ns() == 1_000 + 250_000_000


def test_default_wall_start() -> None:
    assert FakeClock().time_ns() == DEFAULT_START_NS


def test_wall_clock_can_step_without_moving_monotonic() -> None:
    clock = FakeClock(start_ns=10_000_000_000)
    clock.step_wall_ns(-3_600_000_000)
    assert clock.time_ns() == 6_400_000_000
    assert clock.monotonic() == 0.0
    clock.advance(1.0)
    assert clock.time_ns() == 7_400_000_000


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_advance_refuses_going_back_or_nonsense(bad: float) -> None:
    with pytest.raises(ValueError, match="forward"):
        FakeClock().advance(bad)


async def test_run_until_refuses_the_past() -> None:
    clock = FakeClock(start_monotonic=2.0)
    with pytest.raises(ValueError, match="forward"):
        await clock.run_until(1.0)


async def test_sleep_until_a_past_or_present_deadline_returns_at_once() -> None:
    clock = FakeClock(start_monotonic=3.0)
    await clock.sleep_until(3.0)
    await clock.sleep_until(-1.0)
    assert clock.sleepers() == 0
    with pytest.raises(ValueError, match="NaN"):
        await clock.sleep_until(float("nan"))


async def test_advance_past_several_deadlines_wakes_in_deadline_order() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, deadline: float) -> None:
        await clock.sleep_until(deadline)
        woke.append((name, clock.monotonic()))

    # Started out of deadline order on purpose; "c" and "c2" tie and keep arrival order.
    tasks = [
        asyncio.create_task(sleeper(name, deadline))
        for name, deadline in [("c", 3.0), ("a", 1.0), ("d", 9.0), ("b", 2.0), ("c2", 3.0)]
    ]
    await _settle()
    assert clock.sleepers() == 5
    assert clock.next_deadline() == 1.0

    clock.advance(0.5)
    await _settle()
    assert woke == []

    clock.advance(3.0)  # now 3.5: a, b, c, c2 are due; d is not
    await _settle()
    assert [name for name, _ in woke] == ["a", "b", "c", "c2"]
    assert all(t == 3.5 for _, t in woke)  # advance jumps: they wake late, at the new time
    assert clock.sleepers() == 1
    assert clock.next_deadline() == 9.0

    clock.advance(10.0)
    await asyncio.gather(*tasks)
    assert [name for name, _ in woke] == ["a", "b", "c", "c2", "d"]
    assert clock.next_deadline() is None


async def test_run_until_wakes_each_sleeper_at_its_own_deadline() -> None:
    clock = FakeClock()
    seen: list[float] = []

    async def every_quarter(n: int) -> None:
        for k in range(1, n + 1):
            await clock.sleep_until(k * 0.25)
            seen.append(clock.monotonic())

    task = asyncio.create_task(every_quarter(6))
    await clock.run_until(1.0)
    assert seen == [0.25, 0.5, 0.75, 1.0]
    assert clock.monotonic() == 1.0
    await clock.run_until(1.1)
    assert clock.monotonic() == 1.1
    assert len(seen) == 4
    await clock.run_until(2.0)
    await task
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]


async def test_cancelled_sleeper_is_forgotten() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep_until(1.0))
    await _settle()
    assert clock.sleepers() == 1
    task.cancel()
    await _settle()
    assert clock.sleepers() == 0
    assert clock.next_deadline() is None
    clock.advance(2.0)  # nothing left to wake; must not raise on the cancelled future


async def test_run_drives_a_coroutine_through_its_sleeps() -> None:
    clock = FakeClock()

    async def three_naps() -> float:
        for deadline in (10.0, 20.0, 30.0):
            await clock.sleep_until(deadline)
        return clock.monotonic()

    assert await clock.run(three_naps()) == 30.0


async def test_run_refuses_a_coroutine_blocked_on_something_else() -> None:
    clock = FakeClock()
    never = asyncio.Event()
    with pytest.raises(RuntimeError, match="other than the clock"):
        await clock.run(never.wait())


async def test_system_clock_sleeps_until_the_deadline_and_not_before() -> None:
    clock = SystemClock()
    deadline = clock.monotonic() + 0.02
    await clock.sleep_until(deadline)
    woke = time.monotonic()
    assert woke >= deadline
    assert woke - deadline < 0.5  # generous: the machine is shared
    before = clock.monotonic()
    await clock.sleep_until(before - 1.0)  # a past deadline returns at once
    assert clock.monotonic() - before < 0.5


def test_system_clock_reads_the_real_clocks() -> None:
    clock = SystemClock()
    assert abs(clock.time_ns() - time.time_ns()) < 1_000_000_000
    a = clock.monotonic()
    b = clock.monotonic()
    assert b >= a


def test_system_clock_wakes_once_per_deadline_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop keeps time in whole milliseconds and fires a timer up to one early: asked for the
    exact remainder, it woke the agent six times per deadline on average (CPU for nothing)."""
    uvloop = pytest.importorskip("uvloop")
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counted)
    clock = SystemClock()

    async def deadlines() -> None:
        for _ in range(20):
            # On a 10 ms grid, as the agent's aligned polls are: any fraction of a millisecond.
            deadline = (math.floor(clock.monotonic() * 100) + 2) / 100
            await clock.sleep_until(deadline)
            assert clock.monotonic() >= deadline

    uvloop.run(deadlines())
    # One sleep per deadline, and a few more should the loaded machine make one late.
    assert len(sleeps) <= 25

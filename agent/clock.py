"""The agent's two clocks, behind one small interface so tests can own time.

Scheduling uses the monotonic clock (seconds as a float): it never steps when NTP or an operator
sets the wall clock, so polls keep their rhythm through clock jumps. Timestamps use the wall
clock (`time_ns`), because that is what a historian or MES stores.

`SystemClock` is the real one. `FakeClock` moves only when a test tells it to, so scheduler and
retry logic are tested without sleeping and without flaky timing.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")

# 2023-11-14T22:13:20Z: a fixed, recognisable wall-clock start for tests.
DEFAULT_START_NS = 1_700_000_000_000_000_000

# How many event-loop turns FakeClock gives woken tasks to reach their next await before time
# moves again. One turn is enough for a task that goes straight back to sleep; a few more cover
# tasks that hand work to one another through queues or events first.
_SETTLE_TURNS = 8


class Clock(Protocol):
    """What the runtime needs from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; for scheduling and timeouts."""
        ...

    def time_ns(self) -> int:
        """Wall-clock nanoseconds since the Unix epoch; for reading timestamps."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once `monotonic()` has reached `deadline` (at once if it already has)."""
        ...


class SystemClock:
    """The real clocks: `time.monotonic`, `time.time_ns` and the running event loop's timers."""

    # The clock functions themselves, not methods that call them: the poll loop asks for the
    # time several times per poll of every link, and a Python call costs more than the clock.
    monotonic = staticmethod(time.monotonic)
    time_ns = staticmethod(time.time_ns)

    async def sleep_until(self, deadline: float) -> None:
        # Event-loop timers may fire a little early (uvloop keeps time in whole milliseconds), so
        # sleep again for the remainder rather than return before the deadline: callers rely on
        # `monotonic() >= deadline` afterwards. Asking uvloop for the remainder as it is woke
        # it early every time, then again and again for the last fraction of a millisecond
        # (six wake-ups per deadline on average, and every wake-up costs CPU); whole
        # milliseconds, rounded up, wake it once, at most a millisecond after the deadline.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(math.ceil(remaining * 1000) / 1000)


class FakeClock:
    """A clock that moves only through `advance()`, `run_until()` or `run()`.

    Sleepers whose deadline has been reached are woken in deadline order (ties in the order they
    went to sleep). The wall clock moves with the monotonic clock unless `step_wall_ns()` jumps
    it, as NTP or an operator would.
    """

    def __init__(self, start_monotonic: float = 0.0, start_ns: int = DEFAULT_START_NS) -> None:
        if not math.isfinite(start_monotonic):
            raise ValueError(f"start_monotonic must be finite, got {start_monotonic!r}")
        self._now = float(start_monotonic)
        self._start_monotonic = self._now
        self._wall_origin_ns = int(start_ns)
        # (deadline, order of arrival, future): the heap gives deadline order, the counter
        # keeps equal deadlines first-come first-woken and never compares futures.
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = 0

    def monotonic(self) -> float:
        return self._now

    def time_ns(self) -> int:
        return self._wall_origin_ns + round((self._now - self._start_monotonic) * 1e9)

    async def sleep_until(self, deadline: float) -> None:
        if math.isnan(deadline):
            raise ValueError("deadline is NaN")
        if deadline <= self._now:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, self._arrivals, future))
        self._arrivals += 1
        await future

    def next_deadline(self) -> float | None:
        """The earliest deadline a task is sleeping until, or None when nobody sleeps."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock."""
        self._drop_cancelled()
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def advance(self, seconds: float) -> None:
        """Jump forward by `seconds` at once, waking every sleeper whose deadline passed.

        The woken tasks run when the caller next yields to the event loop, and they see the new
        time: this is how a test makes a sleeper wake late.
        """
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"time only moves forward: advance({seconds!r})")
        self._now += seconds
        self._wake_due()

    def step_wall_ns(self, delta_ns: int) -> None:
        """Step the wall clock by `delta_ns` (either sign) without touching the monotonic one."""
        self._wall_origin_ns += int(delta_ns)

    async def run_until(self, t: float) -> None:
        """Move time to `t` deadline by deadline, letting woken tasks run at each one.

        Unlike `advance`, a task that sleeps again before `t` (a ticker, a retry loop) is woken
        again at its new deadline, so it sees every instant it asked for.
        """
        if math.isnan(t) or t < self._now:
            raise ValueError(f"time only moves forward: run_until({t!r}) at {self._now!r}")
        await self._settle()
        while (deadline := self.next_deadline()) is not None and deadline <= t:
            self._now = max(self._now, deadline)
            self._wake_due()
            await self._settle()
        self._now = t

    async def run(self, awaitable: Awaitable[T]) -> T:
        """Run `awaitable` to completion, jumping time to each deadline it sleeps until.

        Meant for code that waits only on this clock; raises RuntimeError if it blocks on
        anything else (a socket, a queue nobody fills), rather than hanging the test.
        """
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                await self._settle()
                if task.done():
                    return task.result()
                deadline = self.next_deadline()
                if deadline is None:
                    raise RuntimeError("the awaitable is blocked on something other than the clock")
                await self.run_until(deadline)
        finally:
            if not task.done():
                task.cancel()

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    async def _settle(self) -> None:
        for _ in range(_SETTLE_TURNS):
            await asyncio.sleep(0)

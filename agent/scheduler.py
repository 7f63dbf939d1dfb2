"""Drift-free poll timing: when each poll is due, and what happened when one ran late.

Tick k of a `Ticker` is due at `t0 + k * interval` on the monotonic clock. Computing each due
time from the grid, never as "now + interval", keeps errors from adding up: after a day of 100 ms
polls the agent has polled 864 000 times, not a few hundred fewer.

When a poll overruns (it takes longer than the interval), the grid points it ran through are
skipped and counted, never queued: a burst of catch-up polls would only load a PLC that is
already slow (Telegraf's gatherOnce does the same).

`Schedule` runs several poll groups on one link (one TCP connection or serial bus) on one shared
grid origin, and hands back together the groups due at the same instant, so one poll serves them.
A group of interval 0 is back to back: it is due again as soon as the link asks, so each poll
starts when the previous one ended (the link loop never overlaps two polls of one link).

The agent's links share one `Wakeups` and align their grids (`align=True`: tick k of an
interval is due at a whole multiple of that interval on the monotonic clock), so every link
due at the same instant sleeps on one timer, is woken in the same turn of the event loop, and
their readings reach the store together (agent/readings.py merges them).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from agent.clock import Clock
from agent.histogram import percentiles

# Lateness percentiles are taken over the most recent ticks only: a fixed-size ring costs one
# store per tick, and recent behaviour is what an operator looking at the status page wants.
LATENESS_WINDOW = 1024


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick handed to the caller.

    `index` is k on the grid (gaps mean skipped ticks), `due` the monotonic time it was due,
    `started` the monotonic time `wait()` returned, `lateness = started - due` (≥ 0), and
    `skipped` how many grid points were passed over just before this one.
    """

    index: int
    due: float
    started: float
    lateness: float
    skipped: int = 0


@dataclass(frozen=True, slots=True)
class TickerStatistics:
    """Counts since start. Lateness figures in seconds; None before the first tick."""

    ticks: int
    overruns: int
    lateness_p50: float | None
    lateness_p99: float | None
    lateness_max: float | None


def _grid_ns(name: str, seconds: float) -> int:
    """A positive duration in whole nanoseconds, so grid offsets are exact integers."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {seconds!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {seconds!r}")
    ns = round(seconds * 1e9)
    if ns < 1:
        raise ValueError(f"{name} must be at least 1 ns, got {seconds!r}")
    return ns


class Ticker:
    """Ticks every `interval` seconds on `clock`, drift-free, skipping and counting overruns.

    The grid starts at `start + phase`; `start` defaults to the monotonic time of the first
    `wait()`, so time spent connecting before the first poll is not counted as overruns. `phase`
    (0 ≤ phase < interval) staggers links that share an interval so they do not all poll at once.
    With `align`, the grid is instead whole multiples of the interval (plus `phase`) on the
    monotonic clock, so tickers of one interval tick at the very same instants; the first tick
    is then the grid point at or before the first `wait()`, served at once, and its lateness is
    left out of the figures (it measures when the agent started, not how late a poll was).
    """

    def __init__(
        self,
        interval: float,
        clock: Clock,
        *,
        phase: float = 0.0,
        start: float | None = None,
        align: bool = False,
        wakeups: Wakeups | None = None,
    ) -> None:
        self._interval_ns = _grid_ns("interval", interval)
        if isinstance(phase, bool) or not isinstance(phase, int | float):
            raise TypeError(f"phase must be a number of seconds, got {phase!r}")
        if not math.isfinite(phase) or not 0 <= phase < interval:
            raise ValueError(f"phase must be in [0, interval), got {phase!r} for {interval!r}")
        if start is not None and not math.isfinite(start):
            raise ValueError(f"start must be finite, got {start!r}")
        self._clock = clock
        self._sleep = wakeups.sleep_until if wakeups is not None else clock.sleep_until
        self._phase = float(phase)
        self._align = align
        self._t0: float | None = None
        self._k0 = 0  # aligned: the grid's first point, in intervals since monotonic 0
        self._next = 0  # the grid index of the next tick to hand out
        # When tick `_next` is due, kept with it: a wait asks for it several times.
        self._next_due = math.nan  # (set when the grid starts)
        if start is not None:
            self._anchor(start)
        self._ticks = 0
        self._overruns = 0
        self._lateness = np.zeros(LATENESS_WINDOW, dtype=np.float64)
        self._lateness_max = 0.0

    @property
    def interval(self) -> float:
        return self._interval_ns / 1e9

    def due(self, index: int) -> float:
        """The monotonic time tick `index` is due (the grid must have started)."""
        if self._t0 is None:
            raise RuntimeError("the grid starts at the first wait()")
        if self._align:  # from whole nanoseconds: tickers of one interval agree to the bit
            return (self._k0 + index) * self._interval_ns / 1e9 + self._phase
        return self._t0 + index * self._interval_ns / 1e9

    async def wait(self) -> Tick:
        """Sleep until the next tick in the future grid is due, and return it."""
        skipped = self._catch_up(self._clock.monotonic())
        await self._sleep(self._next_due)
        return self._fire(self._clock.monotonic(), skipped)

    def statistics(self) -> TickerStatistics:
        if self._ticks == 0:
            return TickerStatistics(0, self._overruns, None, None, None)
        recent = self._lateness[: min(self._ticks, LATENESS_WINDOW)]
        p50, p99 = percentiles(recent, (50.0, 99.0))
        return TickerStatistics(
            ticks=self._ticks,
            overruns=self._overruns,
            lateness_p50=float(p50),
            lateness_p99=float(p99),
            lateness_max=self._lateness_max,
        )

    def _anchor(self, t0: float) -> None:
        if self._t0 is not None:
            return
        if self._align:
            self._k0 = math.floor((t0 - self._phase) * 1e9 / self._interval_ns)
            self._t0 = self._k0 * self._interval_ns / 1e9 + self._phase
        else:
            self._t0 = t0 + self._phase
        self._next_due = self.due(self._next)

    def _catch_up(self, now: float) -> int:
        """Skip (and count) every grid point already in the past; return how many."""
        if self._t0 is None:
            self._anchor(now)
        if self._next_due >= now or (self._align and self._ticks == 0 and self._next == 0):
            return 0  # (an aligned grid's first point is at or before the first wait: served)
        assert self._t0 is not None
        # First guess from division, then nudge by one either way: rounding in the float
        # division must neither skip a tick that is still in the future nor keep a past one.
        k = max(self._next, math.ceil((now - self._t0) * 1e9 / self._interval_ns))
        while self.due(k) < now:
            k += 1
        while k - 1 > self._next and self.due(k - 1) >= now:
            k -= 1
        skipped = k - self._next
        self._overruns += skipped
        self._next = k
        self._next_due = self.due(k)
        return skipped

    def _fire(self, started: float, skipped: int) -> Tick:
        index, due, lateness = self._record(started)
        return Tick(index=index, due=due, started=started, lateness=lateness, skipped=skipped)

    def _record(self, started: float) -> tuple[int, float, float]:
        """Hand out the next tick, started at `started`: its index, due time and lateness."""
        index = self._next
        due = self._next_due
        lateness = max(0.0, started - due)
        counted = 0.0 if self._align and self._ticks == 0 else lateness
        self._lateness[self._ticks % LATENESS_WINDOW] = counted
        self._lateness_max = max(self._lateness_max, counted)
        self._ticks += 1
        self._next += 1
        self._next_due = self.due(self._next)
        return index, due, lateness


class Schedule:
    """Several poll groups on one link, each on its own drift-free grid from one shared origin.

    `wait()` returns the names of the groups due now, in the order they were given; groups whose
    grids meet (a 100 ms and a 1 s group, every tenth 100 ms tick) come back together. Overruns
    are skipped and counted per group. A group of interval 0 is back to back: due at every
    `wait()`, which then sleeps for nothing (it still lets the event loop turn once).
    """

    def __init__(
        self,
        intervals: Mapping[str, float],
        clock: Clock,
        *,
        start: float | None = None,
        align: bool = False,
        wakeups: Wakeups | None = None,
    ) -> None:
        if not intervals:
            raise ValueError("a schedule needs at least one poll group")
        for name in intervals:
            if not isinstance(name, str) or not name:
                raise ValueError(f"poll group names must be non-empty strings, got {name!r}")
        self._clock = clock
        self._sleep = wakeups.sleep_until if wakeups is not None else clock.sleep_until
        self._eager = {name: 0 for name, interval in intervals.items() if interval == 0}
        self._groups = {
            name: Ticker(interval, clock, start=start, align=align, wakeups=wakeups)
            for name, interval in intervals.items()
            if name not in self._eager
        }
        self._order = list(intervals)
        # The latest wait's ticks as (index, due, started, lateness, skipped): a `Tick` is
        # made only when asked for (`last_ticks`), not on every poll.
        self._last: dict[str, tuple[int, float, float, float, int]] = {}
        # Skips are reported on the group's next tick, which may come several waits later.
        self._skipped = dict.fromkeys(self._groups, 0)

    @property
    def groups(self) -> dict[str, Ticker]:
        return dict(self._groups)

    @property
    def back_to_back(self) -> bool:
        """Whether a group polls back to back (interval 0)."""
        return bool(self._eager)

    def last_ticks(self) -> dict[str, Tick]:
        """The tick each group got on the latest `wait()` (index, due time, lateness)."""
        return {name: Tick(*tick) for name, tick in self._last.items()}

    async def wait(self) -> list[str]:
        now = self._clock.monotonic()
        skipped = self._skipped
        for name, ticker in self._groups.items():
            # The first call anchors every group at this same instant, so their grids meet.
            passed = ticker._catch_up(now)
            if passed:
                skipped[name] += passed
        if self._eager:
            await asyncio.sleep(0)  # at once, but the other links get their turn first
        else:
            await self._sleep(min(ticker._next_due for ticker in self._groups.values()))
        started = self._clock.monotonic()
        # Every group due by the time we woke is served by this one poll: after a late wake-up
        # that is more than the group we slept for, and still not a skipped tick.
        last: dict[str, tuple[int, float, float, float, int]] = {}
        for name, ticker in self._groups.items():
            if ticker._next_due <= started:
                index, due, lateness = ticker._record(started)
                last[name] = (index, due, started, lateness, skipped[name])
                skipped[name] = 0
        self._last = last
        if not self._eager:
            return list(last)
        for name in self._eager:
            self._eager[name] += 1
            last[name] = (self._eager[name] - 1, started, started, 0.0, 0)
        return [name for name in self._order if name in last]

    def statistics(self) -> dict[str, TickerStatistics]:
        figures = {name: ticker.statistics() for name, ticker in self._groups.items()}
        for name, polls in self._eager.items():  # never late: no grid to be late for
            late = None if polls == 0 else 0.0
            figures[name] = TickerStatistics(polls, 0, late, late, late)
        return {name: figures[name] for name in self._order}


class Wakeups:
    """Sleeps until the same instant, of any number of tasks, on one timer.

    The first task to sleep until an instant starts one timer task for it; the others only
    add a future to its list, and all are woken together when it fires. A sleeper that is
    cancelled leaves the list; the timer of an instant nobody waits for any more is cancelled.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._waiting: dict[float, tuple[asyncio.Task[None], list[asyncio.Future[None]]]] = {}

    @property
    def timers(self) -> int:
        """Instants some task sleeps until now, each one timer."""
        return len(self._waiting)

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._clock.monotonic():
            return
        entry = self._waiting.get(deadline)
        if entry is None:
            # Only the first sleeper of an instant asks for the running loop: on Python 3.11
            # that costs a getpid() system call, the others take the timer task's loop.
            timer = asyncio.get_running_loop().create_task(self._fire(deadline), name="wakeup")
            entry = self._waiting[deadline] = (timer, [])
        future: asyncio.Future[None] = entry[0].get_loop().create_future()
        entry[1].append(future)
        try:
            await future
        except asyncio.CancelledError:
            self._leave(deadline, future)
            raise

    def _leave(self, deadline: float, future: asyncio.Future[None]) -> None:
        entry = self._waiting.get(deadline)
        if entry is None:
            return
        timer, futures = entry
        if future in futures:
            futures.remove(future)
        if not futures:
            del self._waiting[deadline]
            timer.cancel()

    async def _fire(self, deadline: float) -> None:
        await self._clock.sleep_until(deadline)
        _, futures = self._waiting.pop(deadline)
        for future in futures:
            if not future.done():
                future.set_result(None)

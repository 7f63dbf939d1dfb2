"""Simulated time.

Machine models never read a clock themselves: they are advanced to a simulated time in seconds
since the plant started. `ScaledClock` runs that time faster than real time for demos and tests;
`ManualClock` is moved by hand, so tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class SimClock(Protocol):
    def now(self) -> float:
        """Simulated seconds since the plant started."""
        ...


class ScaledClock:
    """Wall-clock time since construction, multiplied by `speed`."""

    def __init__(self, speed: float = 1.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> float:
        return (self._monotonic() - self._t0) * self.speed


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._t += seconds
        return self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError("a clock does not go backwards")
        self._t = t


class SimulatedWallClock:
    """A clock for the agent that polls a faster-than-real-time plant (`lineside demo`, KPI tests).

    Scheduling stays on the real monotonic clock, so the agent polls every few real
    milliseconds; timestamps follow the simulator, so readings carry simulated time and the
    agent's OEE of a simulated shift can be compared with the machines' ground truth. It has the
    shape of the agent's `Clock` (agent/clock.py) without importing it.
    """

    def __init__(self, sim: SimClock, epoch_ns: int = 0) -> None:
        self.sim = sim
        self.epoch_ns = epoch_ns  # the wall-clock instant of simulated time 0

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return self.epoch_ns + round(float(self.sim.now()) * 1e9)

    async def sleep_until(self, deadline: float) -> None:
        # Timers may fire a little early; sleep again for the remainder, as SystemClock does.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

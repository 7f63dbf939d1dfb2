"""What starts an inspection: when the next frame is due (a replay, a steady fps, a PLC tag).

A live trigger (`drops`: fps, PLC tag) has the pipeline drop a frame that finds the model's
queue full; a replay (folder, video) waits for room instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from agent.clock import Clock

if TYPE_CHECKING:
    from vision.config import InspectionConfig


class Trigger(Protocol):
    drops: bool  # frames that find the queue full are dropped (live) or waited for (replay)

    async def wait(self) -> None:
        """Return when the next frame is due."""
        ...


class ReplayTrigger:
    drops = False

    async def wait(self) -> None:
        return None


class FpsTrigger:
    """Drift-free ticks on the monotonic clock; a tick missed while busy is skipped."""

    drops = True

    def __init__(self, fps: float, clock: Clock) -> None:
        self.period = 1.0 / fps
        self.clock = clock
        self._next: float | None = None

    async def wait(self) -> None:
        now = self.clock.monotonic()
        if self._next is None:
            self._next = now
        elif self._next <= now - self.period:
            self._next += math.floor((now - self._next) / self.period) * self.period
        await self.clock.sleep_until(self._next)
        self._next += self.period


class TagTrigger:
    """An edge of a PLC tag (e.g. part present), seen in the agent's latest values, + delay."""

    drops = True

    def __init__(
        self,
        read: Callable[[], float],
        clock: Clock,
        *,
        edge: str = "rising",
        delay: float = 0.0,
        poll: float = 0.01,
    ) -> None:
        self.read = read
        self.clock = clock
        self.rising = edge == "rising"
        self.delay = delay
        self.poll = poll
        self._last: bool | None = None

    def _state(self) -> bool | None:
        value = self.read()
        return None if math.isnan(value) else value != 0

    async def wait(self) -> None:
        while True:
            state = self._state()
            previous, self._last = self._last, state if state is not None else self._last
            changed = previous is not None and state is not None and state != previous
            if changed and state == self.rising:
                break
            await self.clock.sleep_until(self.clock.monotonic() + self.poll)
        if self.delay > 0:
            await self.clock.sleep_until(self.clock.monotonic() + self.delay)


def trigger_for(
    config: InspectionConfig,
    clock: Clock,
    read_tag: Callable[[str], Callable[[], float]] | None,
) -> Trigger:
    """The trigger an `[[inspections]]` entry describes. `read_tag(name)` gives a function that
    returns the latest value of the machine's tag `name` (NaN while unknown)."""
    spec = config.trigger
    if spec.type == "fps":
        return FpsTrigger(spec.fps, clock)
    if spec.type == "tag":
        if read_tag is None:
            raise ValueError(f"inspection {config.name}: a tag trigger needs the agent's tags")
        return TagTrigger(
            read_tag(spec.tag), clock, edge=spec.edge, delay=spec.delay, poll=spec.poll
        )
    return ReplayTrigger()

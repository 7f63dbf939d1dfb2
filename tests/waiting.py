"""How a test waits: poll a condition, for a bounded time, and fail saying so.

The one waiting helper of the suite. A test waits for what another task, thread or process does
on its own (a real link, a broker, a server in its thread); it never sleeps a guessed time, and
a condition that never comes fails the test at `limit` instead of letting it run on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(condition: Callable[[], object], limit: float = 30.0, step: float = 0.01) -> None:
    """Return once `condition()` is true; fail the test after `limit` seconds of real time."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit:g} s")
        await asyncio.sleep(step)

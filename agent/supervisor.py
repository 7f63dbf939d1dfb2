"""The agent's supervisor: a source, sink or inspection run again after a back-off when it
raises, so one failing in a way nobody foresaw never ends the agent nor stops the others.

What a failure means for the thing that failed (its tags bad, its status saying why) is the
caller's `failed`; the sink's and the inspection's are here, the source's is the agent's
(`Agent._source_failed`: it emits bad readings).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from agent.clock import Clock
from agent.errors import one_line
from agent.forward import Forwarder
from agent.poller import LINK_BACKOFF_MAX, Backoff

if TYPE_CHECKING:
    from vision.inspector import Inspector

log = logging.getLogger("lineside.agent")


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception a TaskGroup's group holds (itself when not a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def supervise(
    what: str, run: Callable[[], Awaitable[None]], failed: Callable[[str], None], clock: Clock
) -> None:
    """Run `run()` until it returns; when it raises, log one line, hand `failed` the reason
    and run it again after a back-off. One source, sink or inspection failing in a way
    nobody foresaw never ends the agent nor stops the others (the traceback goes to the
    debug log; the same reason again is logged at debug level only)."""
    backoff = Backoff(maximum=LINK_BACKOFF_MAX)
    rng = random.Random()
    logged = ""
    while True:
        try:
            await run()
            return
        except Exception as exc:
            why = one_line(first_leaf(exc))
            level = logging.ERROR if why != logged else logging.DEBUG
            log.log(level, "%s failed: %s; starting it again", what, why)
            log.debug("%s failed", what, exc_info=exc)
            logged = why
            try:
                failed(why)
            except Exception as again:
                log.error("%s: %s", what, one_line(again))
        await clock.sleep_until(clock.monotonic() + backoff.next(rng))


def sink_failed(forwarder: Forwarder, why: str) -> None:
    """The sink's status says why, and counts the failure, until it runs again."""
    forwarder.stats.failures += 1
    forwarder.stats.state, forwarder.stats.last_error = "failing", why


def inspection_failed(inspector: Inspector, why: str) -> None:
    inspector.stats.last_error = why

"""The link loop: one task per physical link polls its source on schedule, forever.

It owns what the connectors do not: the schedule of the link's poll groups, connecting and
reconnecting with exponential back-off, and telling the rest of the agent what happened. While
the link is down, every due tick still yields readings: bad-quality ones, so nothing
downstream mistakes an old value for a current one. State changes (connected, lost, restored)
are logged once each and emitted as events; failures are counted.

A source that fails in a way it did not foresee (a library's bare assertion, a KeyError) is
treated as a failed connect or a lost link: one line logged (the traceback only at debug
level), its tags bad, another attempt after the back-off. One source never ends the agent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from agent.clock import Clock
from agent.errors import ConnectorError, one_line
from agent.model import Event, EventKind, ReadingBatch
from agent.scheduler import Schedule
from agent.source import Source

log = logging.getLogger("lineside.poller")


# A link retries at least this often however long its device was gone, so it is back within
# ~10 s of the device (a restarted PLC or OPC UA server) answering again. A device costs one
# refused connect per few seconds meanwhile: nothing a PLC or gateway notices.
LINK_BACKOFF_MAX = 6.0


@dataclass(slots=True)
class Backoff:
    """Exponential back-off with full jitter: 0.5 s, 1 s, 2 s ... up to `maximum`."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    _attempt: int = 0

    def next(self, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        # Jitter spreads the reconnects of many agents after a network cut.
        return ceiling / 2 + rng.random() * ceiling / 2

    def reset(self) -> None:
        self._attempt = 0


@dataclass(slots=True)
class LinkStatistics:
    state: str = "connecting"  # connecting | connected | lost
    polls: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    last_error: str = ""
    last_good_ns: int = 0


async def run_link(
    source: Source,
    clock: Clock,
    emit_readings: Callable[[ReadingBatch], None],
    emit_event: Callable[[Event], None],
    *,
    stats: LinkStatistics | None = None,
    schedule: Schedule | None = None,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
) -> None:
    """Poll `source` on its schedule (by default one built from its poll groups) until cancelled."""
    stats = stats if stats is not None else LinkStatistics()
    backoff = backoff or Backoff(maximum=LINK_BACKOFF_MAX)
    rng = rng or random.Random()
    schedule = schedule or Schedule(dict(source.poll_groups()), clock)
    connected = False
    ever_connected = False
    retry_at = clock.monotonic()

    def changed(state: str, detail: str) -> None:
        stats.state = state
        emit_event(
            Event(
                EventKind.CONNECTION,
                ts_ns=clock.time_ns(),
                machine=None,
                data={"source": source.name, "state": state, "detail": detail},
            )
        )

    try:
        while True:
            groups = await schedule.wait()
            if not connected and clock.monotonic() >= retry_at:
                try:
                    await source.connect()
                except Exception as exc:
                    why = one_line(exc)
                    if not isinstance(exc, ConnectorError):
                        log.debug("%s: connect failed", source.name, exc_info=exc)
                        await _close(source)  # it may be half open
                    stats.connect_failures += 1
                    stats.last_error = why
                    retry_at = clock.monotonic() + backoff.next(rng)
                    if stats.state != "lost":  # once per outage, not once per attempt
                        log.warning("%s: cannot connect: %s", source.name, why)
                        changed("lost", why)
                else:
                    connected = True
                    stats.connects += 1
                    backoff.reset()
                    log.info("%s: %s", source.name, "restored" if ever_connected else "connected")
                    changed("restored" if ever_connected else "connected", "")
                    stats.state = "connected"
                    ever_connected = True
            if connected:
                try:
                    batches = await source.poll(groups)
                except Exception as exc:
                    why = one_line(exc)
                    if not isinstance(exc, ConnectorError):
                        log.debug("%s: poll failed", source.name, exc_info=exc)
                    connected = False
                    stats.disconnects += 1
                    stats.last_error = why
                    retry_at = clock.monotonic() + backoff.next(rng)
                    log.warning("%s: connection lost: %s", source.name, why)
                    changed("lost", why)
                    await _close(source)
                    batches = source.bad_batches(groups, clock.time_ns())
                else:
                    stats.polls += 1
                    stats.last_good_ns = clock.time_ns()
            else:
                batches = source.bad_batches(groups, clock.time_ns())
            for batch in batches:
                emit_readings(batch)
    finally:
        await _close(source)


async def _close(source: Source) -> None:
    """Close `source`; a failure to close is logged, never raised (nothing is left to save)."""
    try:
        await source.close()
    except Exception as exc:
        log.warning("%s: closing: %s", source.name, one_line(exc))
        log.debug("%s: close failed", source.name, exc_info=exc)

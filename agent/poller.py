"""The link loop: one task per physical link polls its source on schedule, forever.

It owns what the connectors do not: the schedule of the link's poll groups, connecting and
reconnecting with exponential back-off, and telling the rest of the agent what happened. While
the link is down, every due tick still yields readings: bad-quality ones, so nothing
downstream mistakes an old value for a current one. State changes (connected, lost, restored)
are logged once each and emitted as events; failures are counted.

A link that connects but then fails its polls (a device that garbles its answers, so each
connection is closed again at once) is not a healthy link: the reconnect back-off is reset
only by a poll with at least one good reading. And a "lost" or "restored" change (a log line
and an event) comes at most once a minute: those in between are held back and counted, the
next one told says how many (`repeats` in the event). A change held back is told once its
minute is over if the link is still so, so the last event always says where the link is.
"Last good" is the last poll with a good reading.

A source that fails in a way it did not foresee (a library's bare assertion, a KeyError) is
treated as a failed connect or a lost link: one line logged (the traceback only at debug
level), its tags bad, another attempt after the back-off. One source never ends the agent.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.clock import Clock
from agent.errors import ConnectorError, one_line
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.reasons import REPEAT_WINDOW, reasons_of
from agent.scheduler import Schedule
from agent.source import Source
from agent.texts import texts_of

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


class PollCount(Protocol):
    """Who counts the links in the middle of a poll (`Readings`, agent/readings.py)."""

    def began(self, source: str) -> None: ...

    def ended(self) -> None: ...


@dataclass(slots=True)
class LinkStatistics:
    state: str = "connecting"  # connecting | connected | lost
    polls: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    last_error: str = ""
    last_good_ns: int = 0
    non_finite: int = 0  # readings of NaN or ±inf, stored with bad quality (agent/pipeline.py)


_GOOD = bytes([Quality.GOOD.value])  # a quality code is one byte (uint8)


def any_good(batches: list[ReadingBatch]) -> bool:
    """Whether any reading of a poll is good: a byte search of each batch's quality column,
    a few times cheaper than a numpy reduction on the poll's few hundred rows."""
    return any(_GOOD in b.quality.tobytes() for b in batches)


@dataclass(slots=True)
class _Change:
    state: str  # connected | restored | lost
    detail: str
    level: int
    line: str  # what the log says, without the source's name


class _Teller:
    """Tells the link's state changes (log line and event); a lost or a restored told less than
    `window` seconds after the last one of its kind is held back. See the module's docstring."""

    def __init__(
        self, source: str, clock: Clock, emit_event: Callable[[Event], None], window: float
    ) -> None:
        self.source = source
        self.clock = clock
        self.emit_event = emit_event
        self.window = window
        self.told = ""  # the state the last event said ("" before the first)
        self.told_at = {"lost": -math.inf, "restored": -math.inf}  # by kind ("connected": none)
        self.held = 0  # changes not told since the last one that was
        self.pending: _Change | None = None  # the latest change held back

    def _due(self, state: str) -> bool:
        at = self.told_at.get(state)
        return at is None or self.clock.monotonic() - at >= self.window

    def change(self, change: _Change) -> None:
        if (change.state == "lost") == (self.told == "lost") and self.told:
            # It flapped back to what the events say already: nothing to tell but the count.
            self.held += 1
            self.pending = None
        elif self._due(change.state):
            self._tell(change)
        else:
            self.held += 1
            self.pending = change

    def catch_up(self) -> None:
        """Tell a change held back once its kind's window is over (the link is still so)."""
        if self.pending is not None and self._due(self.pending.state):
            self._tell(self.pending)

    def _tell(self, change: _Change) -> None:
        held, self.held, self.pending = self.held, 0, None
        note = f" ({held} more changes since the last report)" if held else ""
        log.log(change.level, "%s: %s%s", self.source, change.line, note)
        data: dict[str, object] = {
            "source": self.source,
            "state": change.state,
            "detail": change.detail,
        }
        if held:
            data["repeats"] = held
        self.emit_event(
            Event(EventKind.CONNECTION, ts_ns=self.clock.time_ns(), machine=None, data=data)
        )
        self.told = change.state
        if change.state in self.told_at:
            self.told_at[change.state] = self.clock.monotonic()


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
    repeat_window: float = REPEAT_WINDOW,
    polls: PollCount | None = None,
) -> None:
    """Poll `source` on its schedule (by default one built from its poll groups) until cancelled.

    `polls` is told when each step (connect if need be, poll, hand the readings over) begins
    and when it has ended, so the readings of the links woken for one tick go on as one batch.
    """
    stats = stats if stats is not None else LinkStatistics()
    backoff = backoff or Backoff(maximum=LINK_BACKOFF_MAX)
    rng = rng or random.Random()
    schedule = schedule or Schedule(dict(source.poll_groups()), clock)
    connected = False
    ever_connected = False
    retry_at = clock.monotonic()
    reasons = reasons_of(source)
    texts = texts_of(source)
    good_texts = 0  # texts.good_reads after the last poll
    teller = _Teller(source.name, clock, emit_event, repeat_window)

    def link_reason(why: str) -> None:
        if reasons is not None:
            reasons.set_link(why)

    try:
        while True:
            groups = await schedule.wait()
            if polls is not None:
                polls.began(source.name)
            try:
                teller.catch_up()
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
                        link_reason(why)
                        retry_at = clock.monotonic() + backoff.next(rng)
                        if stats.state != "lost":  # once per outage, not once per attempt
                            stats.state = "lost"
                            line = f"cannot connect: {why}"
                            teller.change(_Change("lost", why, logging.WARNING, line))
                    else:
                        # The back-off is reset by a good poll, not by a connect: a device that
                        # accepts connections and then garbles every answer must not flap at will.
                        connected = True
                        stats.connects += 1
                        link_reason("")
                        state = "restored" if ever_connected else "connected"
                        teller.change(_Change(state, "", logging.INFO, state))
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
                        link_reason(why)
                        retry_at = clock.monotonic() + backoff.next(rng)
                        stats.state = "lost"
                        line = f"connection lost: {why}"
                        teller.change(_Change("lost", why, logging.WARNING, line))
                        await _close(source)
                        batches = source.bad_batches(groups, clock.time_ns())
                    else:
                        stats.polls += 1
                        # A good string counts too: a unit polled for text tags alone sends no
                        # numeric reading, yet its poll worked.
                        text_read = texts is not None and texts.good_reads != good_texts
                        if texts is not None:
                            good_texts = texts.good_reads
                        if any_good(batches) or text_read:
                            stats.last_good_ns = clock.time_ns()
                            backoff.reset()
                else:
                    batches = source.bad_batches(groups, clock.time_ns())
                for batch in batches:
                    emit_readings(batch)
            finally:
                if polls is not None:
                    polls.ended()
            if not connected and schedule.back_to_back:
                # Back to back, a link that is down would spin out bad readings as fast as
                # the loop turns: one poll's worth per connect attempt is enough.
                await clock.sleep_until(retry_at)
    finally:
        await _close(source)


async def _close(source: Source) -> None:
    """Close `source`; a failure to close is logged, never raised (nothing is left to save)."""
    try:
        await source.close()
    except Exception as exc:
        log.warning("%s: closing: %s", source.name, one_line(exc))
        log.debug("%s: close failed", source.name, exc_info=exc)

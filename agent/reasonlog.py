"""The reasons of bad readings, kept in the store so `export` can say why a row is bad.

Reasons are per block of tags and change rarely, so they are not stored per reading: each
time the reasons of a source change, a `reasons` event is stored with the whole picture of
that source at that moment (`{"source": ..., "bad": {tag path: reason}}`, empty when every
tag reads good again). `record_reasons` looks at most once a second, so a flapping device
costs one event a second, not one per poll; the event is stamped with the time of the change.
Export replays these events in time order beside the readings (`ReasonAt`): a bad reading
gets the reason its tag had at that time in its source's latest event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent.clock import Clock
from agent.errors import one_line
from agent.model import Event, EventKind
from agent.reasons import reasons_of

log = logging.getLogger("lineside.reasons")

CHECK_INTERVAL = 1.0  # seconds between looks at the sources' reasons


async def record_reasons(
    sources: Sequence[Any],
    path_of: Callable[[int], str],
    clock: Clock,
    emit_event: Callable[[Event], None],
    *,
    interval: float = CHECK_INTERVAL,
    wall: Callable[[], float] = time.time,
) -> None:
    """Emit a `reasons` event for each source whose reasons changed, until cancelled."""
    told: dict[str, int] = {}
    while True:
        for source in sources:
            try:
                _tell(source, told, path_of, clock, emit_event, wall)
            except Exception as exc:  # a view of the reasons never ends the agent
                log.warning("reasons of %s not stored: %s", source.name, one_line(exc))
        await clock.sleep_until(clock.monotonic() + interval)


def _tell(
    source: Any,
    told: dict[str, int],
    path_of: Callable[[int], str],
    clock: Clock,
    emit_event: Callable[[Event], None],
    wall: Callable[[], float],
) -> None:
    reasons = reasons_of(source)
    if reasons is None or told.get(source.name, 0) == reasons.version:
        return
    told[source.name] = reasons.version
    bad = {path_of(tag): why for tag, why in sorted(reasons.by_tag().items())}
    # Stamped when it changed (up to `interval` ago), on the clock readings carry.
    age_ns = max(0, round((wall() - reasons.changed_at) * 1e9))
    data = {"source": source.name, "bad": bad}
    emit_event(Event(EventKind.REASONS, clock.time_ns() - age_ns, None, data))


def changes(rows: Iterable[tuple[int, str]]) -> list[tuple[int, str, dict[str, str]]]:
    """(ts_ns, source, {path: reason}) of stored `reasons` events given as (ts_ns, data)."""
    out = []
    for ts_ns, text in rows:
        try:
            data = json.loads(text)
            bad = {str(p): str(r) for p, r in dict(data.get("bad") or {}).items()}
            out.append((int(ts_ns), str(data["source"]), bad))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # an event this version cannot read names no reason; the rows still go
    return out


class ReasonAt:
    """The reason of each tag path as time goes forward, from the `changes` in time order."""

    def __init__(self, events: Sequence[tuple[int, str, dict[str, str]]]) -> None:
        self._events = events
        self._next = 0
        self._by_source: dict[str, dict[str, str]] = {}
        self._now: dict[str, str] = {}

    def at(self, ts_ns: int, path: str) -> str:
        """Why `path` read bad at `ts_ns` ("" when no event says); times must not go back."""
        moved = False
        while self._next < len(self._events) and self._events[self._next][0] <= ts_ns:
            _, source, bad = self._events[self._next]
            self._by_source[source] = bad
            self._next += 1
            moved = True
        if moved:
            self._now = {p: r for bad in self._by_source.values() for p, r in bad.items()}
        return self._now.get(path, "")

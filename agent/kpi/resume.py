"""Resuming the live KPI engine after a restart: the windows still open go on from what the
last run saw (a replay of the stored readings, `agent/kpi/replay.py`), instead of starting
again as unknown time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.config.sections import Config
from agent.kpi.calendar import WindowKind, window_at
from agent.kpi.engine import KpiEngine, RecordKey, record_key
from agent.kpi.replay import Progress, feed, lead_ns, open_store
from agent.model import Event, EventKind, Outage
from agent.store import StoreReader

HeldKey = RecordKey  # (scope, machine / line / area / site, kind, name)


@dataclass(slots=True)
class Resumed:
    """What `resume` did to the live engine."""

    # The agent's outage (from the last stored reading to now) as a fact for the store, then
    # windows closed in the replay that the store does not hold yet.
    events: list[Event]
    since_ns: int  # the start of the earliest window still open: replayed from `lead` before
    records: int = 0  # telemetry records read
    held: int = 0  # KPI events the replay closed again that the store already holds
    last_seen_ns: int | None = None  # the last stored reading: the agent saw nothing after it
    verdicts: int = 0  # stored inspection verdicts replayed


def open_since(config: Config, now_ns: int) -> int:
    """The start of the earliest window (hour, shift, day) in progress at `now_ns`."""
    kinds: tuple[WindowKind, ...] = ("hour", "shift", "day")
    starts = [w.start_ns for k in kinds if (w := window_at(config.calendar, k, now_ns)) is not None]
    return min(starts)


def resume(
    engine: KpiEngine,
    config: Config,
    now_ns: int,
    *,
    data_dir: Path | None = None,
    progress: Progress | None = None,
) -> Resumed:
    """Rebuild a fresh live `engine` from the store at start, so the windows still open at
    `now_ns` go on from what the last run saw instead of starting again as unknown time.

    The stored readings from `lead` before the earliest open window (at most a day and the
    lead) go through the engine, in storage order, with the stored verdicts of the inspections
    that are a machine's quality merged in by time (`feed`): so verdicts before the restart
    still count. The time after the last reading, until the next one, is unknown
    (`KpiEngine.outage`): the agent was not running. KPI events the
    replay gives again are left out when the store holds their window at that revision or a
    later one (the engine numbers its revisions on from the stored ones); windows that began
    before the earliest open window are left out too (the replay saw only their end). What is
    left (a window the last run closed but could not store) is in `events`, for the store.
    """
    since = open_since(config, now_ns)
    start = since - lead_ns(config)
    with open_store(config, data_dir) as store:
        events, done, verdicts = feed(engine, store, start, now_ns + 1, progress)
        last = store.last_reading_ns(start, now_ns)
        held = _held(store, start)
    outage = None
    if last is not None:
        events += engine.outage(int(last))
        outage = Outage(int(last), now_ns, "agent stopped").event()
    engine.adopt_revisions(held)
    fresh: list[Event] = []
    again = 0
    for e in events:
        d = e.data
        w = d["window"]
        if e.kind is not EventKind.KPI or w["start_ns"] < since:
            continue
        if d["revision"] <= held.get(record_key(d), -1):
            again += 1
            continue
        fresh.append(e)
    if outage is not None:
        fresh.insert(0, outage)  # stored, so `lineside oee` replays the outage where it was
    last_seen = int(last) if last is not None else None
    return Resumed(fresh, since, done, again, last_seen, verdicts)


def _held(store: StoreReader, start_ns: int) -> dict[HeldKey, int]:
    """The latest stored revision of every KPI window that ended after `start_ns`."""
    out: dict[HeldKey, int] = {}
    for d in store.events_of(EventKind.KPI, start_ns):
        key = record_key(d)
        out[key] = max(out.get(key, -1), int(d["revision"]))
    return out

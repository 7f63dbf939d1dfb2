"""`AgentSnapshot`: every figure of the running agent at one moment, typed and frozen.

The runtime builds one per status tick (`take_snapshot`, every `STATUS_INTERVAL` seconds, never
per poll) from each component's own statistics (agent/statistics.py), the link loops' counters,
the schedules, the writer, the forwarders, the alarms and the inspections. status.json
(agent/status_file.py), `/api/state` (agent/web/state.py) and `/metrics` (agent/web/metrics.py)
are renderers of it: pure functions of a snapshot, so a new counter touches its dataclass, the
place that counts it and the renderers that show it, nothing else.

What costs a query of the store (depth, cursors, quarantine: `StoreFigures`) and what only the
page keeps (every verdict: `VerdictFigures`) are not read on the tick; the page adds them to the
snapshot it renders (`dataclasses.replace`).
"""

from __future__ import annotations

import dataclasses
import logging
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agent.errors import one_line
from agent.histogram import HistogramSnapshot
from agent.lane import ForwardStatistics
from agent.pipeline import FilterStatistics
from agent.poller import LinkStatistics
from agent.reasons import Seen, reasons_of
from agent.scheduler import TickerStatistics
from agent.statistics import InspectionStatistics, SinkStatistics, SourceStatistics
from agent.store import STREAMS, Store
from agent.store.figures import WriterStats

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("lineside.agent")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """One source: its own statistics, its link loop's, its poll groups' and why it reads bad."""

    name: str
    type: str
    endpoint: str
    statistics: SourceStatistics
    link: LinkStatistics  # a copy, taken with the snapshot
    groups: Mapping[str, TickerStatistics]
    tags: int
    bad_reasons: Mapping[str, int]  # reason -> tags reading bad for it now
    seen: tuple[Seen, ...] = ()  # every reason since start (copies)
    statistics_error: str | None = None  # the source's statistics() raised: its figures are 0

    @property
    def overruns(self) -> int:
        return sum(g.overruns for g in self.groups.values())

    def errors(self) -> dict[str, int]:
        """Failed requests by kind, then the link's failures and the non-finite readings."""
        link = self.link
        return {
            **self.statistics.errors(),
            "connect_failures": link.connect_failures,
            "disconnects": link.disconnects,
            "non_finite": link.non_finite,
        }


@dataclass(frozen=True, slots=True)
class SinkSnapshot:
    """One sink: its own statistics and its forwarder's lanes."""

    name: str
    type: str
    endpoint: str
    statistics: SinkStatistics
    forward: ForwardStatistics  # a copy, taken with the snapshot
    dropped: int  # telemetry the store's bounds dropped before this sink acknowledged it
    statistics_error: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmSnapshot:
    """One configured `[[alarms]]` entry, active or not."""

    name: str
    machine: str
    tag: str
    severity: str
    active: bool
    reason: str | None  # why it is active; None while clear
    since_ns: int | None
    acknowledged: bool
    acknowledged_by: str | None
    raised: int  # times raised since the agent started


@dataclass(frozen=True, slots=True)
class InspectionSnapshot:
    name: str
    machine: str
    latest: Mapping[str, Any] | None  # the latest verdict's data; None before the first
    statistics: InspectionStatistics


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """What the store itself answers (a query each): read in a thread, shared by all clients."""

    depth: Mapping[str, int]
    bytes: int
    backlog: Mapping[str, Mapping[str, int]]  # sink -> stream -> records not acknowledged
    oldest_unsent_age_s: Mapping[str, Mapping[str, float | None]]
    quarantined: Mapping[str, int]  # sink -> records set aside
    error: str | None = None  # the store could not be read


@dataclass(frozen=True, slots=True)
class VerdictFigures:
    """Every verdict since start, as the page's verdict log counted them (agent/web/verdicts.py)."""

    latency: Mapping[str, HistogramSnapshot]  # inspection -> frame read to verdict
    counts: Mapping[tuple[str, str], int]  # (inspection, verdict) -> verdicts
    rejects: tuple[Mapping[str, Any], ...] = ()  # the latest NotOK, newest first


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    agent_id: str
    wall_ns: int
    monotonic: float
    tags: int
    samples: int  # readings polled, stored or not
    machines: tuple[str, ...]
    sources: tuple[SourceSnapshot, ...]
    sinks: tuple[SinkSnapshot, ...]
    pipeline: FilterStatistics | None  # report by exception; None when every reading is kept
    writer: WriterStats
    store_path: str
    alarms: tuple[AlarmSnapshot, ...]
    inspections: tuple[InspectionSnapshot, ...]
    store: StoreFigures | None = None  # added by the page (a query of the store)
    verdicts: VerdictFigures | None = None  # added by the page (its verdict log)

    def inspection_figures(self) -> dict[str, dict[str, Any]]:
        """Each inspection's latest verdict and counters, as status.json has them."""
        return {
            i.name: {"machine": i.machine, "latest": i.latest, **i.statistics.figures()}
            for i in self.inspections
        }


def read_store(store: Store) -> StoreFigures:
    """One look at the store (blocking: call it from a thread)."""
    try:
        stats = store.stats()
        sinks = store.sinks()
        backlog = {
            sink: {
                st: max(0, stats.streams[st].last_seq - store.cursor(sink, st)) for st in STREAMS
            }
            for sink in sinks
        }
        quarantined = dict.fromkeys(sinks, 0)
        for record in store.quarantined():
            quarantined[record.sink] = quarantined.get(record.sink, 0) + 1
    except Exception as exc:  # the page reports a broken store, it does not die with it
        return StoreFigures({}, 0, {}, {}, {}, error=f"{type(exc).__name__}: {exc}")
    return StoreFigures(
        depth={name: s.depth for name, s in stats.streams.items()},
        bytes=stats.bytes,
        backlog=backlog,
        oldest_unsent_age_s=stats.oldest_unsent_age_s,
        quarantined=quarantined,
    )


# A copy of a link's counters and of a reason's record, through one C getter of their fields:
# a fifth of what `dataclasses.replace` costs, once per source per status tick.
_LINK_VALUES = operator.attrgetter(*(f.name for f in dataclasses.fields(LinkStatistics) if f.init))
_SEEN_VALUES = operator.attrgetter(*(f.name for f in dataclasses.fields(Seen) if f.init))


def _link_copy(link: LinkStatistics) -> LinkStatistics:
    return LinkStatistics(*_LINK_VALUES(link))


def _seen_copy(seen: Seen) -> Seen:
    return Seen(*_SEEN_VALUES(seen))


def _own(name: str, statistics: Callable[[], T], empty: T) -> tuple[T, str | None]:
    """A component's own statistics; a bug there costs its figures (zeros and the error), not
    the snapshot, the status file, the page or the agent."""
    try:
        return statistics(), None
    except Exception as exc:
        log.debug("%s: statistics failed", name, exc_info=exc)
        return empty, one_line(exc)


def _sources(agent: Agent) -> tuple[SourceSnapshot, ...]:
    configs = {c.name: c for c in agent.config.sources}
    out = []
    for source in agent.sources:
        name = source.name
        config = configs.get(name)
        statistics, error = _own(name, source.statistics, SourceStatistics())
        reasons = reasons_of(source)
        out.append(
            SourceSnapshot(
                name=name,
                type=config.type if config is not None else "",
                endpoint=config.endpoint if config is not None else "",
                statistics=statistics,
                link=_link_copy(agent.links[name]),
                groups=agent.schedules[name].statistics(),
                tags=agent.tags_of_source(name),
                bad_reasons=agent.bad_reasons(source),
                seen=tuple(map(_seen_copy, reasons.seen())) if reasons else (),
                statistics_error=error,
            )
        )
    return tuple(out)


def _sinks(agent: Agent, writer: WriterStats) -> tuple[SinkSnapshot, ...]:
    configs = {c.name: c for c in agent.config.sinks}
    out = []
    for forwarder in agent.forwarders:
        sink = forwarder.sink
        config = configs.get(sink.name)
        statistics, error = _own(sink.name, sink.statistics, SinkStatistics())
        lanes = forwarder.stats
        out.append(
            SinkSnapshot(
                name=sink.name,
                type=config.type if config is not None else "",
                endpoint=config.endpoint if config is not None else "",
                statistics=statistics,
                forward=dataclasses.replace(lanes, sent=dict(lanes.sent)),
                dropped=writer.dropped_by_sink.get(sink.name, 0),
                statistics_error=error,
            )
        )
    return tuple(out)


def _alarms(agent: Agent) -> tuple[AlarmSnapshot, ...]:
    book = agent.alarms
    out = []
    for rule in book.rules:
        state = book.states[rule.name]
        active = state.since_ns is not None
        out.append(
            AlarmSnapshot(
                name=rule.name,
                machine=rule.machine,
                tag=rule.tag,
                severity=rule.severity,
                active=active,
                reason=rule.reason(state.value) if active else None,
                since_ns=state.since_ns,
                acknowledged=state.acknowledged,
                acknowledged_by=state.acknowledged_by,
                raised=state.raised,
            )
        )
    return tuple(out)


def _inspections(agent: Agent) -> tuple[InspectionSnapshot, ...]:
    out = []
    for i in agent.inspectors:
        statistics, _ = _own(i.name, i.statistics, InspectionStatistics())
        latest = dict(i.latest) if i.latest is not None else None
        out.append(InspectionSnapshot(i.name, i.machine, latest, statistics))
    return tuple(out)


def take_snapshot(agent: Agent) -> AgentSnapshot:
    """Every figure of `agent` now (cheap: counters copied, no query of the store)."""
    writer = agent.writer.statistics()
    filtered = agent.filter.statistics() if agent.filter is not None else None
    return AgentSnapshot(
        agent_id=agent.config.agent.id,
        wall_ns=agent.clock.time_ns(),
        monotonic=agent.clock.monotonic(),
        tags=len(agent.tags),
        samples=agent.samples,
        machines=agent.tag_machines,
        sources=_sources(agent),
        sinks=_sinks(agent, writer),
        pipeline=filtered,
        writer=writer,
        store_path=str(agent.store.path),
        alarms=_alarms(agent),
        inspections=_inspections(agent),
    )

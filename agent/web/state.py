"""What the status page shows, as JSON-ready data: sources, sinks, the store, live values, OEE
and the latest inspection verdicts.

`StateBuilder` takes the agent's snapshot (agent/snapshot.py) and adds what costs a query (store
depth, cursors, quarantine), read in a worker thread, and the page's verdict log, at most once
per `refresh` seconds and shared by every client, so ten open pages and a Prometheus scrape
cost the agent one snapshot and the store one look per second.
`state_figures` renders that snapshot (pure); `/metrics` renders the same one
(agent/web/metrics.py). The live values, the KPI snapshot and the andon rows are read from the
agent as they are; `oee_view` and `inspections_view` turn them into what the page draws.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from typing import TYPE_CHECKING, Any

from agent.alarms import NS
from agent.codenames import CodeNames
from agent.model import Quality
from agent.reasons import one_line
from agent.secrets import redact_tree
from agent.snapshot import AgentSnapshot, StoreFigures
from agent.snapshot import read_store as read_store
from agent.texts import TextReading
from agent.values import is_text, models_by_path, text
from agent.values import plain as typed
from agent.web.andon import AndonBoard
from agent.web.targets import with_targets

if TYPE_CHECKING:
    from agent.runtime import Agent
    from agent.tags import Tag
    from agent.web.verdicts import VerdictLog


def finite(value: float | None) -> float | None:
    """NaN and infinities become None: JSON has no NaN and the page shows "-"."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(slots=True)
class _Rate:
    """Polls per second of one source, measured between two looks."""

    at: float = 0.0
    polls: int = 0
    per_second: float | None = None

    def update(self, now: float, polls: int) -> float | None:
        if self.at and now > self.at:
            self.per_second = (polls - self.polls) / (now - self.at)
        self.at, self.polls = now, polls
        return self.per_second


@dataclass(slots=True)
class _Cache:
    at: float = -math.inf
    figures: dict[str, Any] = field(default_factory=dict)
    snapshot: AgentSnapshot | None = None  # with the store's figures and the verdicts


class StateBuilder:
    def __init__(
        self, agent: Agent, *, refresh: float = 1.0, verdicts: VerdictLog | None = None
    ) -> None:
        self.agent = agent
        self.refresh = refresh
        self.verdicts = verdicts  # every verdict as emitted: the rejects and the histograms
        self._cache = _Cache()
        self._lock = asyncio.Lock()
        self._rates: dict[str, _Rate] = {}
        self.machines = list(dict.fromkeys(t.machine for t in agent.tags))
        self.andon = AndonBoard(agent)  # state per machine, how long, parts against target
        # How each tag's value is shown: its type and the names of its codes (from the config).
        # Keyed by the tag table's own path strings, not a second copy of each (1.4 MB at
        # 20,000 tags): the page looks models up by `tag.path` only.
        models = models_by_path(agent.config)
        self._models = {t.path: models.get(t.path) for t in agent.tags}
        self._names = CodeNames.of(agent.config)

    async def snapshot(self, max_age: float | None = None) -> AgentSnapshot:
        """The agent's snapshot with the store's figures and the verdicts, at most `max_age`
        (default `refresh`) seconds old: what `/metrics` renders."""
        await self.figures(max_age)
        assert self._cache.snapshot is not None
        return self._cache.snapshot

    async def figures(
        self, max_age: float | None = None, *, shared_age: float = 0.0
    ) -> dict[str, Any]:
        """Everything but the live values, at most `max_age` (default `refresh`) seconds old.

        A refresh takes the agent's snapshot now, or with `shared_age` renders the one the
        agent took at most that many seconds ago (the status tick's: `Agent.snapshot`); the
        page asks for now, the fleet status takes the status tick's."""
        limit = self.refresh if max_age is None else max_age
        async with self._lock:  # one refresh at a time; the others wait and share it
            now = self.agent.clock.monotonic()
            if now - self._cache.at >= limit or self._cache.snapshot is None:
                store = await asyncio.to_thread(read_store, self.agent.store)
                taken = replace(
                    self.agent.snapshot(max_age=shared_age),
                    store=store,
                    verdicts=self.verdicts.figures() if self.verdicts is not None else None,
                )
                rates = {
                    s.name: self._rates.setdefault(s.name, _Rate()).update(
                        taken.monotonic, s.link.polls
                    )
                    for s in taken.sources
                }
                # The KPIs and the andon are read now: at the clock's time, not the snapshot's
                # (a shared snapshot may be seconds old).
                operator = self._operator_view(self.agent.clock.time_ns())
                figures = {**state_figures(taken, rates), **operator}
                # Redacted as a whole: last errors quote far sides, which may echo a credential.
                # As old as the snapshot: a shared one may be older than this refresh.
                self._cache = _Cache(min(now, taken.monotonic), redact_tree(figures), taken)
            return self._cache.figures

    async def state(self, machine: str | None, max_age: float | None = None) -> dict[str, Any]:
        """The whole `/api/state` answer; `machine` picks the live values (default: the first)."""
        figures = await self.figures(max_age)
        chosen = machine if machine in self.machines else next(iter(self.machines), None)
        return {**figures, "machine": chosen, "values": self.values(chosen) if chosen else []}

    def values(self, machine: str) -> list[dict[str, Any]]:
        agent = self.agent
        out = []
        why: dict[int, str] = {}  # the bad tags' reasons, of the sources serving `machine`
        serving = {t.source for t in agent.tags if t.machine == machine}
        for source in agent.sources:
            if source.name in serving:
                why.update(agent.tag_reasons(source))
        for tag in agent.tags:
            if tag.machine != machine or not tag.source:  # no source: a reload removed it
                continue
            if is_text(self._models.get(tag.path)):
                out.append(text_value(tag, agent.texts.latest.get(tag.id)))
                continue
            ts = int(agent.latest_ts_ns[tag.id])
            quality = Quality(int(agent.latest_quality[tag.id]))
            value = float(agent.latest_values[tag.id])
            out.append(
                {
                    "tag": tag.name,
                    "value": typed(value, self._models.get(tag.path)) if ts else None,
                    "text": text(value, self._models.get(tag.path)) if ts else None,
                    "name": self._names.name(tag.path, value) if ts else None,
                    "unit": tag.unit,
                    "quality": quality.name.lower() if ts else "not read",
                    "reason": why.get(tag.id) if ts and quality != Quality.GOOD else None,
                    "ts_ns": ts or None,
                }
            )
        return out

    def _operator_view(self, wall_ns: int) -> dict[str, Any]:
        """The OEE bars and the andon rows and timelines, from one KPI snapshot."""
        snapshot = _call(self.agent, "kpi_snapshot")
        oee = oee_view(snapshot)
        with_targets(oee, self.agent.config, snapshot, wall_ns)  # target OEE, plan vs good
        return {"oee": oee, "andon": self.andon.rows(wall_ns, snapshot)}


def state_figures(
    snapshot: AgentSnapshot, poll_rates: Mapping[str, float | None] | None = None
) -> dict[str, Any]:
    """What `/api/state` shows of the agent's figures (all but the live values and the
    operator views): a renderer of the snapshot, pure. `poll_rates`: polls per second of
    each source, measured by the caller between two snapshots."""
    rates = poll_rates or {}
    wall_ns = snapshot.wall_ns
    store = snapshot.store or StoreFigures({}, 0, {}, {}, {})
    writer = snapshot.writer
    sources = []
    for source in snapshot.sources:
        link, stats = source.link, source.statistics
        errors = source.errors()
        bad = dict(source.bad_reasons)
        sources.append(
            {
                "name": source.name,
                "type": source.type,
                "endpoint": source.endpoint,
                "state": link.state,
                "polls": link.polls,
                "poll_rate_hz": rates.get(source.name),
                "requests": stats.requests,
                "reconnects": stats.reconnects,
                "errors": errors,
                "errors_total": sum(errors.values()),
                "overruns": source.overruns,
                "latency_p50_s": finite(stats.latency_p50_s),
                "latency_p99_s": finite(stats.latency_p99_s),
                "last_good_ns": link.last_good_ns or None,
                "last_good_age_s": (
                    max(0.0, (wall_ns - link.last_good_ns) / 1e9) if link.last_good_ns else None
                ),
                "last_error": link.last_error or None,
                # Why tags read bad now (reason -> tags), and the same in one line.
                "tags": source.tags,
                "bad_tags": sum(bad.values()),
                "bad_reasons": bad,
                "problem": one_line(bad, source.tags) or None,
                # Every reason since start: first and last seen, how often, whether now.
                "error_list": [
                    {
                        "reason": seen.reason,
                        "first_s": seen.first,
                        "last_s": seen.last,
                        "count": seen.count,
                        "active": seen.reason in bad,
                    }
                    for seen in source.seen
                ],
            }
        )
    sinks = []
    for sink in snapshot.sinks:
        name = sink.name
        ages = [a for a in store.oldest_unsent_age_s.get(name, {}).values() if a is not None]
        backlog = store.backlog.get(name, {})
        sinks.append(
            {
                "name": name,
                "type": sink.type,
                "endpoint": sink.endpoint,
                "state": sink.forward.state,
                "backlog": sum(backlog.values()),
                "backlog_by_stream": dict(backlog),
                "oldest_unsent_age_s": max(ages) if ages else None,
                "sent": sum(sink.forward.sent.values()),
                "failures": sink.forward.failures,
                # telemetry the store's bounds dropped before this sink acknowledged it
                "dropped": sink.dropped,
                "quarantined": store.quarantined.get(name, 0),
                "last_error": sink.forward.last_error or None,
            }
        )
    verdicts = snapshot.verdicts
    return {
        "agent_id": snapshot.agent_id,
        "now_ns": wall_ns,
        "tags": snapshot.tags,
        "samples": snapshot.samples,
        "machines": list(snapshot.machines),
        "sources": sources,
        "sinks": sinks,
        "store": {
            "path": snapshot.store_path,
            "depth": dict(store.depth),
            "bytes": store.bytes,
            "readings_written": writer.readings_written,
            "pending_readings": writer.pending_readings,
            # telemetry the bounds removed before every sink had it (gap records say which)
            "dropped_readings": writer.dropped_readings,
            "store_full": writer.store_full,
            "full_reason": writer.full_reason,
            "last_error": writer.last_error or store.error,
        },
        "alarms": alarm_rows(snapshot),
        "inspections": {
            **inspections_view(snapshot.inspection_figures() if snapshot.inspections else None),
            "rejects": [dict(r) for r in verdicts.rejects] if verdicts is not None else [],
        },
    }


def alarm_rows(snapshot: AgentSnapshot) -> list[dict[str, Any]]:
    """The active alarms for the page, longest active first (agent/alarms.py)."""
    rows: list[dict[str, Any]] = [
        {
            "alarm": a.name,
            "machine": a.machine,
            "tag": a.tag,
            "severity": a.severity,
            "reason": a.reason,
            "since_ns": a.since_ns,
            "active_s": round(max(0, snapshot.wall_ns - a.since_ns) / NS, 1),
            "acknowledged": a.acknowledged,
            "acknowledged_by": a.acknowledged_by,
        }
        for a in snapshot.alarms
        if a.active and a.since_ns is not None
    ]
    rows.sort(key=lambda r: r["since_ns"])
    return rows


def _call(agent: Agent, method: str) -> Any:
    """`agent.<method>()` when the agent has it (KPI engine, vision): None otherwise."""
    function = getattr(agent, method, None)
    return function() if callable(function) else None


# ---------------------------------------------------------------------------------------------
# Shapes from the KPI engine and the vision inspector, made into what the page draws


def plain(value: Any) -> Any:
    """Dataclasses, mappings, tuples and numpy scalars as JSON-ready data; NaN as None."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return plain(value.item())
    if isinstance(value, float):
        return finite(value)
    return str(value)


_KPI_KEYS = ("availability", "performance", "quality", "oee")


def _entries(group: Any, scope: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    if isinstance(group, Mapping):
        for name, entry in group.items():
            if isinstance(entry, Mapping):
                yield str(name), entry
    elif isinstance(group, list | tuple):
        for entry in group:
            if isinstance(entry, Mapping):
                yield str(entry.get(scope) or entry.get("name") or "?"), entry


def _kpis(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """The classic A/P/Q/OEE figures, wherever the entry keeps them."""
    for key in ("classic", "kpis"):
        inner = entry.get(key)
        if isinstance(inner, Mapping):
            if isinstance(inner.get("classic"), Mapping):
                return _kpis(inner)
            return inner
    return entry


def _pareto(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = entry.get("pareto", entry.get("downtime_pareto", []))
    out = []
    for item in raw if isinstance(raw, list | tuple) else []:
        if isinstance(item, Mapping):
            reason, seconds, share = item.get("reason"), item.get("seconds"), item.get("share")
        elif isinstance(item, list | tuple) and len(item) >= 2:
            reason, seconds = item[0], item[1]
            share = item[2] if len(item) > 2 else None
        else:
            continue
        out.append({"reason": str(reason), "seconds": plain(seconds), "share": plain(share)})
    return out


def _unknown(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The share of time and of parts the OEE beside it could not see (docs/kpi.md), None
    where the engine gave none."""
    raw = entry.get("unknown")
    shares = raw if isinstance(raw, Mapping) else {}
    return {key: plain(shares.get(key)) for key in ("time", "parts")}


def oee_view(snapshot: Any) -> dict[str, Any]:
    """`Agent.kpi_snapshot()` (machines and lines with their classic KPIs and downtime Pareto)
    as rows for the page; `available` is False when there is no KPI engine or nothing in it."""
    rows: list[dict[str, Any]] = []
    window = None
    if isinstance(snapshot, Mapping):
        window = snapshot.get("window")
        for scope, key in (("machine", "machines"), ("line", "lines")):
            for name, entry in _entries(snapshot.get(key), scope):
                kpis = _kpis(entry)
                row: dict[str, Any] = {"scope": scope, "name": name}
                row.update({k: plain(kpis.get(k)) for k in _KPI_KEYS})
                row["pareto"] = _pareto(entry)
                row["unknown"] = _unknown(entry)
                raw_flags = entry.get("flags")
                row["flags"] = [str(f) for f in raw_flags] if isinstance(raw_flags, list) else []
                rows.append(row)
    return {"available": bool(rows), "window": plain(window), "rows": rows}


_VERDICT_KEYS = (
    "inspection",
    "machine",
    "verdict",
    "score",
    "label",
    "model",
    "latency_s",
    "ts_ns",
)


def inspections_view(latest: Any) -> dict[str, Any]:
    """`Agent.inspections()` as rows, one per inspection with its latest verdict (None before
    the first). It comes as {name: {"machine", "latest": verdict data, counters...}} or as a
    list of verdicts; `available` is False when the agent has no inspection."""
    items: list[Any]
    if isinstance(latest, Mapping):
        items = [{"inspection": k, **plain(v)} for k, v in latest.items() if v is not None]
    elif isinstance(latest, list | tuple):
        items = [plain(v) for v in latest]
    else:
        items = []
    rows = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        merged = dict(item)
        for nested in ("latest", "data"):  # the verdict itself, as the inspector keeps it
            inner = merged.pop(nested, None)
            if isinstance(inner, Mapping):
                merged.update({k: v for k, v in inner.items() if k != "machine" or v})
        merged.setdefault("inspection", merged.get("name"))
        if merged.get("latency_s") is None and isinstance(merged.get("latency_ms"), int | float):
            merged["latency_s"] = merged["latency_ms"] / 1000
        rows.append({k: merged.get(k) for k in _VERDICT_KEYS})
    return {"available": bool(rows), "rows": rows}


def text_value(tag: Tag, reading: TextReading | None) -> dict[str, Any]:
    """A text tag's row of the page's values: its string as `value` and `text`."""
    if reading is None:
        return {"tag": tag.name, "value": None, "text": None, "name": None, "unit": tag.unit,
                "quality": "not read", "reason": None, "ts_ns": None}  # fmt: skip
    return {
        "tag": tag.name,
        "value": reading.value,
        "text": reading.value,
        "name": None,
        "unit": tag.unit,
        "quality": reading.quality.name.lower(),
        "reason": reading.reason or None,
        "ts_ns": reading.ts_ns,
    }

"""KPI windows of any past hour, shift or day, from the stored readings (`lineside oee`, `report`).

The store keeps every reading the live engine saw, in the order it saw them (telemetry sequence
numbers follow submission order). Replaying the readings of a period, in that order, through a
fresh `KpiEngine` built from the same config therefore gives the windows the live engine
computed, whether or not the agent runs now and whether or not it stored KPI events then (it may
have been stopped before a shift closed, or run with another config).

A machine whose quality comes from an inspection (`[machines.kpi] inspection`) needs that
inspection's verdicts too: they are stored as events, and the replay merges them with the
readings by time in the same pass (`feed`), each verdict going in just before the first record
that begins after it, as it reached the live engine a little after the readings of its instant.

The replay starts `lead` before the first window asked for: the engine needs the machine's
state and the counters' last values from before the window (a counter's first reading only sets
its baseline), and report-by-exception stores an unchanged value once per heartbeat, which is
shorter than `max_gap`. Windows that end after `now_ns` are still open: the hour, shift or day in
progress comes from the engine's live snapshot.

The store is opened read-only: replaying never changes it and works while the agent writes.

`agent/kpi/resume.py` uses the same replay at the agent's start: it rebuilds the live engine's
open windows from the stored readings, so a restart mid-shift loses only the time the agent was
stopped.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.sections import Config
from agent.kpi.calendar import Window
from agent.kpi.engine import SCOPES, KpiEngine, Trace, record_key
from agent.kpi.period import Selection
from agent.model import OUTAGE, Event, EventKind
from agent.store import StoreReader

NS = 1_000_000_000
HOUR_NS = 3600 * NS
FETCH = 500  # progress is reported every FETCH records

Progress = Callable[[int, int], None]  # (records done, records in all)


@dataclass(frozen=True, slots=True)
class KpiWindow:
    """One machine's, line's, area's or the site's figures for one window, both definitions
    together."""

    scope: str  # "machine", "line", "area" or "site"
    machine: str | None  # None for a roll-up
    line: str | None  # "area/line"; None for an area or the site
    kind: str  # hour, shift or day
    name: str  # "2026-11-23/A", "2026-11-23T08", "2026-11-23"
    start_ns: int
    end_ns: int
    classic: dict[str, float | None]
    iso22400: dict[str, float | None]
    components: dict[str, Any]
    flags: list[str]
    losses: dict[str, float]
    pareto: list[tuple[str, float, float]]  # (reason, seconds, cumulative share)
    revision: int = 0
    complete: bool = True  # False: the window is still running, figures as of `as_of_ns`
    as_of_ns: int | None = None
    area: str | None = None  # None for the site
    site: str | None = None
    unit: str | None = None  # the unit of the counts; None: a roll-up of unlike units
    notes: tuple[str, ...] = ()
    # Per product (a machine with a `product` tag): {"product", "label", "classic",
    # "iso22400", "components", "unknown", "flags"} (docs/kpi.md, Per product).
    products: tuple[dict[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """What a row is called: the machine, line, area or site."""
        for who in (self.machine, self.line, self.area, self.site):
            if who is not None:
                return who
        return "?"


@dataclass(slots=True)
class ReplayResult:
    windows: list[KpiWindow]  # ordered by window start, then machines before lines
    records: int = 0  # telemetry records read
    readings: int = 0  # readings the engine took (its KPI tags)
    missing: list[str] = field(default_factory=list)  # machines with no figures in the period
    verdicts: int = 0  # stored inspection verdicts replayed (machines with inspection quality)


# ---------------------------------------------------------------------------------------------
# The replay


def lead_ns(config: Config) -> int:
    """How long before a window the replay starts: twice the longest `max_gap`, at least an
    hour, so the state and every counter have a reading before the window (see the docstring)."""
    gaps = [m.kpi.max_gap for m in config.machines if m.kpi is not None]
    return max(HOUR_NS, round(2 * max(gaps, default=0.0) * NS))


def open_store(config: Config, data_dir: Path | None) -> StoreReader:
    """The store (of `data_dir`, default the config's) open read-only."""
    return StoreReader.open(data_dir if data_dir is not None else config.agent.data_dir)


def _tag_ids(store: StoreReader, config: Config) -> dict[str, int]:
    """Store ids of the config's tags; a KPI tag the store never saw gets an unused id (it has
    no readings, so its machine's time is unknown, as the live engine would say)."""
    ids = store.tag_ids()
    spare = max(ids.values(), default=0) + 1
    for machine in config.machines:
        if machine.kpi is None:
            continue
        for _, name in machine.kpi.tag_roles():
            path = config.tag_path(machine.name, name)
            if path not in ids:
                ids[path] = spare
                spare += 1
    return ids


def _verdicts(
    store: StoreReader, inspections: Sequence[str], start_ns: int, end_ns: int
) -> Iterator[Event]:
    """The stored verdicts of `inspections` in [start, end), by time, as the events
    `KpiEngine.on_event` takes (only the fields it reads)."""
    for ts_ns, machine, inspection, verdict in store.verdicts(inspections, start_ns, end_ns):
        data = {"inspection": inspection, "verdict": verdict}
        yield Event(EventKind.INSPECTION, ts_ns, machine, data)


def _outages(store: StoreReader, start_ns: int, end_ns: int) -> Iterator[Event]:
    """The stored agent outages that began in [start, end), by time."""
    for ts_ns, data in store.connection_events("agent", OUTAGE, start_ns, end_ns):
        yield Event(EventKind.CONNECTION, ts_ns, None, data)


def _product_texts(
    store: StoreReader, tags: Collection[int], start_ns: int, end_ns: int
) -> Iterator[Event]:
    """The stored strings of text product tags (agent/texts.py) in [start, end), by time; the
    one in force at `start` first, stamped at `start`: a product string is stored when it
    changes, which may be long before the period."""
    if not tags:
        return
    before: dict[int, Event] = {}
    during: list[Event] = []
    for ts_ns, stored in store.event_texts(EventKind.TEXT, before_ns=end_ns):
        data = json.loads(stored)
        if data.get("tag_id") not in tags:
            continue
        if ts_ns < start_ns:
            before[int(data["tag_id"])] = Event(EventKind.TEXT, start_ns, None, data)
        else:
            during.append(Event(EventKind.TEXT, ts_ns, None, data))
    yield from before.values()
    yield from during


def replay(
    config: Config,
    selection: Selection,
    now_ns: int,
    *,
    data_dir: Path | None = None,
    progress: Progress | None = None,
    trace: Trace | None = None,
) -> ReplayResult:
    """The KPI windows of `selection` for every machine and line, from the stored readings;
    `trace` gets every stretch of each machine's time (the report's timeline).

    Raises StoreError when there is no store or it cannot be read, ValueError when the config
    has no `[machines.kpi]`.
    """
    kpi_machines = [m.name for m in config.machines if m.kpi is not None]
    if not kpi_machines:
        raise ValueError("no machine has a [machines.kpi] section: nothing to compute OEE from")
    lead = lead_ns(config)
    start = selection.start_ns - lead
    # Readings up to `lead` after the last window close it as the live engine closed it (at the
    # first reading past its end), and include readings the agent stored late.
    end = min(selection.end_ns + lead, now_ns + 1)
    with open_store(config, data_dir) as store:
        engine = KpiEngine(config, _tag_ids(store, config))
        engine.trace = trace
        events, done, verdicts = feed(engine, store, start, end, progress)
    # Close what ended: every machine's time moves to the last window's end (tick moves each
    # machine to `now - max_gap`), never past now.
    longest = lead // 2
    events += engine.tick(min(selection.end_ns + longest, now_ns))
    found = _closed(events)
    wanted = {(w.kind, w.name) for w in selection.windows}
    out = [w for w in found if (w.kind, w.name) in wanted]
    for w in selection.windows:
        if w.end_ns > now_ns and w.start_ns <= now_ns:
            out += _live(engine.snapshot(now_ns, kind=w.kind), w)
    out.sort(key=lambda k: (k.start_ns, SCOPES.index(k.scope), k.label))
    seen = {w.machine for w in out if w.machine is not None}
    silent = set(engine.silent())
    return ReplayResult(
        windows=out,
        records=done,
        readings=engine.statistics()["readings"],
        missing=[m for m in kpi_machines if m not in seen or m in silent],
        verdicts=verdicts,
    )


def feed(
    engine: KpiEngine,
    store: StoreReader,
    start_ns: int,
    end_ns: int,
    progress: Progress | None,
) -> tuple[list[Event], int, int]:
    """Every stored reading of [start, end) through `engine`, in storage order, and the stored
    verdicts of its inspections merged in by time: its events, how many records were read and
    how many verdicts.

    One pass over both, each in its own order: a verdict goes in before the first record that
    begins after it (readings of the same instant first). Records from several sources are not
    strictly in time order, so a verdict may still find the machine's time past it; the engine
    takes such a verdict as it took it live (straight into its window while that is open, else
    as late data), so the counts do not depend on where exactly it is merged."""
    events: list[Event] = []
    total, records = store.telemetry_from(start_ns, end_ns)
    # Verdicts and stored agent outages, merged by time: both are facts at an instant.
    facts = heapq.merge(
        _verdicts(store, engine.inspections, start_ns, end_ns),
        _outages(store, start_ns, end_ns),
        _product_texts(store, engine.product_tags, start_ns, end_ns),
        key=lambda e: e.ts_ns,
    )
    due = next(facts, None)
    done = taken = 0

    def verdicts_before(t_ns: float) -> None:
        nonlocal due, taken
        while due is not None and due.ts_ns < t_ns:
            if due.kind is EventKind.CONNECTION:
                events.extend(engine.outage(due.ts_ns))
            else:
                events.extend(engine.on_event(due))
                taken += due.kind is EventKind.INSPECTION
            due = next(facts, None)

    for first_ns, batch in records:
        verdicts_before(first_ns)
        events += engine.on_batch(batch)
        done += 1
        if progress is not None and (done % FETCH == 0 or done == total):
            progress(done, total)
    verdicts_before(math.inf)  # verdicts after the last record
    if progress is not None and total == 0:
        progress(0, 0)
    return events, done, taken


def _closed(events: Sequence[Event]) -> list[KpiWindow]:
    """The latest revision of every window the engine closed (the two definitions joined)."""
    latest: dict[tuple[str, str, str, str], dict[str, dict[str, Any]]] = {}
    for e in events:
        if e.kind is not EventKind.KPI:
            continue
        d = e.data
        key = record_key(d)
        pair = latest.setdefault(key, {})
        held = pair.get(d["definition"])
        if held is None or d["revision"] >= held["revision"]:
            pair[d["definition"]] = d
    out = []
    for pair in latest.values():
        c, iso = pair.get("classic"), pair.get("iso22400")
        if c is None or iso is None:
            continue
        # An event holds one definition's KPIs as `kpis`; the window holds both.
        figures = {**c, "classic": c["kpis"], "iso22400": iso["kpis"]}
        figures["products"] = _both(c.get("products", []), iso.get("products", []))
        out.append(_window(c, c["window"], figures, revision=c["revision"]))
    return out


def _both(classic: list[dict[str, Any]], iso: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-product figures of the two definitions' events joined (each holds its own
    definition's KPIs as `kpis`)."""
    other = {p["product"]: p["kpis"] for p in iso}
    out = []
    for p in classic:
        row = {k: v for k, v in p.items() if k != "kpis"}
        out.append({**row, "classic": p["kpis"], "iso22400": other.get(p["product"], {})})
    return out


def _live(snapshot: dict[str, Any], wanted: Window) -> list[KpiWindow]:
    """The window in progress from the engine's snapshot, if it is the one asked for."""
    w = snapshot["window"]
    if (w["kind"], w["name"]) != (wanted.kind, wanted.name):
        return []
    out = []
    rows = [f for key in ("machines", "lines", "areas", "sites") for f in snapshot[key].values()]
    as_of = max((f.get("as_of_ns", 0) for f in snapshot["machines"].values()), default=None)
    for f in rows:
        out.append(_window(f, w, f, complete=False, as_of_ns=f.get("as_of_ns", as_of)))
    return out


def _window(
    place: dict[str, Any],
    window: dict[str, Any],
    figures: dict[str, Any],
    **state: Any,
) -> KpiWindow:
    """A KpiWindow from a record's place (`scope`, `machine`, `line`, `area`, `site`), its
    window's JSON and its figures (`classic` and `iso22400` KPIs, `components`, `flags`,
    `losses`, `pareto`, `products`), as KPI events and the snapshot hold them."""
    return KpiWindow(
        scope=place["scope"],
        machine=place["machine"],
        line=place["line"],
        area=place.get("area"),
        site=place.get("site"),
        unit=figures.get("unit"),
        notes=tuple(figures.get("notes", ())),
        products=tuple(figures.get("products", ())),
        kind=window["kind"],
        name=window["name"],
        start_ns=window["start_ns"],
        end_ns=window["end_ns"],
        classic=figures["classic"],
        iso22400=figures["iso22400"],
        components=figures["components"],
        flags=list(figures["flags"]),
        losses=figures["losses"],
        pareto=[(str(r), float(s), float(f)) for r, s, f in figures["pareto"]],
        **state,
    )

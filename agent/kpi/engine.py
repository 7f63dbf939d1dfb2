"""The incremental KPI engine: readings in, closed KPI windows out (as `Event`s).

Per machine the engine keeps a *cursor*: the time accounted so far, the current state category,
the last value of every counter and the components of the open windows (hour, shift, day). A
reading first moves the cursor to its timestamp, adding the elapsed time to every open window
(split exactly at window and planned-time boundaries), then updates the state or adds the
counter's delta to the windows holding its timestamp. A window closes when the cursor passes
its end; it is then emitted once per definition ("classic", "iso22400") for the machine and,
once every machine of the line has closed it, for the line (components summed, never averaged).

Time rules (docs/kpi.md): a good state reading vouches for its state for `max_gap`; after that,
and after a bad-quality state reading until the next good one, time is "unknown" (reported,
excluded from availability, never guessed). Time before a machine's first reading in the windows
holding it is unknown too; windows that ended before it are not emitted. A machine that never
reports starts, on `tick`, where the first machine of its line did, so the line's windows still
close (with its time unknown). After a restart `outage` marks where the agent stopped seeing:
the state does not carry on past it (agent/kpi/resume.py).

Stop time (down, idle, setup) is also kept per reason, keyed `category: reason`, for the Pareto.

Counts (docs/kpi.md, "Production in unknown time"). A counter's delta covers the time since
that counter's last reading; it is shared out over that time by what the cursor folded there:
known running in planned time counts, unknown time and running outside planned time (overtime)
are kept apart. The cursor keeps running totals of those three (`run_acc`, `over_acc`,
`unknown_acc`) and each counter remembers them at its last reading (`marks`), so the share is
two subtractions. A step above the plausibility bound (ideal rate x elapsed time, with margin)
is a reset rather than a rollover, or is capped (agent/kpi/counters.py).

Late data. Readings older than the cursor (replayed after an outage, or a second source of the
machine lagging) are inserted into a per-machine log of the KPI tags' readings; at the next
`flush` (every `tick`) the cursor is restored from the last checkpoint (taken at every window
boundary) before the earliest of them, and the log is folded again up to where the cursor was:
one recompute however many late batches came. Windows that close again with other components
are emitted again with `revision + 1`. We keep this log in memory, for the last `retain`
(26 h: a day window plus slack), rather than read the store back: the engine stays pure and
synchronous, a recompute costs no I/O on the event loop, and the log holds only the few KPI
tags of each machine, after report-by-exception, in compact arrays (18 bytes a reading).
Readings older than that are dropped and counted (`statistics()["late_dropped"]`).

Inspection verdicts (`on_event`). A machine whose `[machines.kpi]` names an `inspection` takes
its quality from that inspection's verdicts: OK counts as good, NotOK as reject, at the
verdict's timestamp; total is OK + NotOK (the parts whose quality is known); NotDecidable is
counted apart (`not_decidable`), never guessed. Its counters still give the ideal time
(performance) and what was made (`produced`). A verdict only adds counts, so one that arrives a
little behind the readings (they are polled while the model runs) goes straight into the windows
holding it while they are open; only a verdict for a window already closed takes the late-data
path above (it is in the log like a reading, so a recompute counts it again).
"""

from __future__ import annotations

import copy
import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from agent.config.calendar import Calendar
from agent.config.sections import Config, Machine
from agent.kpi.calendar import Window, WindowKind, planned_intervals, window_at, windows
from agent.kpi.config import MachineKpi, product_code, product_key
from agent.kpi.counters import counter_step, plausible_limit
from agent.kpi.formulas import (
    COUNT_FIELDS,
    Components,
    classic,
    flags,
    iso22400,
    line_rollup,
    unknown_share,
)
from agent.kpi.losses import pareto, six_big_losses
from agent.kpi.states import Category, map_code, packml_category
from agent.model import Event, EventKind, InspectionVerdict, Quality, ReadingBatch, Verdict
from agent.texts import TextReading

NS = 1_000_000_000
RETAIN_NS = 26 * 3600 * NS
DEFINITIONS = ("classic", "iso22400")
NO_REASON = "no reason"

# Roles of the KPI tags, as stored in the log (one byte each).
STATE, UNIT_MODE, REASON, TOTAL, GOOD, REJECT, REWORK, PRODUCT, ENERGY, VERDICT = range(10)
OUTAGE = 10  # the agent was stopped here: the state before it vouches no further (`outage`)
HEARTBEAT = 11  # a tag that only proves the values move (`[machines.kpi] heartbeat`)
FROZEN = 12  # the values stopped moving here: unknown time until one changes (docs/kpi.md)
MOVED = 13  # one of the machine's other values (not a KPI tag) changed here
# Verdicts in the log, by the codes a verdict write-back puts in a register (`Verdict.code`).
OK, NOT_OK = float(Verdict.OK.code), float(Verdict.NOT_OK.code)
_ROLE_OF_KEY = {
    "state": STATE,
    "unit_mode": UNIT_MODE,
    "reason": REASON,
    "total": TOTAL,
    "good": GOOD,
    "reject": REJECT,
    "rework": REWORK,
    "product": PRODUCT,
    "energy": ENERGY,
    "heartbeat": HEARTBEAT,
}
_COUNTER_FIELD = {TOTAL: "total", GOOD: "good", REJECT: "reject", REWORK: "rework"}
# Counter widths by declared type (signed registers wrap too: counter_step works modulo 2^bits).
_BITS: dict[str, int | None] = {
    "uint16": 16,
    "int16": 16,
    "uint32": 32,
    "int32": 32,
    "uint64": 64,
    "int64": 64,
}

WindowKey = tuple[str, str]  # (kind, name)
Scope = Literal["machine", "line", "area", "site"]
SCOPES: tuple[Scope, ...] = ("machine", "line", "area", "site")
Group = tuple[Scope, str]  # a roll-up of machines: ("line", "area/line"), ("area", a), ("site", s)
# A KPI record's identity: (scope, who: the machine, "area/line", area or site, kind, name).
RecordKey = tuple[str, str, str, str]


def _key(w: Window) -> WindowKey:
    return (w.kind, w.name)


def product_of(value: float) -> int:
    """The product a product tag's reading names: a numeric tag's code, or the code a text
    tag's string was given (`agent.kpi.config.product_code`), labelled by `product_label`."""
    return int(value)


def products_key(code: int | None) -> str:
    """A window's per-product key (JSON `product`): the code as text, "" for no product."""
    return "" if code is None else str(code)


@dataclass(frozen=True, slots=True)
class _Span:
    """One hour of the calendar, ready for the fold: windows overlapping it, planned pieces and
    every instant inside it where something changes (a window or planned-time boundary)."""

    start: int
    end: int
    windows: tuple[Window, ...]
    planned: tuple[tuple[int, int], ...]
    cuts: tuple[int, ...]  # sorted, in (start, end]

    def next_cut(self, t: int) -> int:
        return self.cuts[bisect_right(self.cuts, t)] if t < self.end else self.end

    def is_planned(self, t: int) -> bool:
        return any(a <= t < b for a, b in self.planned)

    def windows_at(self, t: int) -> list[Window]:
        return [w for w in self.windows if w.start_ns <= t < w.end_ns]


class _Spans:
    """Calendar look-ups, cached by hour: the calendar maths converts time zones, too slow to
    run for every reading."""

    def __init__(self, calendar: Calendar | None) -> None:
        self.calendar = calendar
        self._cache: dict[int, _Span] = {}
        self._last: _Span | None = None

    def at(self, t: int) -> _Span:
        last = self._last
        if last is not None and last.start <= t < last.end:
            return last
        hour = window_at(self.calendar, "hour", t)
        assert hour is not None  # there is always an hour
        span = self._cache.get(hour.start_ns)
        if span is None:
            ws = tuple(windows(self.calendar, hour.start_ns, hour.end_ns))
            planned = tuple(planned_intervals(self.calendar, hour.start_ns, hour.end_ns))
            edges = {w.start_ns for w in ws} | {w.end_ns for w in ws}
            edges |= {x for p in planned for x in p}
            cuts = tuple(sorted(x for x in edges if hour.start_ns < x <= hour.end_ns))
            span = _Span(hour.start_ns, hour.end_ns, ws, planned, cuts)
            if len(self._cache) > 64:  # recomputes revisit a day at most
                self._cache.clear()
            self._cache[hour.start_ns] = span
        self._last = span
        return span


@dataclass(slots=True)
class InspectedComponents(Components):
    """The components of a machine whose quality comes from inspection verdicts, with what is
    reported beside them (sums too; a line roll-up keeps only the `Components` part)."""

    produced: float = 0.0  # the counter's count of parts made (total is the inspected parts)
    not_decidable: float = 0.0  # verdicts that were neither OK nor NotOK


@dataclass(slots=True)
class _Cursor:
    """The fold state of one machine; copied whole for checkpoints (it is small)."""

    t: int
    state: float | None = None
    unit_mode: float | None = None
    state_bad: bool = True  # no trustworthy state yet
    valid_until: int = 0
    reason: str = NO_REASON
    last_known: Category | None = None  # for failures: transitions into "down"
    product: int | None = None
    counters: dict[int, float] = field(default_factory=dict)  # role -> last raw value
    # Seconds ever folded, by what a counter's delta may be credited to: known running in
    # planned time, known running outside it (overtime), unknown. A counter remembers them
    # (`marks`) at each reading, so its next delta is shared out over the time in between.
    run_acc: float = 0.0
    over_acc: float = 0.0
    unknown_acc: float = 0.0
    marks: dict[int, tuple[int, float, float, float]] = field(default_factory=dict)
    open: dict[WindowKey, tuple[Window, Components]] = field(default_factory=dict)
    # Frozen values: the last value of every KPI tag, when one last changed, and whether the
    # values are frozen since (docs/kpi.md, "Frozen values").
    seen: dict[int, float] = field(default_factory=dict)
    changed_at: int = 0
    answered_at: int = 0  # the last reading that repeated a value
    frozen: bool = False


@dataclass(slots=True)
class _Closed:
    window: Window
    components: Components
    revision: int


class _Log:
    """The KPI readings of one machine, in time order, in compact arrays."""

    def __init__(self) -> None:
        self.ts = array("q")
        self.role = array("B")
        self.value = array("d")
        self.quality = array("B")

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, ts: int, role: int, value: float, quality: int, *, unique: bool = True) -> bool:
        """Insert in time order (after equal times); False for an exact duplicate (a replay).

        `unique=False` (verdicts): two equal entries are two parts, not a replayed reading.
        """
        # Appending is the common case; bisect only for late readings.
        i = len(self.ts) if not self.ts or ts >= self.ts[-1] else bisect_right(self.ts, ts)
        j = i - 1 if unique else -1
        while j >= 0 and self.ts[j] == ts:
            same_value = self.value[j] == value or (math.isnan(value) and math.isnan(self.value[j]))
            if self.role[j] == role and same_value and self.quality[j] == quality:
                return False
            j -= 1
        self.ts.insert(i, ts)
        self.role.insert(i, role)
        self.value.insert(i, value)
        self.quality.insert(i, quality)
        return True

    def drop_before(self, t: int) -> None:
        i = bisect_left(self.ts, t)
        if i:
            del self.ts[:i], self.role[:i], self.value[:i], self.quality[:i]


@dataclass(frozen=True, slots=True)
class _TagRole:
    machine: int  # index into KpiEngine._machines
    role: int
    bits: int | None
    scale: float  # counters wrap in raw register units, before scaling


class _MachineState:
    def __init__(self, machine: Machine, kpi: MachineKpi, line: str, site: str, unit: str) -> None:
        self.name = machine.name
        self.kpi = kpi
        self.line = line
        self.area = machine.area
        self.site = site
        self.unit = unit  # the unit its output counter declares ("" when none)
        # The roll-ups it belongs to, each closed once all their machines closed a window.
        self.groups: tuple[Group, ...] = (("line", line), ("area", machine.area), ("site", site))
        self.max_gap_ns = round(kpi.max_gap * NS)
        self.code_table: dict[int, Category] = dict(kpi.code_table())
        self.cursor: _Cursor | None = None
        self.began: int | None = None  # the first reading's time (a silent machine: its line's)
        self.readings = 0  # readings taken; 0: the machine never reported
        self.log = _Log()
        self.checkpoints: list[tuple[int, _Cursor]] = []
        self.closed: dict[WindowKey, _Closed] = {}
        self.bits: dict[int, int | None] = {}
        self.scale: dict[int, float] = {}
        # The fastest the machine can count (units a second, any product): the plausibility bound.
        fastest = min(kpi.cycle_time_s(product_key(p)) for p in ("0", *kpi.products))
        self.max_rate = 1.0 / fastest
        self.late_since: int | None = None  # earliest late reading waiting for `flush`
        # Frozen values: how long no value may move; all states are watched with a heartbeat
        # tag, else only running (a running machine counts).
        self.frozen_ns = round(kpi.frozen_after_s() * NS)
        self.watch_all = kpi.heartbeat is not None
        self.freezes: list[int] = []  # found during a recompute: logged after it
        self.inspected = kpi.inspection is not None  # quality from verdicts, not counters


Emit = Callable[[_MachineState, Window, Components], None]


class Trace(Protocol):
    """What a replay may watch as the engine folds (agent/kpi/timeline.py, the report's
    timeline and its figures per product)."""

    def segment(
        self, machine: str, start_ns: int, end_ns: int, category: str, reason: str,
        product: int | None, planned: bool,
    ) -> None:  # fmt: skip
        """A stretch of the machine's time in one category, as counted."""

    def count(
        self, machine: str, t_ns: int, counter: str, amount: float, ideal_s: float,
        product: int | None,
    ) -> None:  # fmt: skip
        """A counter's delta credited to known run time (`total`, `good`, `reject`, `rework`)
        and its ideal time (0 for a counter that does not say what was made)."""

    def redo(self, machine: str, from_ns: int) -> None:
        """A recompute (late data) folds the machine's time from `from_ns` again: what was
        traced from there on is replaced by what follows."""


class KpiEngine:
    """OEE and ISO 22400 KPIs per machine and line, window by window, from reading batches.

    `tag_ids` maps tag paths (`site/area/line/machine/tag`) to the ids the batches carry (the
    store's ids in the agent). Pure and synchronous: the runtime feeds it and stores its events.
    """

    def __init__(self, config: Config, tag_ids: Mapping[str, int]) -> None:
        self.calendar = config.calendar
        self._spans = _Spans(config.calendar)
        self._machines: list[_MachineState] = []
        self._groups: dict[Group, list[str]] = {}  # roll-up -> its machines, in config order
        roles: dict[int, _TagRole] = {}
        others: dict[int, int] = {}  # tag id -> machine index: the machines' other tags
        self._by_inspection: dict[str, int] = {}  # inspection name -> machine index
        inspections = {i.name: i.machine for i in config.inspections}
        for machine in config.machines:
            if machine.kpi is None:
                continue
            line = f"{machine.area}/{machine.line}"
            declared = {t.name: t for t in config.tags_of(machine.name)}
            output = machine.kpi.total or machine.kpi.good
            unit = declared[output].unit if output in declared else ""
            m = _MachineState(machine, machine.kpi, line, config.plant.site, unit)
            index = len(self._machines)
            self._machines.append(m)
            for group in m.groups:
                self._groups.setdefault(group, []).append(machine.name)
            if machine.kpi.inspection is not None:
                name = machine.kpi.inspection
                if inspections.get(name) != machine.name:
                    raise ValueError(
                        f"machine {machine.name!r}: kpi.inspection {name!r} is no [[inspections]]"
                        " entry of this machine"
                    )
                self._by_inspection[name] = index
            for key, name in machine.kpi.tag_roles():
                tag = declared.get(name)
                if tag is None:
                    raise ValueError(f"machine {machine.name!r}: no tag {name!r} for kpi.{key}")
                path = config.tag_path(machine.name, name)
                if path not in tag_ids:
                    raise ValueError(f"no tag id for {path}")
                role = _ROLE_OF_KEY[key]
                bits = _BITS.get(tag.type or "float64")
                scale = tag.scale or 1.0
                roles[tag_ids[path]] = _TagRole(index, role, bits, scale)
                m.bits[role] = bits
                m.scale[role] = scale
            # Every other tag of the machine only says whether its values still move (frozen
            # values): taken a batch at a time, with numpy, not reading by reading.
            kpi_tags = {name for _, name in machine.kpi.tag_roles()}
            for tag in declared.values():
                path = config.tag_path(machine.name, tag.name)
                if tag.name not in kpi_tags and path in tag_ids:
                    others[tag_ids[path]] = index
        size = max([*roles, *others], default=-1) + 1
        # tag id -> index into self._roles, or -2 - machine index for a machine's other tags
        # (-1: neither), so a batch is sorted out at once.
        self._lookup = np.full(size, -1, dtype=np.int64)
        self._roles = list(roles.values())
        for i, tag_id in enumerate(roles):
            self._lookup[tag_id] = i
        # Product tags: a text one's strings come as `text` events (`on_event`).
        self.product_tags = frozenset(i for i, r in roles.items() if r.role == PRODUCT)
        self._products_before: dict[str, int] = {}  # machine -> a text product before its start
        for tag_id, index in others.items():
            self._lookup[tag_id] = -2 - index
        self._other_last = np.full(size, np.nan)  # the last value of every other tag
        # Roll-up windows (line, area, site): what each machine closed, and the revision the
        # roll-up last emitted.
        self._group_parts: dict[tuple[Group, WindowKey], dict[str, Components]] = {}
        self._group_revision: dict[tuple[Group, WindowKey], int] = {}
        # The count unit of each roll-up: the one unit all its machines declare, else None.
        self._group_unit: dict[Group, str | None] = {}
        for group, names in self._groups.items():
            units = {m.unit for m in self._machines if m.name in names}
            self._group_unit[group] = units.pop() if len(units) == 1 and "" not in units else None
        self._pending: list[Event] = []
        self._recomputing = False
        # Called with every stretch of a machine's time as it is folded (the shift report's
        # timeline, agent/kpi/timeline.py); a recompute calls it again for the time it redoes.
        self.trace: Trace | None = None
        self.stats = {"readings": 0, "late": 0, "late_dropped": 0, "duplicates": 0,
                      "recomputes": 0, "resets": 0, "rollovers": 0, "verdicts": 0,
                      "implausible": 0, "frozen": 0}  # fmt: skip

    # -- public API ---------------------------------------------------------------------------

    def on_batch(self, batch: ReadingBatch) -> list[Event]:
        """Fold one batch in; the events of the windows it closed or revised."""
        ids = batch.tag_ids.astype(np.int64)
        inside = (ids >= 0) & (ids < self._lookup.shape[0])
        picked = np.full(ids.shape[0], -1, dtype=np.int64)
        picked[inside] = self._lookup[ids[inside]]
        rows = np.flatnonzero(picked >= 0)
        stamps = batch.timestamps()
        moved = self._moved_machines(batch, ids, picked, stamps)
        if rows.size == 0:
            self._mark_moved(moved)
            return self._take()
        ts = stamps[rows]
        order = np.argsort(ts, kind="stable")
        for r, t in zip(rows[order].tolist(), ts[order].tolist(), strict=True):
            role = self._roles[int(picked[r])]
            value, quality = float(batch.values[r]), int(batch.quality[r])
            m = self._machines[role.machine]
            self.stats["readings"] += 1
            m.readings += 1
            if m.cursor is None:
                self._start(m, t)
            assert m.cursor is not None
            if t >= m.cursor.t:
                m.log.add(t, role.role, value, quality)
                self._fold_to(m, m.cursor, t, self._close)
                self._apply(m, m.cursor, t, role.role, value, quality)
                continue
            self.stats["late"] += 1
            if not m.checkpoints or t < m.checkpoints[0][0]:
                self.stats["late_dropped"] += 1
                continue
            if not m.log.add(t, role.role, value, quality):
                self.stats["duplicates"] += 1
                continue
            # Recomputed at the next flush (tick), not now: a backlog of late batches revises
            # each window once, not once per batch.
            m.late_since = t if m.late_since is None else min(t, m.late_since)
        self._mark_moved(moved)
        return self._take()

    def _moved_machines(
        self,
        batch: ReadingBatch,
        ids: np.ndarray[Any, Any],
        picked: np.ndarray[Any, Any],
        stamps: np.ndarray[Any, Any],
    ) -> dict[int, int]:
        """Machine index -> the latest time in the batch at which one of its other (not KPI)
        tags changed value: those values only prove the source is not frozen."""
        rows = np.flatnonzero((picked <= -2) & (batch.quality != Quality.BAD))
        if rows.size == 0:
            return {}
        tags, values = ids[rows], batch.values[rows]
        changed = values != self._other_last[tags]  # a good NaN counts as a move: rare
        self._other_last[tags] = values
        if not changed.any():
            return {}
        rows = rows[changed]
        owners, ts = (-2 - picked[rows]).tolist(), stamps[rows].tolist()
        out: dict[int, int] = {}
        for index, t in zip(owners, ts, strict=True):
            out[index] = max(t, out.get(index, t))
        return out

    def _mark_moved(self, moved: Mapping[int, int]) -> None:
        """A machine's other values moved at `t`: its values are not frozen (at most one log
        entry a second, so the log stays small and a recompute says the same)."""
        for index, t in moved.items():
            m = self._machines[index]
            cur = m.cursor
            if cur is None or t < cur.t or t - cur.changed_at < NS:
                continue  # not started, late (an older value says nothing new) or just moved
            m.log.add(t, MOVED, 0.0, Quality.GOOD)
            self._fold_to(m, cur, t, self._close)
            cur.changed_at, cur.frozen = t, False

    def flush(self) -> list[Event]:
        """Fold in the late readings taken since the last flush: one recompute per machine, so
        at most one revision per window per flush (the runtime flushes on every `tick`)."""
        for m in self._machines:
            if m.late_since is not None:
                t, m.late_since = m.late_since, None
                self._recompute(m, t)
        return self._take()

    def on_event(self, event: Event) -> list[Event]:
        """Fold one inspection verdict into the quality of the machine whose kpi names its
        inspection; any other event is ignored. The events of the windows it closed or revised.
        """
        if event.kind is EventKind.TEXT:
            return self._product_text(event)
        fact = InspectionVerdict.of(event)  # None: no verdict, or an audit of one
        if fact is None:
            return []
        index = self._by_inspection.get(fact.inspection)
        if index is None:
            return []
        code = float(fact.verdict.code)
        m = self._machines[index]
        if event.machine is not None and event.machine != m.name:
            return []
        t = event.ts_ns
        self.stats["verdicts"] += 1
        if m.cursor is None:
            self._start(m, t)
        assert m.cursor is not None
        if t >= m.cursor.t or self._holding_open(m.cursor, t):
            m.log.add(t, VERDICT, code, Quality.GOOD, unique=False)
            self._verdict(m, m.cursor, t, code)
            return self._take()
        self.stats["late"] += 1
        if not m.checkpoints or t < m.checkpoints[0][0]:
            self.stats["late_dropped"] += 1
            return self._take()
        m.log.add(t, VERDICT, code, Quality.GOOD, unique=False)
        m.late_since = t if m.late_since is None else min(t, m.late_since)
        return self._take()

    @property
    def inspections(self) -> tuple[str, ...]:
        """The inspections whose verdicts are a machine's quality (`on_event` takes theirs)."""
        return tuple(self._by_inspection)

    def tick(self, now_ns: int) -> list[Event]:
        """Close the windows of machines that stopped reporting: their time moves on to
        `now_ns - max_gap` (a reading may still arrive up to max_gap late without being late).
        Late readings taken since the last tick are folded in first (`flush`)."""
        flushed = self.flush()  # the windows it revised are events too
        for m in self._machines:
            if m.cursor is None:
                self._start_silent(m)
            cursor = m.cursor
            if cursor is not None and now_ns - m.max_gap_ns > cursor.t:
                self._fold_to(m, cursor, now_ns - m.max_gap_ns, self._close)
        return flushed + self._take()

    def snapshot(self, now_ns: int, kind: WindowKind | None = None) -> dict[str, Any]:
        """Live figures of the window of `kind` in progress at `now_ns` per machine and line,
        as plain data: `lineside oee`, the report's trend, the status page. Without `kind`: the
        shift, or the day outside shifts. ValueError for "shift" when no shift runs then."""
        if kind is None:
            kind = "shift" if window_at(self.calendar, "shift", now_ns) is not None else "day"
        window = window_at(self.calendar, kind, now_ns)
        if window is None:
            raise ValueError(f"no {kind} window in progress at {now_ns}")
        key = _key(window)
        machines: dict[str, Any] = {}
        parts: dict[Group, list[Components]] = {}
        places: dict[Group, _Place] = {}
        for m in self._machines:
            if m.cursor is None:
                continue
            live = copy.deepcopy(m.cursor)
            if now_ns > live.t:
                self._fold_to(m, live, now_ns, None)
            opened = live.open.get(key)
            if opened is None:
                closed = m.closed.get(key)
                c = closed.components if closed is not None else Components()
            else:
                c = opened[1]
            done = self._finished(m.kpi, c)
            place = _Place("machine", m.name, m.line, m.area, m.site, m.unit, labels=m.kpi)
            machines[m.name] = {**place.data(), "as_of_ns": max(now_ns, live.t),
                                **_figures(done, place)}  # fmt: skip
            for group in m.groups:
                parts.setdefault(group, []).append(done)
                places[group] = self._place(group, m)
        rollups: dict[Scope, dict[str, Any]] = {"line": {}, "area": {}, "site": {}}
        for (scope, who), cs in parts.items():
            place = places[(scope, who)]
            rollups[scope][who] = {**place.data(), **_figures(line_rollup(cs), place)}
        return {"window": _window_data(window), "machines": machines, "lines": rollups["line"],
                "areas": rollups["area"], "sites": rollups["site"]}  # fmt: skip

    def statistics(self) -> dict[str, int]:
        return dict(self.stats)

    def silent(self) -> list[str]:
        """The machines no reading has come from (their windows, if any, are all unknown)."""
        return [m.name for m in self._machines if m.readings == 0]

    def adopt_revisions(self, held: Mapping[RecordKey, int]) -> None:
        """Number revisions on from the ones already stored, keyed by `record_key`: after a
        restart the store holds the windows the last run emitted, and a revision must never go
        back to a number a consumer has seen."""
        for m in self._machines:
            for key, closed in m.closed.items():
                stored = held.get(("machine", m.name, *key))
                if stored is not None and stored > closed.revision:
                    closed.revision = stored
        for ((scope, who), key), revision in self._group_revision.items():
            stored = held.get((scope, who, *key))
            if stored is not None and stored > revision:
                self._group_revision[((scope, who), key)] = stored

    def outage(self, since_ns: int) -> list[Event]:
        """The agent saw nothing after `since_ns` (it was stopped): no state vouches for time
        past it, so the time until the next reading is unknown instead of the last state held
        on for up to `max_gap`. Kept in the log, so a recompute across it says the same."""
        flushed = self.flush()
        for m in self._machines:
            if m.cursor is None:
                continue
            t = max(since_ns, m.cursor.t)
            self._fold_to(m, m.cursor, t, self._close)
            m.log.add(t, OUTAGE, 0.0, Quality.GOOD)
            m.cursor.valid_until = min(m.cursor.valid_until, t)
        return flushed + self._take()

    # -- the fold -----------------------------------------------------------------------------

    def _start(self, m: _MachineState, t: int) -> None:
        """The first reading: the windows holding it count the time before it as unknown.

        Windows that ended before it are not emitted: the agent was not there to see them.
        """
        starts = [w.start_ns for w in self._spans.at(t).windows_at(t)]
        m.cursor = _Cursor(
            t=min(starts, default=t),
            product=self._products_before.pop(m.name, None),
            changed_at=t,
        )
        m.began = t
        self._fold_to(m, m.cursor, t, None)
        m.checkpoints.append((t, copy.deepcopy(m.cursor)))

    def _start_silent(self, m: _MachineState) -> None:
        """A machine that never reported, in a line whose other machines did: it starts where
        the first of them did, its time unknown, so the line's windows can close once they are
        over by more than max_gap (tick folds it on like any quiet machine)."""
        began = [o.began for o in self._machines if o.line == m.line and o.began is not None]
        if began:  # else the whole line is silent: there is nothing to say about it
            self._start(m, min(began))  # windows the others did not emit, it does not either

    def _holding_open(self, cur: _Cursor, t: int) -> bool:
        """Every window holding `t` is open in the cursor: counts at `t` can go straight in."""
        return all(_key(w) in cur.open for w in self._spans.at(t).windows_at(t))

    def _verdict(self, m: _MachineState, cur: _Cursor, t: int, code: float) -> None:
        """Count one verdict without moving the cursor where its windows are open: a verdict
        ahead of the readings must not make the next reading late (and recompute)."""
        if not self._holding_open(cur, t):
            self._fold_to(m, cur, t, self._close)
        for c in self._open_at(m, cur, t):
            assert isinstance(c, InspectedComponents)
            if code == OK:
                c.good += 1
                c.total += 1
            elif code == NOT_OK:
                c.reject += 1
                c.total += 1
            else:
                c.not_decidable += 1

    def _product_text(self, event: Event) -> list[Event]:
        """A text product tag's string (agent/texts.py), folded in as the reading of its code
        (`product_code`): the product in force from then on."""
        reading = TextReading.of(event)
        if reading is None or reading.tag_id not in self.product_tags:
            return []
        m = self._machines[self._roles[int(self._lookup[reading.tag_id])].machine]
        if m.cursor is None:  # before its first reading: in force from it, not a start
            if reading.value is not None:
                self._products_before[m.name] = product_code(reading.value)
            return []
        value = math.nan if reading.value is None else float(product_code(reading.value))
        quality = Quality.BAD if reading.value is None else reading.quality
        ids, at = [reading.tag_id], reading.ts_ns
        return self.on_batch(ReadingBatch.from_columns("text", ids, [value], quality, at))

    def _category(self, m: _MachineState, cur: _Cursor) -> Category:
        if cur.state_bad or cur.state is None:
            return "unknown"
        if m.kpi.packml:
            if not math.isfinite(cur.state):
                return "unknown"
            mode = cur.unit_mode
            return packml_category(
                int(cur.state), int(mode) if mode is not None and math.isfinite(mode) else None
            )
        return map_code(cur.state, m.code_table)

    def _open_at(self, m: _MachineState, cur: _Cursor, t: int) -> list[Components]:
        """The components of every window holding `t`, opening those not yet open; with a
        product tag, also each window's components of the product in force (so everything
        counted goes to the window and to its product, docs/kpi.md "Per product")."""
        out = []
        for w in self._spans.at(t).windows_at(t):
            entry = cur.open.get(_key(w))
            if entry is None:
                entry = (w, self._fresh(m))
                cur.open[_key(w)] = entry
            out.append(entry[1])
        if m.kpi.product is not None:
            key = products_key(cur.product)
            for c in out[:]:
                part = c.products.get(key)
                if part is None:
                    part = c.products[key] = self._fresh(m)
                out.append(part)
        return out

    def _fresh(self, m: _MachineState) -> Components:
        kind = InspectedComponents if m.inspected else Components
        return kind(has_energy=m.kpi.energy is not None)

    def _fold_to(self, m: _MachineState, cur: _Cursor, t: int, close: Emit | None) -> None:
        """Account the time from `cur.t` to `t` in the current category; close passed windows
        (`close` None: a throw-away copy for a live view, nothing is emitted or kept)."""
        if (
            cur.answered_at - cur.changed_at > m.frozen_ns
            and not cur.frozen
            and t > cur.t
            and close is not None
            and (m.watch_all or self._category(m, cur) == "running")
        ):
            # Every reading up to `cur.t` is in: the source answered the same values for
            # longer than frozen_after while the machine should move them (running, or any
            # state with a heartbeat tag).
            self._freeze(m, cur)
        while cur.t < t:
            span = self._spans.at(cur.t)
            end = min(t, span.next_cut(cur.t))
            category = self._category(m, cur)
            if category != "unknown":
                if cur.t >= cur.valid_until:
                    category = "unknown"
                else:
                    end = min(end, cur.valid_until)
            frozen = cur.frozen and category != "unknown"
            if frozen:
                category = "unknown"  # the values are frozen (docs/kpi.md): not run, not stop
            seconds = (end - cur.t) / NS
            planned = span.is_planned(cur.t)
            if self.trace is not None and close is not None:
                self.trace.segment(m.name, cur.t, end, category, cur.reason, cur.product, planned)
            if category == "unknown":
                cur.unknown_acc += seconds
            elif category == "running":
                if planned:
                    cur.run_acc += seconds
                else:
                    cur.over_acc += seconds
            for c in self._open_at(m, cur, cur.t):
                c.calendar_s += seconds
                if not planned:
                    if category == "running":
                        c.overtime_s += seconds  # running outside planned time: overtime
                    continue
                if category == "planned_stop":
                    c.planned_stop_s += seconds
                    continue
                c.planned_s += seconds
                if category == "running":
                    c.running_s += seconds
                elif category in ("idle", "down", "setup"):
                    setattr(c, f"{category}_s", getattr(c, f"{category}_s") + seconds)
                    # Every stop in planned time is a loss with a reason; the key names the
                    # category so the Pareto tells a breakdown from a wait or a changeover.
                    key = f"{category}: {cur.reason}"
                    c.down_by_reason[key] = c.down_by_reason.get(key, 0.0) + seconds
                else:
                    c.unknown_s += seconds
                    if frozen:
                        c.frozen_s += seconds
            cur.t = end
            ended = [k for k, (w, _) in cur.open.items() if w.end_ns <= end]
            for k in ended:
                w, c = cur.open.pop(k)
                if close is not None:
                    close(m, w, c)
            if ended and close is not None:
                m.checkpoints.append((end, copy.deepcopy(cur)))
                if not self._recomputing:  # a recompute walks the log: prune after it
                    self._prune(m)

    def _apply(
        self, m: _MachineState, cur: _Cursor, t: int, role: int, value: float, quality: int
    ) -> None:
        """Update the cursor with one reading taken at `t` (the cursor is already at `t`)."""
        usable = quality != Quality.BAD and math.isfinite(value)
        if usable and cur.seen.get(role) != value:
            cur.seen[role] = value  # a value moved: nothing is frozen
            cur.changed_at = t
            cur.frozen = False
        elif usable:
            cur.answered_at = t  # the same value again (checked for a freeze in `_fold_to`)
        if role == HEARTBEAT:
            return
        if role in (STATE, UNIT_MODE):
            if role == STATE:
                cur.state_bad = not usable
                if usable:
                    cur.state = value
                    cur.valid_until = t + m.max_gap_ns
            elif usable:
                cur.unit_mode = value
            category = self._category(m, cur)
            if category == "down" and cur.last_known != "down":
                for c in self._open_at(m, cur, t):
                    c.failures += 1
            if category != "unknown":
                cur.last_known = category
            return
        if not usable:
            return  # a bad counter reading is skipped; the next good one carries the delta
        if role == REASON:
            cur.reason = m.kpi.reason_label(int(value))
        elif role == PRODUCT:
            cur.product = product_of(value)
        else:
            self._count(m, cur, t, role, value)

    def _count(self, m: _MachineState, cur: _Cursor, t: int, role: int, value: float) -> None:
        """Add one counter reading's delta, shared out over the time since its last reading
        (docs/kpi.md, "Production in unknown time"): the share on known running time in planned
        time counts; the share on unknown time or on running outside planned time (overtime) is
        kept apart. A delta with no running or unknown time in between (the state signal
        missed the run) counts whole, and the window says `count_without_run_time`."""
        if cur.frozen:
            # The same value from a frozen source says nothing about the time since: the
            # counter's last real reading stays its mark, so the step after the freeze is
            # shared out over (and bounded by) the whole frozen time.
            return
        scale = m.scale.get(role, 1.0)
        raw = value / scale
        mark = cur.marks.get(role)
        cur.marks[role] = (t, cur.run_acc, cur.over_acc, cur.unknown_acc)
        limit = None
        if role != ENERGY and mark is not None:
            limit = plausible_limit(m.max_rate / scale, (t - mark[0]) / NS)
        step = counter_step(cur.counters.get(role), raw, m.bits.get(role), limit)
        cur.counters[role] = raw
        if step.kind == "reset":
            self.stats["resets"] += 1
        elif step.kind == "rollover":
            self.stats["rollovers"] += 1
        delta = step.delta * scale
        if step.capped:
            self.stats["implausible"] += 1
            for c in self._open_at(m, cur, t):
                c.implausible += 1
        if delta == 0.0:
            return
        if role == ENERGY:
            for c in self._open_at(m, cur, t):
                c.energy_kwh += delta
            return
        known, over, unknown = 1.0, 0.0, 0.0
        if mark is not None:
            run = cur.run_acc - mark[1]
            off = cur.over_acc - mark[2]
            lost = cur.unknown_acc - mark[3]
            if run + off + lost > 0:
                known, over, unknown = (x / (run + off + lost) for x in (run, off, lost))
        kpi = m.kpi
        # The ideal time of what was made: from the total counter, or from good + reject
        # (+ rework) when the machine has no total counter.
        counts_total = role == TOTAL or (kpi.total is None and role in (GOOD, REJECT, REWORK))
        cycle = kpi.cycle_time_s(cur.product)
        ideal = delta * cycle * known if counts_total else 0.0
        if self.trace is not None and not m.inspected:
            self.trace.count(m.name, t, _COUNTER_FIELD[role], delta * known, ideal, cur.product)
        for c in self._open_at(m, cur, t):
            if counts_total:
                c.unknown_count += delta * unknown
                c.unknown_ideal_s += delta * cycle * unknown
                c.overtime_count += delta * over
            if m.inspected and role != REWORK:
                # Verdicts count good and reject; the counters say what was made.
                assert isinstance(c, InspectedComponents)
                c.ideal_s += ideal
                c.produced += delta * known if counts_total else 0.0
            else:
                name = _COUNTER_FIELD[role]
                setattr(c, name, getattr(c, name) + delta * known)
                c.ideal_s += ideal
                if role != TOTAL:
                    ideal_name = f"{name}_ideal_s"
                    setattr(c, ideal_name, getattr(c, ideal_name) + delta * known * cycle)

    # -- closing, late data, roll-up ----------------------------------------------------------

    def _close(self, m: _MachineState, w: Window, c: Components) -> None:
        key = _key(w)
        previous = m.closed.get(key)
        if previous is not None and previous.components == c:
            return  # a recompute that changed nothing in this window
        revision = 0 if previous is None else previous.revision + 1
        m.closed[key] = _Closed(w, c, revision)
        done = self._finished(m.kpi, c)
        place = _Place("machine", m.name, m.line, m.area, m.site, m.unit, labels=m.kpi)
        self._pending += _events(w, done, revision, place)
        for group in m.groups:
            self._close_group(group, m, w, done)

    def _close_group(self, group: Group, m: _MachineState, w: Window, done: Components) -> None:
        """A line's, area's or the site's window closes when every machine of it has closed it
        (and again, revised, when one of them revises it)."""
        key = (group, _key(w))
        parts = self._group_parts.setdefault(key, {})
        parts[m.name] = done
        names = self._groups[group]
        if len(parts) < len(names):
            return
        revision = self._group_revision.get(key, -1) + 1
        self._group_revision[key] = revision
        total = line_rollup(parts[name] for name in names)
        self._pending += _events(w, total, revision, self._place(group, m))

    def _place(self, group: Group, m: _MachineState) -> _Place:
        scope, _ = group
        unit = self._group_unit[group]
        notes: tuple[str, ...] = ()
        if unit is None:
            units = sorted(
                {o.unit or "undeclared" for o in self._machines if o.name in self._groups[group]}
            )
            notes = (
                "counts not added: the machines count in different or undeclared units"
                f" ({', '.join(units)})",
            )
        return _Place(
            scope,
            None,
            m.line if scope == "line" else None,
            m.area if scope in ("line", "area") else None,
            m.site,
            unit,
            notes,
        )

    def _recompute(self, m: _MachineState, t: int) -> None:
        """Fold the log again from the last checkpoint at or before `t` to where we were."""
        assert m.cursor is not None
        self.stats["recomputes"] += 1
        target = m.cursor.t
        i = max(bisect_right([c for c, _ in m.checkpoints], t) - 1, 0)
        start, saved = m.checkpoints[i]
        del m.checkpoints[i + 1 :]
        cur = copy.deepcopy(saved)
        log = m.log
        self._recomputing = True
        if self.trace is not None:
            self.trace.redo(m.name, start)
        try:
            for j in range(bisect_left(log.ts, start), len(log)):
                ts = log.ts[j]
                if log.role[j] == VERDICT:
                    self._verdict(m, cur, ts, log.value[j])
                    continue
                if log.role[j] == OUTAGE:
                    self._fold_to(m, cur, ts, self._close)
                    cur.valid_until = min(cur.valid_until, ts)
                    continue
                if log.role[j] == FROZEN:
                    self._fold_to(m, cur, ts, self._close)
                    cur.frozen = cur.changed_at <= ts  # unless a value moved since
                    continue
                if log.role[j] == MOVED:
                    self._fold_to(m, cur, ts, self._close)
                    cur.changed_at, cur.frozen = ts, False
                    continue
                self._fold_to(m, cur, ts, self._close)
                self._apply(m, cur, ts, log.role[j], log.value[j], log.quality[j])
            self._fold_to(m, cur, target, self._close)
        finally:
            self._recomputing = False
        m.cursor = cur
        self._prune(m)
        for since in m.freezes:  # found while folding the log: logged now, folded next flush
            self._log_freeze(m, since)
        m.freezes.clear()

    def _freeze(self, m: _MachineState, cur: _Cursor) -> None:
        """The values have not moved for `frozen_after`: frozen since their last change. From
        now on the fold counts unknown time; the time since the last change, already folded
        as the state said, is folded again (at the next flush) from a mark in the log. A gap
        without readings is not a freeze (nothing answered): that is `max_gap`'s business."""
        cur.frozen = True
        self.stats["frozen"] += 1
        if self._recomputing:
            m.freezes.append(cur.changed_at)  # the log is being walked: mark it after
        else:
            self._log_freeze(m, cur.changed_at)

    def _log_freeze(self, m: _MachineState, since: int) -> None:
        if m.log.add(since, FROZEN, 0.0, Quality.GOOD):
            m.late_since = since if m.late_since is None else min(since, m.late_since)

    def _prune(self, m: _MachineState) -> None:
        assert m.cursor is not None
        horizon = m.cursor.t - RETAIN_NS
        keep = bisect_right([c for c, _ in m.checkpoints], horizon) - 1
        if keep > 0:
            del m.checkpoints[:keep]
        oldest = m.checkpoints[0][0]
        m.log.drop_before(oldest)
        for k in [k for k, v in m.closed.items() if v.window.end_ns <= oldest]:
            del m.closed[k]
            for group in m.groups:
                self._group_parts.pop((group, k), None)
                self._group_revision.pop((group, k), None)

    def _finished(self, kpi: MachineKpi, c: Components) -> Components:
        """A copy with the counter the machine does not have derived from the others
        (docs/kpi.md, "Counters"): total = good + reject + rework; a reworked part is made but
        not good (first-time good), so good = total - reject - rework. The ideal times of the
        counts follow the same sums, so quality by ideal time matches quality by count."""
        done = copy.deepcopy(c)
        done.products = {k: self._finished(kpi, p) for k, p in c.products.items()}
        if kpi.inspection is not None:
            # Good, reject and total all come from verdicts: the sample's quality.
            share = done.good / done.total if done.total > 0 else 0.0
            done.good_ideal_s = done.ideal_s * share
            done.reject_ideal_s = done.ideal_s - done.good_ideal_s
            return done
        if kpi.total is not None:
            # The total counter's ideal time is ideal_s; per-role ideal times come from the
            # counters present, the missing one from the rest.
            if kpi.good is None:
                done.good = max(done.total - done.reject - done.rework, 0.0)
                done.good_ideal_s = max(done.ideal_s - done.reject_ideal_s - done.rework_ideal_s, 0)
            elif kpi.reject is None:
                done.reject = max(done.total - done.good - done.rework, 0.0)
                done.reject_ideal_s = max(done.ideal_s - done.good_ideal_s - done.rework_ideal_s, 0)
        else:
            done.total = done.good + done.reject + done.rework
        return done

    def _take(self) -> list[Event]:
        out, self._pending = self._pending, []
        return out


def _window_data(w: Window) -> dict[str, Any]:
    return {"kind": w.kind, "name": w.name, "start_ns": w.start_ns, "end_ns": w.end_ns}


@dataclass(frozen=True, slots=True)
class _Place:
    """Whose record it is: a machine or a roll-up (line, area, site), its ISA-95 path and the
    unit its counts are in (None: a roll-up of unlike units, whose counts are not added)."""

    scope: Scope
    machine: str | None
    line: str | None  # "area/line"; None for an area or the site
    area: str | None  # None for the site
    site: str
    unit: str | None
    notes: tuple[str, ...] = ()
    labels: MachineKpi | None = None  # a machine's kpi section: names its products

    def data(self) -> dict[str, Any]:
        return {"scope": self.scope, "machine": self.machine, "line": self.line,
                "area": self.area, "site": self.site}  # fmt: skip


def record_key(data: Mapping[str, Any]) -> RecordKey:
    """The identity of a KPI record (event data): the same window of the same machine, line,
    area or site, whatever its revision or definition."""
    scope = str(data.get("scope", "machine" if data.get("machine") else "line"))
    who = data.get(scope) or data.get("machine") or data.get("line")
    w = data["window"]
    return (scope, str(who), str(w["kind"]), str(w["name"]))


def _components(c: Components, place: _Place) -> dict[str, Any]:
    """The components as plain data; the counts of a roll-up whose machines count in
    different units are null (not added)."""
    data = asdict(c)
    del data["products"]  # given apart, with their KPIs (`products`)
    if not c.units and place.unit is None:
        data.update(dict.fromkeys(COUNT_FIELDS))
    return data


def _figures(c: Components, place: _Place) -> dict[str, Any]:
    return {
        "classic": classic(c),
        "iso22400": iso22400(c),
        "components": _components(c, place),
        "unit": place.unit,
        "notes": list(place.notes),
        "unknown": unknown_share(c),
        "flags": flags(c),
        "losses": six_big_losses(c),
        "pareto": [list(p) for p in pareto(c.down_by_reason)],
        "products": _products(c, place),
    }


def _products(c: Components, place: _Place) -> list[dict[str, Any]]:
    """A machine's figures per product code (sorted; no product last), both definitions."""
    out = []
    for key in sorted(c.products, key=lambda k: (k == "", int(k) if k.isdigit() else 0, k)):
        p = c.products[key]
        label = place.labels.product_label(int(key) if key else None) if place.labels else key
        out.append(
            {
                "product": key or None,
                "label": label,
                "classic": classic(p),
                "iso22400": iso22400(p),
                "components": _components(p, place),
                "unknown": unknown_share(p),
                "flags": flags(p),
            }
        )
    return out


def _events(w: Window, c: Components, revision: int, place: _Place) -> list[Event]:
    """One KPI event per definition for a closed (or revised) window; per product, each event
    carries its definition's KPIs as `kpis` too."""
    figures = _figures(c, place)
    kpis = {d: figures.pop(d) for d in DEFINITIONS}
    products = figures.pop("products")
    shared = {**place.data(), "window": _window_data(w), **figures, "revision": revision}
    out = []
    for d in DEFINITIONS:
        mine = [
            {**{k: v for k, v in p.items() if k not in DEFINITIONS}, "kpis": p[d]} for p in products
        ]
        data = {"definition": d, "kpis": kpis[d], **shared, "products": mine}
        out.append(Event(EventKind.KPI, ts_ns=w.end_ns, machine=place.machine, data=data))
    return out

"""One machine in the KPI engine: what it is (`MachineState`: its kpi section, roll-ups, log,
checkpoints and closed windows) and where its fold stands (`Cursor`), with the roles of its KPI
tags and the calendar look-ups the fold runs on (`Spans`). The fold itself is agent/kpi/fold.py.

Per machine the engine keeps a *cursor*: the time accounted so far, the current state category,
the last value of every counter and the components of the open windows (hour, shift, day).

Counts (docs/kpi.md, "Production in unknown time"). A counter's delta covers the time since
that counter's last reading; it is shared out over that time by what the cursor folded there:
known running in planned time counts, unknown time and running outside planned time (overtime)
are kept apart. The cursor keeps running totals of those three (`run_acc`, `over_acc`,
`unknown_acc`) and each counter remembers them at its last reading (`marks`), so the share is
two subtractions. A step above the plausibility bound (ideal rate x elapsed time, with margin)
is a reset rather than a rollover, or is capped (agent/kpi/counters.py).

Late data. Readings older than the cursor (replayed after an outage, or a second source of the
machine lagging) are inserted into the machine's log of its KPI tags' readings (`ReadingLog`);
at the next `flush` (every `tick`) the cursor is restored from the last checkpoint (taken at
every window boundary) before the earliest of them, and the log is folded again up to where the
cursor was: one recompute however many late batches came. Windows that close again with other
components are emitted again with `revision + 1`. We keep this log in memory, for the last
`RETAIN_NS` (26 h: a day window plus slack), rather than read the store back: the engine stays
pure and synchronous, a recompute costs no I/O on the event loop, and the log holds only the few
KPI tags of each machine, after report-by-exception, in compact arrays (18 bytes a reading).
Readings older than that are dropped and counted (`statistics()["late_dropped"]`).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agent.config.calendar import Calendar
from agent.config.sections import Machine
from agent.kpi.calendar import Window, planned_intervals, window_at, windows
from agent.kpi.config import MachineKpi, product_key
from agent.kpi.formulas import Components
from agent.kpi.records import Group
from agent.kpi.states import Category, map_code, packml_category
from agent.model import Verdict

NS = 1_000_000_000
RETAIN_NS = 26 * 3600 * NS
NO_REASON = "no reason"

# Roles of the KPI tags, as stored in the log (one byte each).
STATE, UNIT_MODE, REASON, TOTAL, GOOD, REJECT, REWORK, PRODUCT, ENERGY, VERDICT = range(10)
OUTAGE = 10  # the agent was stopped here: the state before it vouches no further (`outage`)
HEARTBEAT = 11  # a tag that only proves the values move (`[machines.kpi] heartbeat`)
FROZEN = 12  # the values stopped moving here: unknown time until one changes (docs/kpi.md)
MOVED = 13  # one of the machine's other values (not a KPI tag) changed here
# Verdicts in the log, by the codes a verdict write-back puts in a register (`Verdict.code`).
OK, NOT_OK = float(Verdict.OK.code), float(Verdict.NOT_OK.code)
ROLE_OF_KEY = {
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
COUNTER_FIELD = {TOTAL: "total", GOOD: "good", REJECT: "reject", REWORK: "rework"}
# Counter widths by declared type (signed registers wrap too: counter_step works modulo 2^bits).
TYPE_BITS: dict[str, int | None] = {
    "uint16": 16,
    "int16": 16,
    "uint32": 32,
    "int32": 32,
    "uint64": 64,
    "int64": 64,
}

WindowKey = tuple[str, str]  # (kind, name)


def window_key(w: Window) -> WindowKey:
    return (w.kind, w.name)


@dataclass(frozen=True, slots=True)
class Span:
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


class Spans:
    """Calendar look-ups, cached by hour: the calendar maths converts time zones, too slow to
    run for every reading."""

    def __init__(self, calendar: Calendar | None) -> None:
        self.calendar = calendar
        self._cache: dict[int, Span] = {}
        self._last: Span | None = None

    def at(self, t: int) -> Span:
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
            span = Span(hour.start_ns, hour.end_ns, ws, planned, cuts)
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
class Cursor:
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
class Closed:
    window: Window
    components: Components
    revision: int


class ReadingLog:
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
class TagRole:
    machine: int  # index into the engine's machines
    role: int
    bits: int | None
    scale: float  # counters wrap in raw register units, before scaling


class MachineState:
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
        self.cursor: Cursor | None = None
        self.began: int | None = None  # the first reading's time (a silent machine: its line's)
        self.readings = 0  # readings taken; 0: the machine never reported
        self.log = ReadingLog()
        self.checkpoints: list[tuple[int, Cursor]] = []
        self.closed: dict[WindowKey, Closed] = {}
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


# What the fold calls with each window it closes (None: a throw-away fold, nothing closes).
Emit = Callable[[MachineState, Window, Components], None]


def category_of(m: MachineState, cur: Cursor) -> Category:
    """The time category the cursor's state stands for now."""
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


def fresh_components(m: MachineState) -> Components:
    """A window's empty components, of the machine's kind."""
    kind = InspectedComponents if m.inspected else Components
    return kind(has_energy=m.kpi.energy is not None)


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

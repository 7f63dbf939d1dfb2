"""The incremental KPI engine: readings in, closed KPI windows out (as `Event`s).

`KpiEngine` sorts every stored batch out to the machines whose KPI tags it holds and folds each
reading into its machine (agent/kpi/fold.py: time into state stretches, counts, late data);
closed windows come out as events per definition (agent/kpi/records.py), for the machine and
its line, area and site (agent/kpi/rollup.py). A machine's state and cursor are
agent/kpi/machine.py; products agent/kpi/products.py. Definitions: docs/kpi.md.

Inspection verdicts (`on_event`). A machine whose `[machines.kpi]` names an `inspection` takes
its quality from that inspection's verdicts: OK counts as good, NotOK as reject, at the
verdict's timestamp; total is OK + NotOK (the parts whose quality is known); NotDecidable is
counted apart (`not_decidable`), never guessed. Its counters still give the ideal time
(performance) and what was made (`produced`). A verdict only adds counts, so one that arrives a
little behind the readings (they are polled while the model runs) goes straight into the windows
holding it while they are open; only a verdict for a window already closed takes the late-data
path (it is in the log like a reading, so a recompute counts it again).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from agent.config.sections import Config
from agent.kpi.calendar import WindowKind, window_at
from agent.kpi.config import product_code
from agent.kpi.fold import MachineFold
from agent.kpi.formulas import Components, line_rollup
from agent.kpi.machine import (
    MOVED,
    NO_REASON,
    NS,
    OUTAGE,
    PRODUCT,
    ROLE_OF_KEY,
    TYPE_BITS,
    VERDICT,
    InspectedComponents,
    MachineState,
    TagRole,
    Trace,
    window_key,
)
from agent.kpi.products import product_of, products_key
from agent.kpi.records import (
    DEFINITIONS,
    SCOPES,
    Group,
    Place,
    RecordKey,
    Scope,
    figures,
    finished,
    record_key,
    window_data,
)
from agent.kpi.rollup import Rollups
from agent.model import Event, EventKind, InspectionVerdict, Quality, ReadingBatch
from agent.texts import TextReading

# Importable from here as before the engine was split.
__all__ = [
    "DEFINITIONS",
    "NO_REASON",
    "SCOPES",
    "InspectedComponents",
    "KpiEngine",
    "RecordKey",
    "Scope",
    "Trace",
    "product_of",
    "products_key",
    "record_key",
]


class KpiEngine(MachineFold):
    """OEE and ISO 22400 KPIs per machine and line, window by window, from reading batches.

    `tag_ids` maps tag paths (`site/area/line/machine/tag`) to the ids the batches carry (the
    store's ids in the agent). Pure and synchronous: the runtime feeds it and stores its events.
    """

    def __init__(self, config: Config, tag_ids: Mapping[str, int]) -> None:
        super().__init__(config.calendar)
        self.calendar = config.calendar
        roles: dict[int, TagRole] = {}
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
            m = MachineState(machine, machine.kpi, line, config.plant.site, unit)
            index = len(self._machines)
            self._machines.append(m)
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
                role = ROLE_OF_KEY[key]
                bits = TYPE_BITS.get(tag.type or "float64")
                scale = tag.scale or 1.0
                roles[tag_ids[path]] = TagRole(index, role, bits, scale)
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
        for tag_id, index in others.items():
            self._lookup[tag_id] = -2 - index
        self._other_last = np.full(size, np.nan)  # the last value of every other tag
        # Roll-up windows (line, area, site): what each machine closed, and the revision the
        # roll-up last emitted.
        self._rollups = Rollups(self._machines)

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
        key = window_key(window)
        machines: dict[str, Any] = {}
        parts: dict[Group, list[Components]] = {}
        places: dict[Group, Place] = {}
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
            done = finished(m.kpi, c)
            place = Place("machine", m.name, m.line, m.area, m.site, m.unit, labels=m.kpi)
            machines[m.name] = {**place.data(), "as_of_ns": max(now_ns, live.t),
                                **figures(done, place)}  # fmt: skip
            for group in m.groups:
                parts.setdefault(group, []).append(done)
                places[group] = self._rollups.place(group, m)
        rollups: dict[Scope, dict[str, Any]] = {"line": {}, "area": {}, "site": {}}
        for (scope, who), cs in parts.items():
            place = places[(scope, who)]
            rollups[scope][who] = {**place.data(), **figures(line_rollup(cs), place)}
        return {"window": window_data(window), "machines": machines, "lines": rollups["line"],
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
        self._rollups.adopt_revisions(held)

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

    def _take(self) -> list[Event]:
        out, self._pending = self._pending, []
        return out

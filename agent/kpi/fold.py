"""The fold of the KPI engine: a machine's time and readings into its cursor's open windows.

A reading first moves the cursor to its timestamp, adding the elapsed time to every open window
(split exactly at window and planned-time boundaries), then updates the state or adds the
counter's delta to the windows holding its timestamp. A window closes when the cursor passes
its end; it is then emitted once per definition ("classic", "iso22400") for the machine and,
once every machine of the line has closed it, for the line (agent/kpi/rollup.py).

Time rules (docs/kpi.md): a good state reading vouches for its state for `max_gap`; after that,
and after a bad-quality state reading until the next good one, time is "unknown" (reported,
excluded from availability, never guessed). Time before a machine's first reading in the windows
holding it is unknown too; windows that ended before it are not emitted. A machine that never
reports starts, on `tick`, where the first machine of its line did, so the line's windows still
close (with its time unknown). After a restart `outage` marks where the agent stopped seeing:
the state does not carry on past it (agent/kpi/resume.py).

Stop time (down, idle, setup) is also kept per reason, keyed `category: reason`, for the Pareto.

Counts and late data: agent/kpi/machine.py.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_left, bisect_right

from agent.config.calendar import Calendar
from agent.kpi.calendar import Window
from agent.kpi.counters import counter_step, plausible_limit
from agent.kpi.formulas import Components
from agent.kpi.machine import (
    COUNTER_FIELD,
    ENERGY,
    FROZEN,
    GOOD,
    HEARTBEAT,
    MOVED,
    NOT_OK,
    NS,
    OK,
    OUTAGE,
    PRODUCT,
    REASON,
    REJECT,
    RETAIN_NS,
    REWORK,
    STATE,
    TOTAL,
    UNIT_MODE,
    VERDICT,
    Closed,
    Cursor,
    Emit,
    InspectedComponents,
    MachineState,
    Spans,
    Trace,
    category_of,
    fresh_components,
    window_key,
)
from agent.kpi.products import product_of, products_key
from agent.kpi.records import Place, finished, window_events
from agent.kpi.rollup import Rollups
from agent.model import Event, Quality


class MachineFold:
    """The fold of every machine's cursor, and the windows it closes (as pending events).

    The base of `KpiEngine`: the engine's per-batch loop calls straight into these methods
    (no object in between), and they share the engine's machines, statistics and trace.
    """

    _rollups: Rollups  # set by the engine once its machines are known

    def __init__(self, calendar: Calendar | None) -> None:
        self._spans = Spans(calendar)
        self._machines: list[MachineState] = []
        self._products_before: dict[str, int] = {}  # machine -> a text product before its start
        self._pending: list[Event] = []
        self._recomputing = False
        # Called with every stretch of a machine's time as it is folded (the shift report's
        # timeline, agent/kpi/timeline.py); a recompute calls it again for the time it redoes.
        self.trace: Trace | None = None
        self.stats = {"readings": 0, "late": 0, "late_dropped": 0, "duplicates": 0,
                      "recomputes": 0, "resets": 0, "rollovers": 0, "verdicts": 0,
                      "implausible": 0, "frozen": 0}  # fmt: skip

    def _start(self, m: MachineState, t: int) -> None:
        """The first reading: the windows holding it count the time before it as unknown.

        Windows that ended before it are not emitted: the agent was not there to see them.
        """
        starts = [w.start_ns for w in self._spans.at(t).windows_at(t)]
        m.cursor = Cursor(
            t=min(starts, default=t),
            product=self._products_before.pop(m.name, None),
            changed_at=t,
        )
        m.began = t
        self._fold_to(m, m.cursor, t, None)
        m.checkpoints.append((t, copy.deepcopy(m.cursor)))

    def _start_silent(self, m: MachineState) -> None:
        """A machine that never reported, in a line whose other machines did: it starts where
        the first of them did, its time unknown, so the line's windows can close once they are
        over by more than max_gap (tick folds it on like any quiet machine)."""
        began = [o.began for o in self._machines if o.line == m.line and o.began is not None]
        if began:  # else the whole line is silent: there is nothing to say about it
            self._start(m, min(began))  # windows the others did not emit, it does not either

    def _holding_open(self, cur: Cursor, t: int) -> bool:
        """Every window holding `t` is open in the cursor: counts at `t` can go straight in."""
        return all(window_key(w) in cur.open for w in self._spans.at(t).windows_at(t))

    def _verdict(self, m: MachineState, cur: Cursor, t: int, code: float) -> None:
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

    def _open_at(self, m: MachineState, cur: Cursor, t: int) -> list[Components]:
        """The components of every window holding `t`, opening those not yet open; with a
        product tag, also each window's components of the product in force (so everything
        counted goes to the window and to its product, docs/kpi.md "Per product")."""
        out = []
        for w in self._spans.at(t).windows_at(t):
            entry = cur.open.get(window_key(w))
            if entry is None:
                entry = (w, fresh_components(m))
                cur.open[window_key(w)] = entry
            out.append(entry[1])
        if m.kpi.product is not None:
            key = products_key(cur.product)
            for c in out[:]:
                part = c.products.get(key)
                if part is None:
                    part = c.products[key] = fresh_components(m)
                out.append(part)
        return out

    def _fold_to(self, m: MachineState, cur: Cursor, t: int, close: Emit | None) -> None:
        """Account the time from `cur.t` to `t` in the current category; close passed windows
        (`close` None: a throw-away copy for a live view, nothing is emitted or kept)."""
        if (
            cur.answered_at - cur.changed_at > m.frozen_ns
            and not cur.frozen
            and t > cur.t
            and close is not None
            and (m.watch_all or category_of(m, cur) == "running")
        ):
            # Every reading up to `cur.t` is in: the source answered the same values for
            # longer than frozen_after while the machine should move them (running, or any
            # state with a heartbeat tag).
            self._freeze(m, cur)
        while cur.t < t:
            span = self._spans.at(cur.t)
            end = min(t, span.next_cut(cur.t))
            category = category_of(m, cur)
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
        self, m: MachineState, cur: Cursor, t: int, role: int, value: float, quality: int
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
            category = category_of(m, cur)
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

    def _count(self, m: MachineState, cur: Cursor, t: int, role: int, value: float) -> None:
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
            self.trace.count(m.name, t, COUNTER_FIELD[role], delta * known, ideal, cur.product)
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
                name = COUNTER_FIELD[role]
                setattr(c, name, getattr(c, name) + delta * known)
                c.ideal_s += ideal
                if role != TOTAL:
                    ideal_name = f"{name}_ideal_s"
                    setattr(c, ideal_name, getattr(c, ideal_name) + delta * known * cycle)

    # -- closing, late data -----------------------------------------------------------------

    def _close(self, m: MachineState, w: Window, c: Components) -> None:
        key = window_key(w)
        previous = m.closed.get(key)
        if previous is not None and previous.components == c:
            return  # a recompute that changed nothing in this window
        revision = 0 if previous is None else previous.revision + 1
        m.closed[key] = Closed(w, c, revision)
        done = finished(m.kpi, c)
        place = Place("machine", m.name, m.line, m.area, m.site, m.unit, labels=m.kpi)
        self._pending += window_events(w, done, revision, place)
        for group in m.groups:
            self._pending += self._rollups.close(group, m, w, done)

    def _recompute(self, m: MachineState, t: int) -> None:
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

    def _freeze(self, m: MachineState, cur: Cursor) -> None:
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

    def _log_freeze(self, m: MachineState, since: int) -> None:
        if m.log.add(since, FROZEN, 0.0, Quality.GOOD):
            m.late_since = since if m.late_since is None else min(since, m.late_since)

    def _prune(self, m: MachineState) -> None:
        assert m.cursor is not None
        horizon = m.cursor.t - RETAIN_NS
        keep = bisect_right([c for c, _ in m.checkpoints], horizon) - 1
        if keep > 0:
            del m.checkpoints[:keep]
        oldest = m.checkpoints[0][0]
        m.log.drop_before(oldest)
        for k in [k for k, v in m.closed.items() if v.window.end_ns <= oldest]:
            del m.closed[k]
            self._rollups.forget(m, k)

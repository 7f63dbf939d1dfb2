"""The andon board: one row per machine (its state by name, how long in it, the stop reason,
good parts this shift against the target) and the state timeline of the shift in progress.

The state comes from the latest reading of the machine's `[machines.kpi] state` tag (and
`unit_mode` for PackML), mapped as the KPI engine maps it (agent/kpi/states.py); a bad or
missing reading is "unknown". Parts come from the live KPI snapshot.

The timeline of the shift and how long a machine has been in its state come from the KPI
engine's own fold (`StateTrace`, the engine's `trace`): the runtime attaches it before the
engine resumes from the store at start, so after a restart the page shows the whole shift, the
time the agent was stopped as unknown. The time since the engine's last fold (its last
reading) is the state read now. A machine the engine does not follow (no `[machines.kpi]`, no
KPI engine) is tracked from the page's looks (once a second) since the agent started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.kpi.engine import NO_REASON
from agent.kpi.states import Category, map_code, packml_category
from agent.kpi.timeline import Timeline
from agent.model import Quality

if TYPE_CHECKING:
    from agent.kpi.config import MachineKpi
    from agent.runtime import Agent

MAX_STRETCHES = 500  # per machine: a machine flapping every second keeps the last 500
KEEP_NS = 25 * 3600 * 1_000_000_000  # the engine's stretches kept: the longest shift and more
MAX_SEGMENTS = 5000  # and at most so many per machine (a flapping machine)


def category_of(kpi: MachineKpi, state: float | None, unit_mode: float | None) -> Category:
    """A machine's state category from its raw readings (None: no good reading)."""
    if state is None or not math.isfinite(state):
        return "unknown"
    if kpi.packml:
        if state != int(state):
            return "unknown"
        mode = None if unit_mode is None or not math.isfinite(unit_mode) else int(unit_mode)
        if kpi.unit_mode is not None and mode is None:
            return "unknown"  # the mode decides what a state means: without it, nothing
        return packml_category(int(state), mode)
    return map_code(state, kpi.code_table())


class StateTrace(Timeline):
    """The live KPI engine's `trace` for the page: each machine's stretches as the engine
    folds them (the stored readings replayed at start, then the live ones), without the counts
    the report needs. It keeps the last `KEEP_NS` (a shift is at most a day) and at most
    `MAX_SEGMENTS` stretches per machine, with or without a page looking."""

    def segment(
        self, machine: str, start_ns: int, end_ns: int, category: str, reason: str,
        product: int | None, planned: bool,
    ) -> None:  # fmt: skip
        super().segment(machine, start_ns, end_ns, category, reason, product, planned)
        rows = self.machines.get(machine)
        if rows and (rows[0].end_ns < end_ns - KEEP_NS or len(rows) > MAX_SEGMENTS):
            keep = next((i for i, s in enumerate(rows) if s.end_ns >= end_ns - KEEP_NS), len(rows))
            del rows[: max(keep, len(rows) - MAX_SEGMENTS)]

    def count(
        self, machine: str, t_ns: int, counter: str, amount: float, ideal_s: float,
        product: int | None,
    ) -> None:  # fmt: skip
        return  # the board shows states only: a count a reading would cost memory all shift


def _shown_reason(kpi: MachineKpi, category: str, label: str) -> str | None:
    """The stop reason the board shows with a traced stretch: a down machine's, as the live
    row shows it (none for code 0)."""
    if category != "down" or label in (NO_REASON, "", kpi.reason_label(0)):
        return None
    return label


def _stretches(
    trace: StateTrace, kpi: MachineKpi, machine: str, start_ns: int | None, now_ns: int
) -> tuple[list[list[Any]], int] | None:
    """The machine's traced stretches from `start_ns` ([start_ns, category, reason], equal
    neighbours joined) and where the trace ends; None when the engine traced nothing yet."""
    rows = trace.machines.get(machine)
    if not rows:
        return None
    segments = rows if start_ns is None else trace.between(machine, start_ns, now_ns)
    out: list[list[Any]] = []
    for s in segments:
        entry = [s.start_ns, s.category, _shown_reason(kpi, s.category, s.reason)]
        if out and out[-1][1:] == entry[1:]:
            continue
        out.append(entry)
    return (out, rows[-1].end_ns) if out else None


@dataclass(slots=True)
class _Track:
    stretches: list[list[Any]] = field(default_factory=list)  # [start_ns, category, reason]


class AndonBoard:
    """Reads the agent's latest values; remembers when each machine's state last changed."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._tracks: dict[str, _Track] = {}

    def _trace(self) -> StateTrace | None:
        trace = getattr(self.agent, "state_trace", None)
        return trace if isinstance(trace, StateTrace) else None

    def _reading(self, machine: str, tag: str | None) -> float | None:
        if tag is None:
            return None
        try:
            i = self.agent.tags.id_of(machine, tag)
        except KeyError:
            return None
        if not self.agent.latest_ts_ns[i] or self.agent.latest_quality[i] != Quality.GOOD:
            return None
        return float(self.agent.latest_values[i])

    def rows(self, now_ns: int, snapshot: Any) -> dict[str, Any]:
        """`{"rows": [...], "shift": {...} | None}`: the andon rows and the shift's window."""
        window = snapshot.get("window") if isinstance(snapshot, dict) else None
        figures = snapshot.get("machines", {}) if isinstance(snapshot, dict) else {}
        shift_start = window.get("start_ns") if isinstance(window, dict) else None
        trace = self._trace()
        rows = []
        for machine in self.agent.config.machines:
            kpi = machine.kpi
            category: Category = "unknown"
            reason = None
            if kpi is not None:
                state = self._reading(machine.name, kpi.state)
                category = category_of(kpi, state, self._reading(machine.name, kpi.unit_mode))
                code = self._reading(machine.name, kpi.reason)
                if category == "down" and code is not None and code == int(code) and code:
                    reason = kpi.reason_label(int(code))
            traced = None
            if trace is not None and kpi is not None:
                traced = _stretches(trace, kpi, machine.name, shift_start, now_ns)
            if traced is not None:
                stretches, end_ns = traced
                if end_ns < now_ns and stretches[-1][1:] != [category, reason]:
                    stretches.append([end_ns, category, reason])  # read now, not folded yet
            else:
                stretches = self._track(machine.name, now_ns, category, reason)
            since = stretches[-1][0]  # equal neighbours are joined: the last is the state's
            parts = (figures.get(machine.name) or {}).get("components") or {}
            rows.append(
                {
                    "machine": machine.name,
                    "line": machine.line,
                    "state": category,
                    "reason": reason,
                    "since_ns": since,
                    "in_state_s": round((now_ns - since) / 1e9, 1),
                    # the first look: the state may have begun before the agent started
                    "since_start": since == stretches[0][0],
                    "good": parts.get("good"),
                    "total": parts.get("total"),
                    "target": kpi.target_output if kpi is not None else None,
                    "timeline": [
                        {"start_ns": max(s[0], shift_start or s[0]), "state": s[1], "reason": s[2]}
                        for k, s in enumerate(stretches)
                        if shift_start is None
                        or k + 1 == len(stretches)
                        or stretches[k + 1][0] > shift_start
                    ],
                }
            )
        shift = None
        if isinstance(window, dict):
            shift = {k: window.get(k) for k in ("kind", "name", "start_ns", "end_ns")}
        return {"rows": rows, "window": shift}

    def _track(self, machine: str, now_ns: int, category: str, reason: str | None) -> list[Any]:
        """The stretches of a machine the engine does not trace, from the page's looks."""
        track = self._tracks.setdefault(machine, _Track())
        last = track.stretches[-1] if track.stretches else None
        if last is None or last[1] != category or last[2] != reason:
            track.stretches.append([now_ns, category, reason])
            del track.stretches[:-MAX_STRETCHES]
        return track.stretches

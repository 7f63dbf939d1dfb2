"""The andon board: one row per machine (its state by name, how long in it, the stop reason,
good parts this shift against the target) and the state timeline of the shift in progress.

The state comes from the latest reading of the machine's `[machines.kpi] state` tag (and
`unit_mode` for PackML), mapped as the KPI engine maps it (agent/kpi/states.py); a bad or
missing reading is "unknown". Parts come from the live KPI snapshot. How long a machine has
been in its state and the timeline are kept here, from the page's looks (once a second) since
the agent started: the shift report (`/reports/current`) has the whole shift from the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.kpi.states import Category, map_code, packml_category
from agent.model import Quality

if TYPE_CHECKING:
    from agent.kpi.config import MachineKpi
    from agent.runtime import Agent

MAX_STRETCHES = 500  # per machine: a machine flapping every second keeps the last 500


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


@dataclass(slots=True)
class _Track:
    stretches: list[list[Any]] = field(default_factory=list)  # [start_ns, category, reason]


class AndonBoard:
    """Reads the agent's latest values; remembers when each machine's state last changed."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._tracks: dict[str, _Track] = {}

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
            track = self._tracks.setdefault(machine.name, _Track())
            last = track.stretches[-1] if track.stretches else None
            if last is None or last[1] != category or last[2] != reason:
                track.stretches.append([now_ns, category, reason])
                del track.stretches[:-MAX_STRETCHES]
            since = track.stretches[-1][0]
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
                    "since_start": since == track.stretches[0][0],
                    "good": parts.get("good"),
                    "total": parts.get("total"),
                    "target": kpi.target_output if kpi is not None else None,
                    "timeline": [
                        {"start_ns": max(s[0], shift_start or s[0]), "state": s[1], "reason": s[2]}
                        for k, s in enumerate(track.stretches)
                        if shift_start is None
                        or k + 1 == len(track.stretches)
                        or track.stretches[k + 1][0] > shift_start
                    ],
                }
            )
        shift = None
        if isinstance(window, dict):
            shift = {k: window.get(k) for k in ("kind", "name", "start_ns", "end_ns")}
        return {"rows": rows, "window": shift}

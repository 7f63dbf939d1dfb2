"""The OEE panel's targets: each machine's OEE against its `target_oee` and its good units
against the plan of the shift so far (`target_output`, pro rata over the shift's time, as the
shift report's targets table reckons it, agent/kpi/tables.py).

Pure: `with_targets` adds the figures to the rows `oee_view` (agent/web/state.py) made from the
KPI snapshot; the page colours them (at or above target, below).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config import Config


def plan_so_far(output: float, start_ns: int, end_ns: int, now_ns: int) -> float:
    """Good units planned by `now_ns`: the shift's target pro rata over its time."""
    if end_ns <= start_ns:
        return output
    return output * max(0.0, min(1.0, (now_ns - start_ns) / (end_ns - start_ns)))


def _good(snapshot: Any, machine: str) -> float | None:
    figures = snapshot.get("machines") if isinstance(snapshot, Mapping) else None
    entry = figures.get(machine) if isinstance(figures, Mapping) else None
    parts = entry.get("components") if isinstance(entry, Mapping) else None
    good = parts.get("good") if isinstance(parts, Mapping) else None
    return float(good) if isinstance(good, int | float) else None


def machine_targets(
    config: Config, machine: str, snapshot: Any, oee: float | None, now_ns: int
) -> dict[str, Any]:
    """One machine's targets and where it stands against them; every key None when unset."""
    kpi = config.machines_by_name[machine].kpi if machine in config.machines_by_name else None
    target_oee = kpi.target_oee if kpi is not None else None
    output = kpi.target_output if kpi is not None else None
    window = snapshot.get("window") if isinstance(snapshot, Mapping) else None
    good = _good(snapshot, machine)
    plan = None
    if output is not None and isinstance(window, Mapping):
        start, end = window.get("start_ns"), window.get("end_ns")
        if isinstance(start, int) and isinstance(end, int):
            plan = plan_so_far(output, start, end, now_ns)
    return {
        "target_oee": target_oee,
        # percentage points above (+) or below (-) the target
        "oee_vs_target_pp": (
            round((oee - target_oee) * 100, 1) if oee is not None and target_oee else None
        ),
        "on_target": None if oee is None or target_oee is None else oee >= target_oee,
        "good": good,
        "plan": None if plan is None else round(plan, 1),  # good units planned by now
        "plan_shift": output,  # good units planned for the whole shift
        "on_plan": None if good is None or plan is None else good >= plan,
    }


def with_targets(view: dict[str, Any], config: Config, snapshot: Any, now_ns: int) -> None:
    """Add each machine row's targets to `oee_view`'s answer, in place (lines have none: a
    line's output adds no units across machines)."""
    for row in view.get("rows", []):
        if row.get("scope") == "machine":
            oee = row.get("oee")
            row.update(machine_targets(config, str(row.get("name")), snapshot, oee, now_ns))

"""The OEE panel's targets (agent/web/targets.py): OEE against `target_oee`, good units against
the plan of the shift so far, from a real starter config and KPI snapshots as the engine gives
them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import Config, load_config
from agent.starter import PlantMachine, plant_config
from agent.web.state import oee_view
from agent.web.targets import plan_so_far, with_targets

HOUR = 3600 * 10**9


def config(tmp_path: Path) -> Config:
    machines = [PlantMachine("press1", "press", "127.0.0.1", 1502)]
    path = tmp_path / "lineside.toml"
    path.write_text(plant_config(machines), encoding="utf-8")
    return load_config(path)


def snapshot(oee: float | None, good: float | None) -> dict[str, Any]:
    entry = {"classic": {"oee": oee}, "components": {"good": good}}
    window = {"kind": "shift", "name": "A", "start_ns": 0, "end_ns": 8 * HOUR}
    return {"window": window, "machines": {"press1": entry}, "lines": {"l": entry}}


def test_plan_so_far_is_pro_rata_and_bounded() -> None:
    assert plan_so_far(9000, 0, 8 * HOUR, 2 * HOUR) == 2250
    assert plan_so_far(9000, 0, 8 * HOUR, -HOUR) == 0
    assert plan_so_far(9000, 0, 8 * HOUR, 9 * HOUR) == 9000


def test_a_machine_below_its_oee_target_and_ahead_of_plan(tmp_path: Path) -> None:
    shot = snapshot(0.7, 2500.0)
    view = oee_view(shot)
    with_targets(view, config(tmp_path), shot, 2 * HOUR)
    machine, line = view["rows"]
    assert machine["name"] == "press1" and machine["target_oee"] == 0.85
    assert machine["oee_vs_target_pp"] == -15.0 and machine["on_target"] is False
    assert (machine["good"], machine["plan"], machine["plan_shift"]) == (2500.0, 2250.0, 9000)
    assert machine["on_plan"] is True
    assert "target_oee" not in line  # a line adds no units across machines: no plan


def test_nothing_known_yet_is_no_verdict(tmp_path: Path) -> None:
    shot = snapshot(None, None)
    view = oee_view(shot)
    with_targets(view, config(tmp_path), shot, HOUR)
    machine = view["rows"][0]
    assert machine["on_target"] is None and machine["oee_vs_target_pp"] is None
    assert machine["on_plan"] is None and machine["plan"] == 1125.0

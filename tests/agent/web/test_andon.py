"""The andon board's state by name (agent/web/andon.py) and its rows from a running agent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from agent.kpi.config import MachineKpi
from agent.web.andon import category_of
from tests.agent.web.running import running_agent

CODES = MachineKpi.model_validate(
    {
        "state": "state",
        "states": {"running": [1], "idle": [2], "down": [3], "setup": [4], "planned_stop": [5]},
        "total": "count",
        "good": "ok",
        "ideal_rate": 1.0,
    }
)
PACKML = MachineKpi.model_validate(
    {
        "state": "state",
        "packml": True,
        "unit_mode": "mode",
        "total": "count",
        "good": "ok",
        "ideal_rate": 1.0,
    }
)


@pytest.mark.parametrize(
    ("kpi", "state", "mode", "expected"),
    [
        (CODES, 1.0, None, "running"),
        (CODES, 3.0, None, "down"),
        (CODES, 5.0, None, "planned_stop"),
        (CODES, 9.0, None, "unknown"),  # a code the table does not map
        (CODES, None, None, "unknown"),  # no good reading
        (CODES, math.nan, None, "unknown"),
        (PACKML, 6.0, 1.0, "running"),  # Execute in Production
        (PACKML, 11.0, 1.0, "down"),  # Held
        (PACKML, 2.0, 3.0, "setup"),  # Manual mode
        (PACKML, 4.0, 2.0, "planned_stop"),  # Maintenance mode
        (PACKML, 6.0, None, "unknown"),  # the mode is configured but not read
    ],
)
def test_category_of(
    kpi: MachineKpi, state: float | None, mode: float | None, expected: str
) -> None:
    assert category_of(kpi, state, mode) == expected


async def test_andon_rows_in_the_state(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run:
        builder = run.web.state

        async def rows() -> list[dict[str, Any]]:
            state = await builder.state(None, max_age=0)
            return list(state["andon"]["rows"])

        first = await rows()
        later = await rows()
    assert [r["machine"] for r in later] == ["press1", "press2"]
    for row in later:
        assert row["state"] in ("running", "idle", "down", "setup", "planned_stop", "unknown")
        assert row["in_state_s"] >= 0 and row["timeline"]
        assert row["timeline"][-1]["state"] == row["state"]
        assert row["good"] is None or row["good"] >= 0
    assert first[0]["since_start"] is True  # the agent started in that state: "≥"

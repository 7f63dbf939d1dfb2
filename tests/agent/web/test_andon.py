"""The andon board's state by name (agent/web/andon.py) and its rows from a running agent."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.kpi.config import MachineKpi
from agent.web.andon import KEEP_NS, MAX_SEGMENTS, StateTrace, category_of
from tests.agent.web.running import running_agent
from tests.waiting import until

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


async def _andon(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as client:
        return dict((await client.get("/api/state")).json()["andon"])


async def test_shift_timeline_replayed_from_the_store_after_a_restart(tmp_path: Path) -> None:
    """A restart mid-shift: the page's timeline still starts before the restart (the engine
    replays the stored readings), the time the agent was stopped is unknown, and the time in
    state is measured from the shift's readings, not from the new start."""
    async with running_agent(tmp_path) as run:
        # the engine has folded a stretch of each machine's time from the live readings
        await until(
            lambda: all(run.agent.state_trace.machines.get(m) for m in ("press1", "press2"))
        )
        before = await _andon(run.url)
    stopped_ns = time.time_ns()  # the agent is stopped, not started again yet
    async with running_agent(tmp_path) as run:
        # the first reading after the restart is folded: the outage is behind it
        await until(
            lambda: all(
                s.end_ns > stopped_ns
                for m in ("press1", "press2")
                for s in run.agent.state_trace.machines[m][-1:]
            )
        )
        after = await _andon(run.url)
    if after["window"]["name"] != before["window"]["name"]:
        pytest.skip("the shift changed between the two runs")  # at 06:00, 14:00 or 22:00 only
    first_run = {r["machine"]: r["timeline"][0]["start_ns"] for r in before["rows"]}
    for row in after["rows"]:
        timeline = row["timeline"]
        # the shift's timeline reaches back before the restart, to where the first run began
        assert timeline[0]["start_ns"] <= first_run[row["machine"]] < stopped_ns
        # the time the agent was stopped is unknown
        stretch = [s for s in timeline if s["start_ns"] < stopped_ns][-1]
        assert stretch["state"] == "unknown", timeline
        assert stretch is not timeline[-1]  # and the live state follows it
        assert row["since_ns"] == timeline[-1]["start_ns"]  # in state since its stretch began


def test_state_trace_keeps_a_day_and_a_bounded_number_of_stretches() -> None:
    trace = StateTrace()
    hour = 3600 * 10**9
    for h in range(30):  # a stretch an hour for 30 hours, alternating
        trace.segment("m", h * hour, (h + 1) * hour, ("running", "idle")[h % 2], "", None, True)
    rows = trace.machines["m"]
    assert rows[-1].end_ns == 30 * hour and rows[0].end_ns >= 30 * hour - KEEP_NS
    assert len(rows) == 26  # those that end 25 h or less before the last
    for k in range(MAX_SEGMENTS + 10):  # a machine flapping every second
        t = 30 * hour + k * 10**9
        trace.segment("m", t, t + 10**9, ("down", "running")[k % 2], "jam", None, True)
    assert len(trace.machines["m"]) == MAX_SEGMENTS
    trace.count("m", 0, "good", 1.0, 1.0, None)
    assert not trace.counts  # the board keeps no counts

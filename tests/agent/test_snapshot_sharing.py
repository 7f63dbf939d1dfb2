"""One snapshot per status tick, shared by the status file, the page and the fleet status.

`Agent.snapshot(max_age)` hands out the latest snapshot again while it is younger than
`max_age`; a figure that changed shows up in the first snapshot taken after that, and a reload
never leaves the page showing the sources of the config before it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.clock import FakeClock
from agent.config import load_config
from agent.runtime import STATUS_INTERVAL, Agent
from agent.starter import starter_config
from agent.status_file import STATUS_FILE, keep_status_file, status_phase
from agent.web.state import StateBuilder
from tests.waiting import until


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config("press"), encoding="utf-8")
    agent = Agent(load_config(path), clock=FakeClock(start_monotonic=100.0))
    try:
        yield agent
    finally:
        agent.writer.close()
        agent.store.close()


def clock_of(agent: Agent) -> FakeClock:
    assert isinstance(agent.clock, FakeClock)
    return agent.clock


def polls(agent: Agent) -> int:
    return agent.links[agent.sources[0].name].polls


def test_a_young_snapshot_is_shared_and_a_change_shows_once_it_aged(agent: Agent) -> None:
    first = agent.snapshot()
    agent.links[agent.sources[0].name].polls += 5
    assert agent.snapshot(max_age=2.0) is first  # shared: the change waits for the next one
    assert agent.snapshot().sources[0].link.polls == 5  # max_age 0: always taken now
    assert first.sources[0].link.polls == 0  # a snapshot holds copies, not the live counters
    kept = agent.snapshot(max_age=2.0)
    agent.links[agent.sources[0].name].polls += 1
    clock_of(agent).advance(1.999)
    assert agent.snapshot(max_age=2.0) is kept
    clock_of(agent).advance(0.001)
    again = agent.snapshot(max_age=2.0)
    assert again is not kept
    assert again.sources[0].link.polls == 6


def test_a_reloaded_config_takes_a_new_snapshot(agent: Agent) -> None:
    kept = agent.snapshot()
    agent.config = agent.config.model_copy()  # what a reload does last (agent/reloading.py)
    assert agent.snapshot(max_age=60.0) is not kept


async def test_the_fleet_status_renders_the_status_ticks_snapshot(agent: Agent) -> None:
    """The status file's tick takes the snapshot and the fleet status (up to one tick old)
    renders that one; the page, asking for figures of now, never gets it from there."""
    clock = clock_of(agent)
    status = agent.config.agent.data_dir / STATUS_FILE
    ticking = asyncio.create_task(keep_status_file(agent, STATUS_INTERVAL))
    try:
        await until(status.exists)
        name = agent.sources[0].name
        assert json.loads(status.read_bytes())["sources"][name]["link"]["polls"] == 0
        agent.links[name].polls = 7
        # The page's first look is of now, though the status tick took a snapshot just now.
        assert (await StateBuilder(agent).figures())["sources"][0]["polls"] == 7
        agent.links[name].state = "connected"
        clock.advance(1.5)  # the latest snapshot is 1.5 s old
        assert (await agent.fleet_status())["sources"][name] == "connecting"  # shared
        # A look at most 1 s old at the figures the fleet status just built from a 1.5 s old
        # snapshot: of now.
        assert agent._state is not None  # the fleet status's builder (no page here)
        assert (await agent._state.figures(max_age=1.0))["sources"][0]["state"] == "connected"
        agent.links[name].state = "lost"
        clock.advance(0.5)  # the status tick's turn: a new snapshot, the figures of now
        await until(lambda: json.loads(status.read_bytes())["sources"][name]["link"]["polls"])
        clock.advance(2.0)  # the fleet's figures are a tick old now: built again, shared
        assert (await agent.fleet_status())["sources"][name] == "lost"
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)


def test_the_status_tick_falls_halfway_between_the_fastest_links_polls() -> None:
    assert status_phase([1.0, 0.1], 2.0) == 0.05
    assert status_phase([1.0], 2.0) == 0.5
    assert status_phase([0.0, 5.0], 2.0) == 0.5  # back to back has no grid; 2.5 s wraps
    assert status_phase([], 2.0) == 0.0


async def test_the_status_file_is_written_on_its_grid_at_its_phase(agent: Agent) -> None:
    clock = clock_of(agent)  # at 100.0: the grid's points are 100.5, 102.5, ...
    status = agent.config.agent.data_dir / STATUS_FILE
    name = agent.sources[0].name

    def written() -> int:
        return int(json.loads(status.read_bytes())["sources"][name]["link"]["polls"])

    ticking = asyncio.create_task(keep_status_file(agent, 2.0, phase=0.5))
    try:
        await until(status.exists)  # at once, at start
        agent.links[name].polls = 4
        # At 100.5 the tick renders the snapshot taken at start (half an interval old: shared).
        await clock.run_until(102.499)
        assert written() == 0  # nothing at 102.0, two seconds after the start
        await clock.run_until(102.5)
        await until(lambda: written() == 4)
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)

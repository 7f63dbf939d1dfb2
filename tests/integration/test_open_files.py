"""The open-files limit: `lineside run` raises its soft RLIMIT_NOFILE when the config needs more,
says so in one log line, and then opens every PLC connection.

The agent is started with a soft limit of 64 (the simulator and this test keep the normal one)
and 120 Modbus TCP sources, each its own connection to one simulated PLC: a proportional copy
of 1,000 connections under a soft limit of 1024 (`make bench` runs that one, benchmarks C1000).
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.openfiles import BASE, CAP, Raise, needed, plan
from benchmarks.workloads import Workload, contiguous_float32, write_agent_config
from firmware_sim.image import RegisterImage
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer

SOURCES = 120
LOW_SOFT_LIMIT = 64
INFINITY = resource.RLIM_INFINITY


def test_enough_is_left_alone() -> None:
    assert plan(1024, 524288, 1000) is None
    assert plan(INFINITY, INFINITY, 10**6) is None


def test_a_short_soft_limit_goes_to_the_hard_one_capped() -> None:
    assert plan(1024, 524288, 1256) == Raise(CAP, short=False)
    assert plan(1024, 4096, 1256) == Raise(4096, short=False)
    assert plan(1024, INFINITY, 1256) == Raise(CAP, short=False)
    # A need beyond the cap gets what it needs, where the hard limit allows.
    assert plan(1024, INFINITY, CAP + 5) == Raise(CAP + 5, short=False)


def test_a_hard_limit_below_the_need_is_raised_to_and_reported_short() -> None:
    assert plan(64, 300, 400) == Raise(300, short=True)
    assert plan(1024, 1024, 1256) == Raise(1024, short=True)


def test_the_need_counts_every_source(tmp_path: Path) -> None:
    workload = Workload("fd", "fd", SOURCES, contiguous_float32(2), 0.2)
    config = load_config(write_agent_config(workload, [502] * SOURCES, tmp_path))
    assert needed(config) == BASE + SOURCES


def _low_soft_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT_LIMIT, hard))


@pytest.mark.slow
@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 4 * (BASE + SOURCES),
    reason="the hard open-files limit is too low to raise towards",
)
async def test_run_raises_the_limit_and_opens_every_connection(tmp_path: Path) -> None:
    server = ModbusTcpServer({1: Unit(RegisterImage(size=64))})
    port = await server.start()
    try:
        workload = Workload("fd", "fd", SOURCES, contiguous_float32(2), 0.2)
        config = write_agent_config(workload, [port] * SOURCES, tmp_path)
        stats = tmp_path / "stats.json"
        agent = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "agent", "run", "-c", str(config)),
            *("--duration", "3s", "--stats", str(stats)),
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_low_soft_limit,
        )
        _, err = await asyncio.wait_for(agent.communicate(), 120)
    finally:
        await server.stop()
    log = err.decode()
    assert agent.returncode == 0, log
    raised = re.findall(r"open files: soft limit raised (\d+) → (\d+)", log)
    assert len(raised) == 1, log
    assert int(raised[0][0]) == LOW_SOFT_LIMIT and int(raised[0][1]) >= BASE + SOURCES
    assert "Too many open files" not in log
    sources = json.loads(stats.read_text())["sources"]
    assert len(sources) == SOURCES
    assert all(s["responses"] > 0 for s in sources.values()), log[-3000:]
    assert server.stats.connections >= SOURCES

"""A PLC that answers every read with an exception: the reason reaches the page, `/readyz`,
`/metrics`, `lineside status` and the log, and "last good" stays where the last good reading
was, against a real agent polling the simulated plant."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent.status import collect
from tests.agent.web.running import running_agent
from tests.agent.web.test_server import samples
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

REASON = "illegal data address (02)"


def lineside(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
async def test_every_read_answered_with_exception_02(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lineside")
    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        agent = run.agent
        link = agent.links["press1-plc"]
        await until(lambda: link.last_good_ns > 0)
        run.plant.units["press1"].faults.set("exception", code=2)
        press1 = next(s for s in agent.sources if s.name == "press1-plc")
        await until(lambda: bool(agent.bad_reasons(press1)))
        last_good = link.last_good_ns
        polls = link.polls
        await until(lambda: link.polls >= polls + 5)  # five more polls, every reading bad
        assert link.last_good_ns == last_good
        assert link.state == "connected"
        state = (await client.get("/api/state", params={"machine": "press1"})).json()
        ready = await client.get("/readyz")
        metrics = samples((await client.get("/metrics")).text)
        data_dir = agent.config.agent.data_dir
        await until(
            lambda: bool(
                json.loads((data_dir / "status.json").read_text())["sources"]["press1-plc"][
                    "bad_reasons"
                ]
            )
        )
        report = collect(data_dir)
        table = await asyncio.to_thread(lineside, "status", "--data", str(data_dir))
        run.plant.units["press1"].faults.clear()
        await until(lambda: not agent.bad_reasons(press1))
        assert link.last_good_ns > last_good
    sources = {s["name"]: s for s in state["sources"]}
    source = sources["press1-plc"]
    read = agent.tags_of_source("press1-plc")  # die_id, a text tag, too: read in a request
    assert source["bad_reasons"] == {REASON: read} and source["bad_tags"] == read
    assert source["problem"] == f"{read} of {read} tags bad: {REASON}"
    assert sources["press2-plc"]["problem"] is None
    values = {v["tag"]: v for v in state["values"]}
    assert values["part_count"]["quality"] == "bad" and values["part_count"]["reason"] == REASON
    assert ready.status_code == 503
    assert ready.json()["reasons"] == [f"source press1-plc: {source['problem']}"]
    bad = ("lineside_source_bad_tags", (("reason", REASON), ("source", "press1-plc")))
    assert metrics[bad] == read
    press2 = [k for k in metrics if k[0] == "lineside_source_bad_tags" and "press2" in str(k)]
    assert not press2
    assert report["agent"]["sources"]["press1-plc"]["bad_reasons"] == {REASON: read}
    assert table.returncode == 0, table.stderr
    assert f"source press1-plc: connected; {read} of {read} tags bad: {REASON}" in table.stdout
    # The log: one line when the reason came, one when it went, not one per poll.
    lines = [r.getMessage() for r in caplog.records if r.name == "lineside.source"]
    came = [line for line in lines if line.startswith("press1-plc") and f"bad: {REASON}" in line]
    went = [line for line in lines if line.startswith("press1-plc") and "good again" in line]
    assert len(came) == 1 and len(went) == 1, lines

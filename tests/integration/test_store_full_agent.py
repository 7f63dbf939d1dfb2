"""A full store while the agent runs: polling and the page go on, the alarm shows everywhere,
readings wait in memory up to a bound and are then dropped with a count, the store takes
writes again without a restart, and a stop is honoured while it is full.

The store is made full for real: SQLite's `max_page_count` on the writer's connection gives a
real SQLITE_FULL on every commit that needs one more page (the same error as a full disk, on
any machine, without root). The status file gets a real ENOSPC from /dev/full. `lineside run`
on a real 5 MiB tmpfs is in test_full_disk_soak.py (root only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.config import load_config
from agent.model import EventKind
from agent.runtime import STATUS_FILE, Agent
from agent.starter import plant_config, plant_machines
from agent.status import collect
from agent.status_file import write_status
from agent.store import Store, db_path
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.waiting import until

BOUND = 600  # readings held in memory while the store is full (store.max_pending)


@dataclass
class Live:
    agent: Agent
    stop: asyncio.Event
    task: asyncio.Task[None]
    url: str
    data: Path

    def polls(self) -> int:
        return sum(link.polls for link in self.agent.links.values())

    def fill(self) -> None:
        """No page more for the store: every commit that needs one fails with SQLITE_FULL."""
        with contextlib.closing(sqlite3.connect(db_path(self.data))) as conn:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        self.agent.writer.set_max_page_count(pages)

    def make_room(self) -> None:
        self.agent.writer.set_max_page_count(1 << 30)


@contextlib.asynccontextmanager
async def live_agent(tmp_path: Path) -> AsyncIterator[Live]:
    """The agent polling the simulated press line every 100 ms, its page on port 0; on exit it
    is stopped with a bounded wait (a hang fails the test instead of holding it)."""
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as sim:
        path = tmp_path / "lineside.toml"
        text = plant_config(plant_machines(sim.endpoints()), poll_interval="100ms", report="all")
        store = f"[store]\nmax_pending = {BOUND}\n"
        path.write_text(f"{text}\n{store}\n[web]\nport = 0\n", encoding="utf-8")
        agent = Agent(load_config(path))
        web = await agent.start_web()
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        live = Live(agent, stop, task, web.url, agent.config.agent.data_dir)
        try:
            await until(lambda: all(link.polls > 0 for link in agent.links.values()))
            yield live
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


async def polled_on(live: Live, polls: int = 10) -> None:
    """Wait until the agent has polled `polls` more times (fails after 15 s)."""
    start = live.polls()
    await until(lambda: live.polls() >= start + polls)
    assert not live.task.done()


@pytest.mark.slow
async def test_a_full_store_raises_the_alarm_and_polling_and_the_page_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lineside")
    async with live_agent(tmp_path) as live, httpx.AsyncClient(base_url=live.url) as client:
        live.fill()
        await until(lambda: live.agent.writer.statistics().store_full)
        await polled_on(live)
        ready = await client.get("/readyz")
        state = (await client.get("/api/state")).json()
        # `lineside status` reads what the agent writes next to the store every two seconds.
        await until(lambda: collect(live.data)["agent"]["store_full"] is True, 10)
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agent", "status", "--data", str(live.data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        await polled_on(live)
    assert ready.status_code == 503
    assert any(r.startswith("store is full (the disk is full") for r in ready.json()["reasons"])
    assert state["store"]["store_full"] is True
    assert "the disk is full" in state["store"]["full_reason"]
    assert shown.returncode == 0, shown.stderr
    assert "ALARM: the store is full (the disk is full" in shown.stdout
    assert "agent: running" in shown.stdout
    logged = [r for r in caplog.records if r.name == "lineside.store"]
    assert logged[0].levelno == logging.ERROR
    assert logged[0].getMessage().startswith("store: full: the disk is full")


@pytest.mark.slow
async def test_readings_beyond_the_bound_are_dropped_and_counted_and_the_store_recovers(
    tmp_path: Path,
) -> None:
    async with live_agent(tmp_path) as live, httpx.AsyncClient(base_url=live.url) as client:
        writer = live.agent.writer
        live.fill()
        await until(lambda: writer.statistics().dropped_readings > 0)
        full = writer.statistics()
        assert full.store_full and 0 < full.pending_readings <= BOUND
        await polled_on(live)

        live.make_room()  # no restart: the writer's next try finds room
        await until(lambda: not writer.statistics().store_full)
        written = writer.statistics().readings_written
        await until(lambda: writer.statistics().readings_written > written)  # polling goes on
        async with asyncio.timeout(15):  # ready again: nothing left for /readyz to say
            while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        await writer.flush()
        dropped = writer.statistics().dropped_readings
    with Store(live.data) as store:
        gaps = store.read_gaps(0, 100)
        alarms = [e for e in store.read_events(0, 10_000) if e.kind == EventKind.ALARM]
    assert [(g.reason, g.first_seq) for g in gaps] == [("not stored: full", None)]
    assert gaps[0].readings == dropped >= full.dropped_readings
    # Stored once there was room: the alarm that was raised, then the one that cleared it.
    assert [(a.data["alarm"], a.data["active"]) for a in alarms] == [
        ("store_full", True),
        ("store_full", False),
    ]
    assert "the disk is full" in alarms[0].data["reason"]
    assert alarms[1].data["dropped_readings"] == dropped


@pytest.mark.slow
async def test_stop_is_honoured_while_the_store_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lineside.agent")
    async with live_agent(tmp_path) as live:
        live.fill()
        await until(lambda: live.agent.writer.statistics().store_full)
        live.stop.set()
        # Bounded: the drain gives a store that takes no writes a few seconds, then stops.
        await asyncio.wait_for(asyncio.shield(live.task), 15)
    assert live.task.exception() is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("stopped; the store took no writes (the disk is full" in m for m in messages)
    assert not any("stopped, store drained" in m for m in messages)


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")


@needs_dev_full
async def test_a_status_file_on_a_full_disk_stops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lineside.agent")
    data = tmp_path / "data"
    data.mkdir()
    # The first write of the status file, new and in place, meets a full disk (ENOSPC). The
    # agent then removes what it wrote (the link), so the next one finds room again.
    (data / "status.tmp").symlink_to("/dev/full")
    (data / STATUS_FILE).symlink_to("/dev/full")
    async with live_agent(tmp_path) as live:
        await until(lambda: any("status file: cannot" in r.getMessage() for r in caplog.records))
        await polled_on(live, 30)  # three seconds: past the status file's next try
        written = live.agent.writer.statistics().readings_written
        await until(lambda: live.agent.writer.statistics().readings_written > written)
    warnings = [r.getMessage() for r in caplog.records if "status file" in r.getMessage()]
    assert len(warnings) == 1  # once, not every two seconds
    assert "No space left on device" in warnings[0]


@needs_dev_full
def test_on_a_full_disk_the_status_file_is_rewritten_in_place(tmp_path: Path) -> None:
    write_status(tmp_path, {"store": {"store_full": False}})
    assert (tmp_path / STATUS_FILE).stat().st_size == 4096  # padded to a block it keeps
    (tmp_path / "status.tmp").symlink_to("/dev/full")  # a new file cannot be written
    write_status(tmp_path, {"store": {"store_full": True}})
    assert json.loads((tmp_path / STATUS_FILE).read_text())["store"]["store_full"] is True
    assert collect_running(tmp_path) == {"store": {"store_full": True}}
    (tmp_path / "status.tmp").symlink_to("/dev/full")  # removed with what it held: again
    with pytest.raises(OSError, match="No space left"):  # longer than the blocks it has
        write_status(tmp_path, {"long": "x" * 5000})
    assert json.loads((tmp_path / STATUS_FILE).read_text())["store"]["store_full"] is True


def collect_running(data: Path) -> object:
    from agent.status import _running

    return _running(data / STATUS_FILE)

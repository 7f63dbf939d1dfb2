"""`lineside run` with its data_dir on a real, small filesystem (a tmpfs) that fills up.

The filesystem is mounted here (root only: the tests skip with the reason otherwise). The
short test fills it and stops the agent with SIGTERM while it is full; the soak test (`make
soak`) keeps it full for a minute, frees the space, checks that the agent recovered without a
restart and that every reading is stored or counted as dropped, then fills it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.model import EventKind
from agent.starter import plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 5 MiB tmpfs mounted for the test, unmounted after it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip() or 'not root'}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem refuses more (ENOSPC); it holds the space."""
    filler = disk / "filler"
    with filler.open("ab") as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(64 * 1024))
            f.flush()
    return filler


@dataclass
class Running:
    process: asyncio.subprocess.Process
    client: httpx.AsyncClient
    data: Path
    log: Path

    async def state(self) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.client.get("/api/state")).json()
        return answer

    async def polls(self) -> int:
        return sum(s["polls"] for s in (await self.state())["sources"])

    async def polled_on(self, polls: int, limit: float = 30.0) -> None:
        start = await self.polls()
        async with asyncio.timeout(limit):
            while await self.polls() < start + polls:  # noqa: ASYNC110 (the agent's doing)
                await asyncio.sleep(0.1)

    async def until_state(self, check: Any, limit: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(limit):
            while True:
                state = await self.state()
                if check(state):
                    return state
                await asyncio.sleep(0.1)

    async def status(self) -> str:
        """What `lineside status` shows (another process; this loop goes on meanwhile)."""
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agent", "status", "--data", str(self.data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        return shown.stdout


@contextlib.asynccontextmanager
async def lineside_run(tmp_path: Path, disk: Path, store: str = "") -> AsyncIterator[Running]:
    """`lineside run` polling the simulated press line every 100 ms into `disk`/data; its page
    on a port of its own choosing (read from its log). It is yielded once it polled."""
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as sim:
        config = tmp_path / "lineside.toml"
        text = plant_config(
            plant_machines(sim.endpoints()),
            poll_interval="100ms",
            report="all",
            data_dir=str(disk / "data"),
        )
        config.write_text(f"{text}\n{store}\n[web]\nport = 0\n", encoding="utf-8")
        log = tmp_path / "agent.log"
        with log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agent", "run", "-c", str(config), stderr=err
            )
        try:
            url = await _page_url(log)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                running = Running(process, client, disk / "data", log)
                await running.until_state(lambda s: all(x["polls"] for x in s["sources"]))
                yield running
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _page_url(log: Path) -> str:
    async with asyncio.timeout(30):
        while True:
            text = await asyncio.to_thread(log.read_text, "utf-8", "replace")
            found = re.search(r"status page on (http://\S+/)", text)
            if found:
                return found.group(1)
            await asyncio.sleep(0.05)


async def stop(running: Running, limit: float = 15.0) -> str:
    """SIGTERM, then a bounded wait: the agent must be gone well within `limit` seconds."""
    running.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(running.process.wait(), limit)
    assert running.process.returncode == 0
    text = running.log.read_text("utf-8", "replace")
    assert "Traceback" not in text
    return text


@pytest.mark.slow
async def test_on_a_full_disk_the_agent_polls_serves_and_stops_on_sigterm(
    tmp_path: Path, small_disk: Path
) -> None:
    async with lineside_run(tmp_path, small_disk) as running:
        fill(small_disk)
        await running.until_state(lambda s: s["store"]["store_full"])
        await running.polled_on(20)  # polling goes on
        ready = await running.client.get("/readyz")
        assert ready.status_code == 503
        assert any("store is full (the disk is full" in r for r in ready.json()["reasons"])
        assert "ALARM: the store is full (the disk is full" in await running.status()
        log = await stop(running)
    assert "store: full: the disk is full" in log
    assert "stopped; the store took no writes (the disk is full" in log


@pytest.mark.slow
async def test_a_start_on_a_full_disk_says_so_in_one_line(tmp_path: Path, small_disk: Path) -> None:
    """SQLite cannot even create the -shm file of a store it opens: no start, and no "damaged"
    either (it calls it a disk I/O error)."""
    async with lineside_run(tmp_path, small_disk) as running:
        await running.until_state(lambda s: s["store"]["readings_written"] > 0)
        await stop(running)
    filler = fill(small_disk)
    started = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "lineside.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    db = small_disk / "data" / "lineside.db"
    assert started.returncode == 1
    assert started.stderr.splitlines() == [
        f"lineside: {db}: cannot open the store: the disk is full (disk I/O error); free space "
        "on it and start again"
    ]
    filler.unlink()
    async with lineside_run(tmp_path, small_disk) as running:  # room again: it starts
        await running.until_state(lambda s: s["store"]["readings_written"] > 0)
        await stop(running)


@pytest.mark.soak
async def test_a_full_disk_for_a_minute_then_room_again(tmp_path: Path, small_disk: Path) -> None:
    bound = 3000  # readings held in memory: about ten seconds of polling here
    async with lineside_run(tmp_path, small_disk, f"[store]\nmax_pending = {bound}\n") as running:
        filler = fill(small_disk)
        await running.until_state(lambda s: s["store"]["store_full"])
        full_since = time.monotonic()
        while time.monotonic() - full_since < 60:  # a minute full: it polls and serves
            await running.polled_on(10)
            state = await running.state()
            assert state["store"]["store_full"] and state["store"]["pending_readings"] <= bound
            assert (await running.client.get("/readyz")).status_code == 503
        assert "ALARM: the store is full" in await running.status()
        dropped = (await running.state())["store"]["dropped_readings"]
        assert dropped > 0  # the bound was reached: new readings dropped and counted

        filler.unlink()  # room again: no restart
        await running.until_state(lambda s: not s["store"]["store_full"], 30)
        written = (await running.state())["store"]["readings_written"]
        await running.until_state(lambda s: s["store"]["readings_written"] > written)
        async with asyncio.timeout(30):
            while (await running.client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        assert "ALARM" not in await running.status()

        fill(small_disk)  # full again, and stopped while full
        await running.until_state(lambda s: s["store"]["store_full"])
        log = await stop(running)
    assert log.count("store: full: the disk is full") == 2
    assert "store: takes writes again after" in log
    (small_disk / "filler").unlink()
    figures = json.loads((small_disk / "data" / "status.json").read_text())
    with Store(small_disk / "data") as store:
        gaps = store.read_gaps(0, 1000)
        alarms = [e for e in store.read_events(0, 100_000) if e.kind == EventKind.ALARM]
        stored = sum(len(b.batch) for b in store.read_telemetry(0, 10_000_000))
    assert [(a.data["active"]) for a in alarms] == [True, False]  # the second never had room
    assert sum(g.readings for g in gaps if g.reason == "not stored: full") >= dropped
    # Every reading polled is stored, counted as dropped, or was still waiting at the stop.
    store_figures = figures["store"]
    assert figures["samples"] == (
        stored + store_figures["dropped_readings"] + store_figures["pending_readings"]
    )

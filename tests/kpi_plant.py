"""Test helpers: the simulated plant with a real Agent on simulated time, and what it stored.

The plant runs faster than real time and the agent polls it over Modbus TCP; the agent's clock
schedules on the real monotonic clock but stamps readings with the simulator's time, so a shift
on a chosen date passes in seconds and the stored windows carry that date.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.model import Event, EventKind, Quality
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import DB_NAME, Store, decode_batch
from firmware_sim.clock import ScaledClock, SimulatedWallClock
from firmware_sim.plant import MachineSpec, Plant, PlantSpec

NS = 1_000_000_000

# (scope, machine or line, window name, definition)
KpiKey = tuple[str, str, str, str]


def modbus_plant(name: str, sim: ScaledClock, *machines: MachineSpec) -> Plant:
    """The plant over Modbus TCP only (no OPC UA server, no serial pty), ticking every 4 ms."""
    spec = PlantSpec(name=name, machines=machines, ephemeral=True)
    return Plant(spec, sim, opcua=False, rtu=False, tick_interval=0.004)


def write_config(
    plant: Plant,
    tmp: Path,
    *,
    calendar: str | None = None,
    max_gap: str | None = None,
    threshold: float | None = None,
    **options: str,
) -> Path:
    """The starter's config for the running plant, stored under `tmp/data`; its path.

    `calendar` replaces the starter's [calendar] section; `max_gap` lets the state vouch for
    longer (a busy CPU may stall the poller, a test may stop the agent); `threshold` is the
    camera inspection's anomaly threshold. `options` go to `plant_config`.
    """
    text = plant_config(plant_machines(plant.endpoints()), data_dir=str(tmp / "data"), **options)
    if calendar is not None:
        # The starter writes the calendar just before the forward section.
        text = re.sub(r"\[calendar\].*?(?=# Forward)", calendar, text, flags=re.S)
    if max_gap is not None:
        text = text.replace(
            'reason = "stop_reason"', f'reason = "stop_reason"\nmax_gap = "{max_gap}"'
        )
    if threshold is not None:
        text = text.replace("threads = 1", f"threads = 1\nthreshold = {threshold}")
    path = tmp / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    return path


def clock_at(sim: ScaledClock, when: datetime, sim_s: float) -> SimulatedWallClock:
    """The agent's clock, on which the simulated second `sim_s` is the instant `when`."""
    return SimulatedWallClock(sim, int(when.timestamp()) * NS - round(sim_s * 1e9))


def wall_s(sim: ScaledClock, until_s: float) -> float:
    """Wall-clock seconds until the simulated time `until_s` (at the plant's speed)."""
    return max(0.0, (until_s - float(sim.now())) / float(sim.speed))


async def run_until(agent: Agent, sim: ScaledClock, until_s: float) -> None:
    """Run the agent until the simulated time `until_s` (or until it stops by itself)."""
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await asyncio.wait({run}, timeout=wall_s(sim, until_s))
    stop.set()
    await run


def stored_events(data_dir: Path) -> list[Event]:
    """Every event in the store, in storage order."""
    out: list[Event] = []
    with Store(data_dir) as store:
        after = 0
        while events := store.read_events(after, 1000):
            after = events[-1].seq or after
            out += events
    return out


def latest_kpis(events: Iterable[Event]) -> dict[KpiKey, dict[str, Any]]:
    """The KPI events' data, the latest revision of each window per machine or line."""
    out: dict[KpiKey, dict[str, Any]] = {}
    for e in events:
        if e.kind is not EventKind.KPI:
            continue
        d = e.data
        who = d["machine"] or d["line"] or d.get("area") or d.get("site")
        key = (d["scope"], who, d["window"]["name"], d["definition"])
        if d["revision"] >= out.get(key, {}).get("revision", -1):
            out[key] = d
    return out


def verdicts(events: Iterable[Event]) -> list[Event]:
    """The inspection verdicts (audits that older stores kept as inspection events left out)."""
    return [e for e in events if e.kind is EventKind.INSPECTION and "audit" not in e.data]


def tally(verdicts: Iterable[Event]) -> tuple[int, int, int]:
    """How many verdicts are OK, NotOK and NotDecidable."""
    values = [e.data["verdict"] for e in verdicts]
    return values.count("OK"), values.count("NotOK"), values.count("NotDecidable")


def known_intervals(
    data_dir: Path, config: Config, machine: str, epoch_ns: int
) -> list[tuple[float, float]]:
    """The simulated seconds in which the agent knew `machine`'s state, from its stored state
    readings, by the engine's rule (docs/kpi.md): a good reading vouches until the next reading
    or for `max_gap`, a bad one for nothing; a stored agent outage ends the vouching. So the
    simulator's truth can be taken over the time the agent could see."""
    kpi = next(m.kpi for m in config.machines if m.name == machine)
    assert kpi is not None
    path = config.tag_path(machine, kpi.state)
    with sqlite3.connect(data_dir / DB_NAME) as db:
        (tag_id,) = db.execute("SELECT id FROM tags WHERE path = ?", (str(path),)).fetchone()
        rows = db.execute("SELECT source, n, tag_ids, vals, quality, ts FROM telemetry")
        readings: list[tuple[int, bool]] = []
        for row in rows:
            batch = decode_batch(row[0], int(row[1]), *row[2:6])
            ts = batch.timestamps()
            for i in (batch.tag_ids == tag_id).nonzero()[0].tolist():
                readings.append((int(ts[i]), int(batch.quality[i]) != Quality.BAD))
    readings.sort()
    gap = round(kpi.max_gap * 1e9)
    out: list[tuple[float, float]] = []
    for (t, good), (after, _) in pairwise(readings):
        if good and after > t:
            end = min(after, t + gap)
            start_s, end_s = (t - epoch_ns) / 1e9, (end - epoch_ns) / 1e9
            if out and out[-1][1] == start_s:
                out[-1] = (out[-1][0], end_s)
            else:
                out.append((start_s, end_s))
    return out


def clip(
    intervals: Iterable[tuple[float, float]], t0: float, t1: float
) -> list[tuple[float, float]]:
    """The parts of `intervals` inside [t0, t1)."""
    return [(max(a, t0), min(b, t1)) for a, b in intervals if b > t0 and a < t1]

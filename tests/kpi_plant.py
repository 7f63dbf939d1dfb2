"""Test helpers: the simulated plant with a real Agent on simulated time, and what it stored.

The plant runs faster than real time and the agent polls it over Modbus TCP; the agent's clock
schedules on the real monotonic clock but stamps readings with the simulator's time, so a shift
on a chosen date passes in seconds and the stored windows carry that date.
"""

from __future__ import annotations

import asyncio
import math
import re
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any

from agent.config import Config
from agent.kpi.states import map_code, packml_category
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
    frozen_after: str = "5m",
    **options: str,
) -> Path:
    """The starter's config for the running plant, stored under `tmp/data`; its path.

    `calendar` replaces the starter's [calendar] section; `max_gap` lets the state vouch for
    longer (a busy CPU may stall the poller, a test may stop the agent); `threshold` is the
    camera inspection's anomaly threshold. `options` go to `plant_config`. `frozen_after`: the
    plant runs 1 200 times faster than real time, so a plant tick that a busy CPU holds back by
    50 ms leaves the registers still for a simulated minute (the default frozen_after); five
    minutes is 250 ms.
    """
    text = plant_config(plant_machines(plant.endpoints()), data_dir=str(tmp / "data"), **options)
    if calendar is not None:
        # The starter writes the calendar just before the forward section.
        text = re.sub(r"\[calendar\].*?(?=# Forward)", calendar, text, flags=re.S)
    if max_gap is not None:
        text = text.replace(
            'reason = "stop_reason"', f'reason = "stop_reason"\nmax_gap = "{max_gap}"'
        )
    text = re.sub(r"(\[machines\.kpi\]\n)", f'\\1frozen_after = "{frozen_after}"\n', text)
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
        who = str(d["machine"] or d["line"] or d.get("area") or d.get("site"))
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
    or for `max_gap`, a bad one for nothing; a stored agent outage ends the vouching; frozen
    values (`frozen_stretches`) are not known. So the simulator's truth can be taken over the
    time the agent could see."""
    kpi = next(m.kpi for m in config.machines if m.name == machine)
    assert kpi is not None
    readings = _readings(data_dir, config, machine)
    state = readings[config.tag_path(machine, kpi.state)]
    gap = round(kpi.max_gap * 1e9)
    out: list[tuple[float, float]] = []
    for (t, value), (after, _) in pairwise(state):
        if math.isfinite(value) and after > t:
            end = min(after, t + gap)
            start_s, end_s = (t - epoch_ns) / 1e9, (end - epoch_ns) / 1e9
            if out and out[-1][1] == start_s:
                out[-1] = (out[-1][0], end_s)
            else:
                out.append((start_s, end_s))
    frozen = [((a - epoch_ns) / 1e9, (b - epoch_ns) / 1e9) for a, b in frozen_stretches(
        readings, config, machine)]  # fmt: skip
    return _minus(out, frozen)


def _readings(data_dir: Path, config: Config, machine: str) -> dict[str, list[tuple[int, float]]]:
    """Every stored reading of the machine's tags by path, in time order (NaN: bad quality)."""
    prefix = config.tag_path(machine, "")
    with sqlite3.connect(data_dir / DB_NAME) as db:
        paths = dict(db.execute("SELECT id, path FROM tags WHERE path LIKE ?", (prefix + "%",)))
        rows = db.execute("SELECT source, n, tag_ids, vals, quality, ts FROM telemetry")
        out: dict[str, list[tuple[int, float]]] = {p: [] for p in paths.values()}
        for row in rows:
            batch = decode_batch(row[0], int(row[1]), *row[2:6])
            ts = batch.timestamps()
            for i, tag_id in enumerate(batch.tag_ids.tolist()):
                if tag_id in paths:
                    good = int(batch.quality[i]) != Quality.BAD
                    out[paths[tag_id]].append((int(ts[i]), float(batch.values[i]) if good
                                               else math.nan))  # fmt: skip
    for series in out.values():
        series.sort()
    return out


def frozen_stretches(
    readings: dict[str, list[tuple[int, float]]], config: Config, machine: str
) -> list[tuple[int, int]]:
    """[last change, next change) wherever the machine, running, answered the same values for
    longer than its frozen_after (docs/kpi.md, Frozen values), recomputed from the store."""
    kpi = next(m.kpi for m in config.machines if m.name == machine)
    assert kpi is not None
    limit = round(kpi.frozen_after_s() * 1e9)
    state_path = config.tag_path(machine, kpi.state)
    mode_path = config.tag_path(machine, kpi.unit_mode) if kpi.unit_mode else None
    merged = sorted((t, path, v) for path, series in readings.items() for t, v in series)
    last: dict[str, float] = {}
    changed = 0
    running = False  # at the last change
    out: list[tuple[int, int]] = []
    frozen_since: int | None = None
    # An instant at a time: the same values repeated at an instant where another one moved
    # are no freeze.
    for t, group in groupby(merged, key=lambda r: r[0]):
        moved = False
        for _, path, value in group:
            if not math.isnan(value) and last.get(path) != value:
                last[path], moved = value, True
        if moved:
            if frozen_since is not None:
                out.append((frozen_since, t))
                frozen_since = None
            changed = t
            state = last.get(state_path)
            mode = last.get(mode_path) if mode_path else None
            if state is None:
                running = False
            elif kpi.packml:
                running = packml_category(int(state), None if mode is None else int(mode)) == (
                    "running"
                )
            else:
                running = map_code(state, kpi.code_table()) == "running"
        elif frozen_since is None and running and t - changed > limit:
            frozen_since = changed
    return out


def _minus(
    intervals: list[tuple[float, float]], holes: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out = []
    for a, b in intervals:
        pieces = [(a, b)]
        for h0, h1 in holes:
            pieces = [
                p for x, y in pieces for p in ((x, min(y, h0)), (max(x, h1), y)) if p[0] < p[1]
            ]
        out += pieces
    return out


def clip(
    intervals: Iterable[tuple[float, float]], t0: float, t1: float
) -> list[tuple[float, float]]:
    """The parts of `intervals` inside [t0, t1)."""
    return [(max(a, t0), min(b, t1)) for a, b in intervals if b > t0 and a < t1]

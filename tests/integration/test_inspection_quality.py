"""End to end: the simulated camera over the simulated press, its verdicts as the press's quality.

The real Agent polls the simulated press over Modbus TCP (faster than real time, timestamps in
simulated time as in test_kpi_e2e); a `sim` inspection takes one generated metal part image per
stroke (the rising edge of `part_present`) and judges it with a small real ONNX model. The
press's KPI names the inspection, so its good and reject counts must be exactly the OK and NotOK
verdicts stored in the log: in the hour window that closed during the run and in the live shift.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config import load_config
from agent.runtime import Agent
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import MachineSpec
from tests.kpi_plant import (
    clock_at,
    latest_kpis,
    modbus_plant,
    stored_events,
    tally,
    verdicts,
    write_config,
)
from tests.vision import onnx_graphs as graphs

SPEED = 20.0  # a stroke (2.5 s) every 125 ms: part_present is high for ~60 ms, polled every 10
START = datetime(2026, 11, 23, 8, 58, 30, tzinfo=ZoneInfo("Asia/Shanghai"))  # in shift A
RUN_S = 150.0  # simulated seconds: across the 09:00 hour boundary
HOUR_END_NS = int(datetime(2026, 11, 23, 9, tzinfo=START.tzinfo).timestamp()) * 1_000_000_000


@pytest.mark.timeout(120)
@pytest.mark.slow
async def test_press_quality_follows_the_camera_verdicts(tmp_path: Path) -> None:
    model = graphs.anomaly_model(tmp_path / "surface.onnx")
    sim = ScaledClock(SPEED)
    press1 = MachineSpec(name="press1", kind="press", seed=21)
    async with modbus_plant("camera", sim, press1) as plant:
        # This model scores a part by its brightest spot: a threshold that passes most parts.
        path = write_config(
            plant, tmp_path, threshold=0.65, camera_model=str(model), camera_poll="10ms"
        )
        config = load_config(path)
        [press] = config.machines
        assert press.kpi is not None and press.kpi.inspection == "press1-surface"
        clock = clock_at(sim, START, sim.now())
        agent = Agent(config, clock=clock)
        start_parts = None
        end = sim.now() + RUN_S
        stop = asyncio.Event()
        run = asyncio.create_task(agent.run(stop))
        while sim.now() < end and not run.done():
            if start_parts is None and agent.samples:
                start_parts = agent.latest_values[agent.tags.id_of("press1", "part_count")]
            await asyncio.sleep(0.05)
        stop.set()
        await run
        now_ns = clock.time_ns()
    assert agent.kpi is not None
    live = agent.kpi.snapshot(now_ns)
    figures = agent.inspections()["press1-surface"]

    events = stored_events(tmp_path / "data")
    judged = verdicts(events)
    ok, not_ok, undecided = tally(judged)
    assert ok > 0 and not_ok > 0, (ok, not_ok)  # the threshold gives both kinds
    assert figures["inspected"] == len(judged) and figures["model_errors"] == 0
    # The camera saw the press's strokes: one frame per part, give or take the edges of the run.
    made = live["machines"]["press1"]["components"]["produced"]
    assert made > 20
    assert abs(figures["triggers"] - made) <= max(3, 0.1 * made), (figures, made)

    # The live shift: good and reject are the verdicts, NotDecidable apart.
    shift = live["machines"]["press1"]
    c = shift["components"]
    assert (c["good"], c["reject"], c["not_decidable"]) == (ok, not_ok, undecided)
    assert shift["classic"]["quality"] == pytest.approx(ok / (ok + not_ok), abs=1e-12)

    # The hour that closed at 09:00, as stored (latest revision): the verdicts stamped in it.
    hour = latest_kpis(events)[("machine", "press1", "2026-11-23T08", "classic")]
    before = tally([e for e in judged if e.ts_ns < HOUR_END_NS])
    h = hour["components"]
    assert (h["good"], h["reject"], h["not_decidable"]) == before
    assert sum(before[:2]) > 0 and h["total"] == before[0] + before[1]
    assert hour["kpis"]["quality"] == pytest.approx(before[0] / (before[0] + before[1]))

"""The real Agent with `[[inspections]]`: verdicts stored as events next to the PLC readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.model import EventKind
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.vision import onnx_graphs as graphs
from tests.vision.parts import write_parts


async def test_agent_stores_verdict_events_and_contains_a_broken_model(tmp_path: Path) -> None:
    write_parts(tmp_path / "frames", [False, True, False, False, True])
    graphs.anomaly_model(tmp_path / "surface.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a protobuf model")
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        machines = plant_machines(plant.endpoints())
        port = machines[0].port
        text = 'write_allow = ["press1:co:7"]\n' + plant_config(
            machines, poll_interval="100ms", report="all"
        )
        text += """
[[inspections]]
name = "surface"
machine = "press1"
source = { type = "folder", path = "frames" }
model = "surface.onnx"
save = { dir = "rejects", good_sample = 0.0 }
write_back = { address = "co:7" }

[[inspections]]
name = "broken"
machine = "press2"
source = { type = "folder", path = "frames" }
model = "broken.onnx"
"""
        path = tmp_path / "lineside.toml"
        path.write_text(text, encoding="utf-8")
        agent = Agent(load_config(path))
        await agent.run(duration=1.5)
        coil = plant.units["press1"].image.coils[7]
    with Store(tmp_path / "data") as store:
        events = store.read_events(0, 1000)
    verdicts = [e.data for e in events if e.kind is EventKind.INSPECTION]
    assert [(v["source"], v["verdict"]) for v in verdicts] == [
        ("part00.jpg", "OK"),
        ("part01.jpg", "NotOK"),
        ("part02.jpg", "OK"),
        ("part03.jpg", "OK"),
        ("part04.jpg", "NotOK"),
    ]
    assert all(v["model"] == "surface.onnx" for v in verdicts)
    # Every write to the PLC is audited in the store, in its own kind, right after its verdict.
    audits = [e.data for e in events if e.kind is EventKind.AUDIT]
    assert [(a["result"], a["target"], a["value"]) for a in audits] == [
        ("ok", "press1:co:7", 0),
        ("ok", "press1:co:7", 1),
        ("ok", "press1:co:7", 0),
        ("ok", "press1:co:7", 0),
        ("ok", "press1:co:7", 1),
    ]
    assert [a["verdict"] for a in audits] == [v["verdict"] for v in verdicts]
    assert coil == 1 and port > 0  # the last part was a reject
    assert len(list((tmp_path / "rejects").iterdir())) == 2
    figures = agent.statistics()
    broken = figures["inspections"]["broken"]
    assert broken["model_errors"] == 1 and broken["inspected"] == 0
    assert "broken.onnx: not a usable ONNX model" in broken["last_error"]
    assert figures["inspections"]["surface"]["latest"]["source"] == "part04.jpg"
    # polling went on meanwhile
    assert figures["sources"]["press1-plc"]["polls"] >= 10
    assert figures["store"]["readings_written"] > 0


@pytest.mark.slow
async def test_a_saturated_inspection_never_delays_plc_polling(tmp_path: Path) -> None:
    # A camera at 200 frames/s into a model whose every inference takes longer than the poll
    # interval: inspection cannot keep up and drops frames, while both PLCs are polled on time
    # (had an inference run on the event loop, every poll behind it would have overrun).
    graphs.heavy_model(tmp_path / "heavy.onnx", layers=200)
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        text = plant_config(plant_machines(plant.endpoints()), poll_interval="50ms")
        text += """
[[inspections]]
name = "line-camera"
machine = "press2"
source = { type = "sim", seed = 3, width = 320, height = 240 }
trigger = { type = "fps", fps = 200 }
model = "heavy.onnx"
"""
        path = tmp_path / "lineside.toml"
        path.write_text(text, encoding="utf-8")
        agent = Agent(load_config(path))
        await agent.run(duration=3.0)
    figures = agent.statistics()
    camera = figures["inspections"]["line-camera"]
    assert camera["inspected"] >= 1 and camera["dropped"] > camera["inspected"], camera
    for source in ("press1-plc", "press2-plc"):
        group = figures["sources"][source]["groups"]["50ms"]
        assert group["ticks"] >= 54, (source, group)  # 3 s at 50 ms
        # Counted, not timed: fewer inferences than polls ran in the same three seconds, so an
        # inference lasts longer than a poll interval (four or five on an idle machine): had
        # one run on the event loop, each would have skipped at least one tick of every PLC.
        assert camera["inspected"] < group["ticks"], (camera, group)
        # Skipped ticks stay far fewer than inferences. Not none: on a loaded machine the
        # start-up (the KPI's first fold, the page) may hold the loop past one 50 ms tick.
        assert group["overruns"] * 4 < camera["inspected"], (source, group, camera)

"""Text tags end to end: the press's `die_id` (a Modbus string) read from the simulated plant,
stored as `text` events, exported, on the page's state, and forwarded as the tag's value by a
real mosquitto (MQTT UNS and Sparkplug B, decoded by pysparkplug) and a real HTTP MES."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pysparkplug
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.export import Labels, export_readings, write_csv, write_jsonl
from agent.kpi.config import product_code
from agent.kpi.period import select
from agent.kpi.replay import replay
from agent.kpi.timeline import Timeline
from agent.model import EventKind, Quality
from agent.oneshot import read_once
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import Store
from agent.texts import NOT_ASCII
from agent.values import models_by_path
from agent.web.state import StateBuilder
from firmware_sim.clock import ScaledClock
from firmware_sim.image import Table
from firmware_sim.machines.press import DIES
from firmware_sim.plant import Plant, load_plant
from tests.brokers import BrokerFactory
from tests.connectors.http.mes_server import MesServer

PRESS1 = "demo/stamping/body-line-1/press1"


class RawReader:
    """Every message on `topics`, kept as (topic, payload bytes)."""

    def __init__(self, host: str, port: int, *topics: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sinks(broker_host: str, broker_port: int, mes_url: str) -> str:
    broker = f'host = "{broker_host}"\nport = {broker_port}\n'
    return (
        f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\n{broker}topic_prefix = "plant"\n'
        f'\n[[sinks]]\nname = "scada"\ntype = "sparkplug"\n{broker}'
        'group_id = "plant"\nedge_node_id = "edge-1"\n'
        f'\n[[sinks]]\nname = "mes"\ntype = "http"\nurl = "{mes_url}"\n'
    )


async def test_die_id_is_read_stored_exported_shown_and_forwarded(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    broker = mosquitto()
    reader = RawReader(broker.host, broker.port, "plant/#", "spBv1.0/plant/+/edge-1/+")
    spec = load_plant("press").with_ephemeral_ports()
    try:
        with MesServer().running() as mes:
            # Five times real time: the press strokes, so its KPI tags have readings.
            async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as plant:
                path = tmp_path / "lineside.toml"
                path.write_text(
                    plant_config(plant_machines(plant.endpoints()), poll_interval="100ms")
                    + sinks(broker.host, broker.port, mes.url)
                )
                config = load_config(path)
                agent = Agent(config)
                await agent.run(duration=2.0)
                truth = str(plant.machines["press1"].values()["die_id"])
                # `lineside read` shows the string too, and waits for no string it cannot get.
                once = await read_once(config, "*/press1/die_id")
            stored = mes.stored()
    finally:
        reader.close()
    assert truth in DIES
    polls = agent.statistics()["sources"]["press1-plc"]["polls"]

    # Read once per poll, stored once per change: the die did not change in two seconds.
    with Store(tmp_path / "data") as store:
        texts = [e for e in store.read_events(0, 1000) if e.kind is EventKind.TEXT]
    press1 = [e for e in texts if e.data["tag"] == f"{PRESS1}/die_id"]
    assert polls >= 5
    assert [(e.data["value"], e.data["quality"], e.machine) for e in press1] == [
        (truth, "good", "press1")
    ]

    # On the page (/api/state's values): the string, good.
    row = next(v for v in agent_values(agent, "press1") if v["tag"] == "die_id")
    assert (row["value"], row["text"], row["quality"]) == (truth, truth, "good")

    # Exported from the store, after the agent stopped: the string is the row's value.
    rows = list(export_readings(tmp_path / "data", tag_glob="*/press1/die_id"))
    assert [(r.path, r.text, r.quality) for r in rows] == [
        (f"{PRESS1}/die_id", truth, Quality.GOOD)
    ]
    labels = Labels(models_by_path(config))
    out = io.StringIO()
    write_csv(rows, out, labels)
    assert out.getvalue().splitlines()[1].split(",")[2:5] == [f"{PRESS1}/die_id", truth, "good"]
    out = io.StringIO()
    write_jsonl(rows, out, labels)
    assert orjson.loads(out.getvalue())["value"] == truth

    # `lineside read`: the string, good.
    assert [(r.tag.name, r.text, r.quality) for r in once.readings] == [
        ("die_id", truth, Quality.GOOD)
    ]

    # MQTT UNS: the tag's value on its machine's telemetry topic.
    uns = [
        orjson.loads(p)
        for t, p in reader.messages
        if t == f"plant/{PRESS1}/telemetry" and b'"die_id"' in p
    ]
    assert [m["values"]["die_id"] for m in uns] == [{"value": truth, "quality": "good", "unit": ""}]

    # Sparkplug B: a String metric in press1's DBIRTH, its value in a DDATA.
    birth: Any = pysparkplug.DBirth.decode(
        next(p for t, p in reader.messages if "/DBIRTH/" in t and t.endswith("/press1"))
    )
    die = next(m for m in birth.metrics if m.name == "die_id")
    assert die.datatype == pysparkplug.DataType.STRING
    values = [
        m.value
        for t, p in reader.messages
        if "/DDATA/" in t and t.endswith("/press1")
        for m in pysparkplug.DData.decode(p, birth=birth).metrics
        if m.name == "die_id"
    ]
    assert truth in [die.value, *values]  # in the birth if the string came before it

    # The KPIs: the die is the product of the press's time (`lineside oee` and the report
    # replay the stored strings beside the readings).
    timeline = Timeline()
    now = time.time_ns()
    replay(config, select(config, "current", "hour", now), now, trace=timeline)
    products = {s.product for s in timeline.machines["press1"]}
    assert products == {product_code(truth)}
    assert config.machines[0].kpi is not None
    assert config.machines[0].kpi.product_label(product_code(truth)) == truth

    # HTTP: an event record of kind text with the reading at its top.
    records = [r for (_, stream, _), r in stored.items() if stream == "events"]
    text_records = [r for r in records if r["kind"] == "text" and r["machine"] == "press1"]
    assert [(r["tag"], r["value"], r["quality"]) for r in text_records] == [
        (f"{PRESS1}/die_id", truth, "good")
    ]


def agent_values(agent: Agent, machine: str) -> list[dict[str, Any]]:
    """The page's values of `machine`, as `/api/state` answers them."""
    return StateBuilder(agent).values(machine)


async def test_a_malformed_string_is_kept_with_its_bytes_replaced_and_says_so(
    tmp_path: Path,
) -> None:
    # die_id: hr:20, 10 characters in 5 registers. Bytes that are not ASCII and no NUL at the
    # end: every character is kept, the others as U+FFFD, and the reading says why.
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        unit = plant.units["press1"]
        unit.faults.set("freeze")  # the plant no longer overwrites the registers set here
        unit.image.set_registers(Table.HOLDING_REGISTERS, 20, b"DIE\xb0\xff-42XY")
        path = tmp_path / "lineside.toml"
        path.write_text(plant_config(plant_machines(plant.endpoints()), poll_interval="100ms"))
        await Agent(load_config(path)).run(duration=0.8)
        await Agent(load_config(path)).run(duration=0.5)  # the stored strings survive a restart
    rows = list(export_readings(tmp_path / "data", tag_glob="*/press1/die_id"))
    assert len(rows) == 2  # one per run: each run stores the string it first reads
    for row in rows:
        assert (row.text, row.quality, row.reason) == (
            "DIE\ufffd\ufffd-42XY",
            Quality.UNCERTAIN,
            NOT_ASCII,
        )

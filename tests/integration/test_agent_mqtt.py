"""The agent end to end into a real mosquitto: plant → Modbus → SQLite → MQTT (UNS topics)."""

import threading
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.brokers import BrokerFactory


class Reader:
    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, orjson.loads(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_agent_publishes_every_poll_to_the_uns(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    broker = mosquitto()
    reader = Reader(broker.host, broker.port, "plant/#")
    try:
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
            machines = plant_machines(plant.endpoints())
            path = tmp_path / "lineside.toml"
            path.write_text(
                plant_config(machines, poll_interval="100ms", report="all")
                + f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\n'
                + f'port = {broker.port}\ntopic_prefix = "plant"\n'
            )
            agent = Agent(load_config(path))
            await agent.run(duration=1.5)
        with Store(tmp_path / "data") as store:
            acked = store.cursor("uns", "telemetry")
            last = store.stats().streams["telemetry"].last_seq
    finally:
        reader.close()
    telemetry = [(t, p) for t, p in reader.messages if t.endswith("/telemetry")]
    seqs = sorted({p["seq"] for _, p in telemetry})
    assert acked > 0
    assert seqs[:acked] == list(range(1, acked + 1)), "every acknowledged record arrived"
    assert acked >= last - 4, "the forwarder keeps up with two machines at 10 Hz"
    topics = {t for t, _ in telemetry}
    assert topics == {
        "plant/demo/stamping/body-line-1/press1/telemetry",
        "plant/demo/stamping/body-line-1/press2/telemetry",
    }
    sample = telemetry[-1][1]
    assert sample["agent_id"] == "demo-edge-1"
    assert sample["stream"] == "telemetry"
    assert "die_temp" in sample["values"]
    events = [p for t, p in reader.messages if "/event/" in t]
    assert any(p.get("data", {}).get("state") == "connected" for p in events)

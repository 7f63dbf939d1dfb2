"""The agent end to end into a real mosquitto as a Sparkplug B edge node, run twice."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pysparkplug
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.brokers import BrokerFactory


class NodeWatcher:
    """A host's view of the node's births and deaths: (kind, bdSeq, QoS as delivered)."""

    def __init__(self, host: str, port: int) -> None:
        self.seen: list[tuple[str, int, int]] = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe("spBv1.0/plant/+/edge-1", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        kind = str(pysparkplug.Topic.from_str(message.topic).message_type)
        if kind not in ("NBIRTH", "NDEATH"):
            return  # NDATA (events): by alias, not what this test looks at
        payload: Any = pysparkplug.MessageType(kind).payload.decode(message.payload)  # type: ignore[attr-defined]
        if kind == "NDEATH":
            bd_seq = payload.bd_seq_metric.value
        else:
            bd_seq = next(m.value for m in payload.metrics if m.name == "bdSeq")
        with self._changed:
            self.seen.append((kind, int(bd_seq), message.qos))
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, int, int]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.seen) >= count, timeout)
            return list(self.seen)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_restarted_agent_births_with_the_next_bd_seq_and_dies_at_qos_1(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    broker = mosquitto()
    watcher = NodeWatcher(broker.host, broker.port)
    try:
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
            path = tmp_path / "lineside.toml"
            path.write_text(
                plant_config(plant_machines(plant.endpoints()), poll_interval="100ms")
                + f'\n[[sinks]]\nname = "scada"\ntype = "sparkplug"\nhost = "{broker.host}"\n'
                + f'port = {broker.port}\ngroup_id = "plant"\nedge_node_id = "edge-1"\n'
            )
            for _ in range(2):  # the second run is the restarted agent, on the same store
                await Agent(load_config(path)).run(duration=0.8)
        seen = await asyncio.to_thread(watcher.wait_for, 4)
    finally:
        watcher.close()
    # each clean stop ends with an NDEATH at QoS 1 (BIRTHs go at QoS 0, as Sparkplug says)
    assert seen == [("NBIRTH", 0, 0), ("NDEATH", 0, 1), ("NBIRTH", 1, 0), ("NDEATH", 1, 1)]

"""Soak: a broker outage longer than the store holds, and an OPC UA value that rarely changes.

- The outage: a press line polled every 50 ms into a 400 kB store while the broker is down for
  a minute, so the size bound drops records behind the sink's cursor. After the broker is back,
  every telemetry record is either delivered or named in a gap record, exactly once, and the
  sink's backlog is at zero within a minute of the reconnect (before the fix the lane stopped
  at the hole: the backlog moved one batch per housekeeping drop, and gap records named
  delivered records).
- The OPC UA case: a node whose value never changes keeps an old SourceTimestamp; the records
  holding it were stored now, so they go out live (per-machine topics, `historical: false`),
  never as a backlog, and `status` ages them by when the agent stored them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from asyncua import ua

from agent.config import load_config
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from firmware_sim.clock import ScaledClock
from firmware_sim.opcua_server import SimOpcUaServer
from firmware_sim.plant import Plant, load_plant
from firmware_sim.profile import profile_from_toml
from tests.brokers import BrokerFactory, Mosquitto, persistent_subscriber
from tests.connectors.opcua.sim import TableMachine
from tests.waiting import until

POLL = 0.05  # seconds; two presses → 40 telemetry records per second
PROFILE = profile_from_toml(
    'kind = "press"\ndescription = "d"\n'
    '[[tags]]\nname = "count"\naddress = "hr:0"\ntype = "uint16"\n'
)


class Reader:
    """Every telemetry seq delivered (with its historical mark) and every gap record, on a
    persistent session that outlives a broker restart."""

    def __init__(self, broker: Mosquitto) -> None:
        self.delivered: dict[int, bool] = {}  # seq -> historical, the first time seen
        self.gaps: dict[int, dict[str, Any]] = {}  # gap seq -> its payload
        self.topics: dict[int, str] = {}  # seq -> the topic it first came on
        self._lock = threading.Lock()
        topics = [
            "uns/+/+/+/+/telemetry",
            "uns/+/_agent/+/telemetry/_batch",
            "uns/+/_agent/+/gap",
        ]
        self.client = persistent_subscriber(broker, "overflow-reader", topics, self._on_message)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        body = orjson.loads(message.payload)
        with self._lock:
            if message.topic.endswith("/gap"):
                self.gaps.setdefault(int(body["seq"]), body)
                return
            seqs, marks = body["seq"], body["historical"]
            if not isinstance(seqs, list):
                seqs, marks = [seqs], [marks]
            for seq, mark in zip(seqs, marks, strict=True):
                self.delivered.setdefault(int(seq), bool(mark))
                self.topics.setdefault(int(seq), message.topic)

    def named(self) -> list[int]:
        """The telemetry seqs the gap records name, as often as they name them."""
        with self._lock:
            return [
                seq
                for g in self.gaps.values()
                if g["of_stream"] == "telemetry" and g["first_seq"] is not None
                for seq in range(int(g["first_seq"]), int(g["last_seq"]) + 1)
            ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sink(broker: Mosquitto) -> str:
    return (
        f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\n'
        f'port = {broker.port}\ntopic_prefix = "uns"\n'
    )


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_an_outage_past_the_size_bound_drains_and_accounts_for_every_record(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    broker = mosquitto(persistent=True)
    reader = Reader(broker)
    try:
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
            path = tmp_path / "lineside.toml"
            path.write_text(
                plant_config(
                    plant_machines(plant.endpoints()),
                    poll_interval=f"{POLL * 1000:g}ms",
                    report="all",
                )
                + sink(broker)
                + '\n[store]\nmax_size = "400kB"\n'
            )
            agent = Agent(load_config(path))
            stop = asyncio.Event()
            running = asyncio.create_task(agent.run(stop))
            await until(lambda: agent.store.cursor("uns", "telemetry") > 20)
            broker.stop(graceful=True)
            # Down until the store overflowed, and some more: the drops go on behind the cursor.
            await until(lambda: agent.writer.statistics().dropped_batches > 0, limit=120)
            await asyncio.sleep(30.0)
            broker.start()
            reconnect = agent.writer.statistics().last_seq["telemetry"]
            # The backlog at zero within a minute: the sink's cursor reaches what was stored at
            # the reconnect (it stayed put for minutes when the lane could not cross a hole).
            await until(lambda: agent.store.cursor("uns", "telemetry") >= reconnect, 60.0)
            caught_up = agent.store.cursor("uns", "telemetry") >= reconnect
            await asyncio.sleep(5.0)  # live records flow after the drain
            end = agent.store.cursor("uns", "telemetry")
            stop.set()
            await running
        stats = agent.writer.statistics()
        await until(lambda: set(range(1, end + 1)) <= set(reader.delivered) | set(reader.named()))
        delivered = {seq for seq in reader.delivered if seq <= end}
        named = reader.named()
        gaps = list(reader.gaps.values())
    finally:
        reader.close()
    assert caught_up, f"the backlog did not drain within a minute of the reconnect ({reconnect})"
    assert stats.dropped_batches > 0, "the outage overflowed the store"
    assert len(named) == len(set(named)), "a record named by two gap records"
    assert not delivered & set(named), "a delivered record reported lost"
    missing = sorted(set(range(1, end + 1)) - delivered - set(named))
    assert not missing, (
        f"records neither sent nor named: {missing[:3]}..{missing[-3:]} ({len(missing)}); "
        f"gaps {sorted((g['first_seq'], g['last_seq']) for g in gaps)}, {stats}"
    )
    assert stats.dropped_by_sink.get("uns", 0) == len(named)


@pytest.mark.soak
@pytest.mark.timeout(300)
async def test_a_value_with_an_old_source_timestamp_is_sent_live(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    broker = mosquitto()
    reader = Reader(broker)
    try:
        machine = TableMachine("press1", PROFILE, {"count": 7})
        async with SimOpcUaServer([machine]) as server:
            # A setpoint written 1583 s ago and never since: its SourceTimestamp stays there.
            node = await server.add_variable("press1", "setpoint", ua.Variant(0.0))
            stale = datetime.now(UTC) - timedelta(seconds=1583)
            await server.write_variable(node, ua.Variant(42.0), source_time=stale)
            path = tmp_path / "lineside.toml"
            path.write_text(
                "config_version = 1\n[agent]\nid = 'edge-1'\nreport = 'all'\n"
                "[plant]\nsite = 'test'\n"
                "[[machines]]\nname = 'press1'\narea = 'a'\nline = 'l'\nkind = 'press'\n"
                f"[[sources]]\nname = 'ua'\ntype = 'opcua'\nendpoint = '{server.endpoint}'\n"
                "machine = 'press1'\nmode = 'poll'\ninterval = '200ms'\n"
                f"[[sources.tags]]\nname = 'setpoint'\nnode_id = '{node}'\n" + sink(broker)
            )
            agent = Agent(load_config(path))
            stop = asyncio.Event()
            running = asyncio.create_task(agent.run(stop))
            # Longer than the live window (10 s): nothing the agent stores now is a backlog.
            started = time.monotonic()
            ages: list[float] = []
            while time.monotonic() - started < 15.0:
                await asyncio.sleep(1.0)
                age = agent.store.stats().oldest_unsent_age_s["uns"]["telemetry"]
                if age is not None:
                    ages.append(age)
            stop.set()
            await running
            stored = agent.writer.statistics().last_seq["telemetry"]
        await until(lambda: set(range(1, stored + 1)) <= set(reader.delivered))
        delivered = dict(reader.delivered)
        topics = dict(reader.topics)
    finally:
        reader.close()
    assert stored >= 20, "the source was polled"
    assert set(range(1, stored + 1)) <= set(delivered)
    historical = [seq for seq, mark in delivered.items() if mark]
    assert not historical, f"records stored now sent as historical: {historical[:5]}"
    assert all("/_batch" not in topics[seq] for seq in range(1, stored + 1))
    assert not ages or max(ages) < 60.0, f"oldest unsent aged by the device's stamp: {ages}"

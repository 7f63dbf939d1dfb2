"""The fleet status against a real mosquitto: retained, offline on a clean stop, back after
an outage, read back by `lineside fleet status` with TLS and a login like the sink's."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import load_config
from agent.errors import ConnectError
from agent.fleet import status_filter
from agent.sink import SinkContext
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.fleet import read_statuses
from connectors.mqtt.sink import MqttSink
from tests.brokers import BrokerFactory, Mosquitto
from tests.connectors.mqtt.test_mqtt_sink import TAGS, USERS
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)

TOPIC = "uns/plant1/_agent/edge-7/status"  # TAGS are all of site plant1


def sink_config(broker: Mosquitto, **keys: Any) -> MqttSinkConfig:
    return MqttSinkConfig.model_validate(
        {"type": "mqtt", "name": "uns", "host": broker.host, "port": broker.port,
         "topic_prefix": "uns", **keys}
    )  # fmt: skip


class Figures:
    """A status provider counting its calls: the figures say which call made them."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> Mapping[str, Any]:
        self.calls += 1
        return {"agent_id": "edge-7", "backlog": self.calls}


async def statuses(config: MqttSinkConfig) -> dict[str, dict[str, Any]]:
    """What a viewer connecting now reads: the retained status of each agent."""
    messages = await read_statuses(config, status_filter("uns", "plant1"), 0.3)
    return {topic: orjson.loads(payload) for topic, payload in messages.items()}


async def test_status_is_retained_and_a_clean_stop_says_offline(
    mosquitto: BrokerFactory,
) -> None:
    broker = mosquitto()
    config = sink_config(broker, status_interval="100ms")
    figures = Figures()
    sink = MqttSink(config, SinkContext("edge-7", TAGS, status=figures))
    task = asyncio.create_task(sink.background())
    try:
        await until(lambda: figures.calls >= 3, 10)
        seen = await statuses(config)
        assert set(seen) == {TOPIC}
        status = seen[TOPIC]
        assert status["online"] is True
        assert status["agent_id"] == "edge-7"
        assert status["interval_s"] == 0.1
        assert isinstance(status["ts"], int) and status["backlog"] >= 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    last = figures.calls
    # Nothing publishes any more: what a new viewer reads is retained.
    stopped = (await statuses(config))[TOPIC]
    assert stopped["online"] is False
    assert stopped["reason"] == "stopped"
    assert stopped["backlog"] == last, "the last figures, marked offline"


async def test_status_comes_once_the_broker_is_back(mosquitto: BrokerFactory) -> None:
    broker = mosquitto()
    config = sink_config(broker, status_interval="100ms")
    broker.stop()
    figures = Figures()
    task = asyncio.create_task(
        MqttSink(config, SinkContext("edge-7", TAGS, status=figures)).background()
    )
    try:
        await asyncio.sleep(0.5)  # a few refused attempts
        assert not task.done(), "a broker that is down is waited for, not given up on"
        broker.start()
        await until(lambda: figures.calls >= 1, 20)
        assert (await statuses(config))[TOPIC]["online"] is True
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_a_stop_is_never_lost(mosquitto: BrokerFactory) -> None:
    """Stopped at random moments, the status always ends. On Python 3.11 `asyncio.wait_for`
    could swallow a cancellation that met an acknowledgement (2 stops in 150 hung before the
    sink waited with `asyncio.timeout`); then the agent would never stop."""
    broker = mosquitto()
    config = sink_config(broker, status_interval="10ms")
    rng = random.Random(14)
    for _ in range(300):
        task = asyncio.create_task(
            MqttSink(config, SinkContext("edge-7", TAGS, status=Figures())).background()
        )
        await asyncio.sleep(rng.uniform(0.0, 0.1))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the stop was lost"


async def test_no_status_when_it_is_off_or_the_agent_gives_no_figures(
    mosquitto: BrokerFactory,
) -> None:
    broker = mosquitto()
    off = sink_config(broker, status_interval="0s")
    await asyncio.wait_for(
        MqttSink(off, SinkContext("edge-7", TAGS, status=Figures())).background(), 5
    )
    on = sink_config(broker)
    await asyncio.wait_for(MqttSink(on, SinkContext("edge-7", TAGS)).background(), 5)
    assert await statuses(on) == {}


async def test_reading_an_unreachable_broker_fails_with_one_line(
    mosquitto: BrokerFactory,
) -> None:
    broker = mosquitto()
    config = sink_config(broker)
    broker.stop()
    with pytest.raises(ConnectError, match="connection refused"):
        await read_statuses(config, "uns/+/_agent/+/status", 0.1)


def test_keepalive_is_whole_seconds_and_status_can_be_turned_off() -> None:
    base = {"type": "mqtt", "name": "uns", "host": "broker"}
    defaults = MqttSinkConfig.model_validate(base)
    assert (defaults.status_interval, defaults.keepalive) == (5.0, 30.0)
    assert MqttSinkConfig.model_validate({**base, "status_interval": "0s"}).status_interval == 0
    for bad in ("1500ms", "0s", "20h"):
        with pytest.raises(ValueError, match=r"keepalive|more than zero"):
            MqttSinkConfig.model_validate({**base, "keepalive": bad})


# ---------------------------------------------------------------------------------------------
# `lineside fleet status`, as a user runs it


def lineside(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def tls_config(tmp_path: Path, broker: Mosquitto) -> Path:
    path = tmp_path / "edge-7.toml"
    path.write_text(
        'config_version = 1\n[agent]\nid = "edge-7"\n[plant]\nsite = "plant1"\n'
        f'[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "localhost"\nport = {broker.tls_port}\n'
        'topic_prefix = "uns"\nstatus_interval = "100ms"\nusername = "agent"\n'
        f'password_env = "FLEET_PASSWORD"\n[sinks.tls]\nca = "{broker.ca}"\n'
    )
    return path


@pytest.mark.slow
async def test_fleet_status_reads_over_tls_with_the_sinks_login(
    tmp_path: Path, mosquitto: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = mosquitto(users=USERS, tls=True)
    path = tls_config(tmp_path, broker)
    monkeypatch.setenv("FLEET_PASSWORD", USERS["agent"])
    config = load_config(path).sinks[0]
    assert isinstance(config, MqttSinkConfig)
    figures = Figures()
    task = asyncio.create_task(
        MqttSink(config, SinkContext("edge-7", TAGS, status=figures)).background()
    )
    try:
        await until(lambda: figures.calls >= 1, 10)
        env = {"FLEET_PASSWORD": USERS["agent"]}
        result = await asyncio.to_thread(
            lineside, "fleet", "status", "-c", str(path), "--json", "--wait", "0.5", env=env
        )
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert [(r["site"], r["agent_id"], r["state"]) for r in rows] == [
            ("plant1", "edge-7", "online")
        ]
        table = await asyncio.to_thread(
            lineside, "fleet", "status", "-c", str(path), "--wait", "0.5", env=env
        )
        assert table.returncode == 0, table.stderr
        assert "edge-7" in table.stdout and "1 of 1 agents online" in table.stdout
        wrong = await asyncio.to_thread(
            lineside, "fleet", "status", "-c", str(path), env={"FLEET_PASSWORD": "wrong"}
        )
        assert wrong.returncode == 1
        assert wrong.stderr.count("\n") == 1, wrong.stderr
        assert "check the username and password" in wrong.stderr
        assert "wrong" not in wrong.stderr
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Stopped: offline, and the exit code says so.
    stopped = await asyncio.to_thread(
        lineside,
        "fleet",
        "status",
        "-c",
        str(path),
        "--json",
        "--wait",
        "0.5",
        env={"FLEET_PASSWORD": USERS["agent"]},
    )
    assert stopped.returncode == 1
    assert [r["state"] for r in json.loads(stopped.stdout)] == ["offline"]


@pytest.mark.slow
def test_fleet_status_bad_options_get_one_line(tmp_path: Path) -> None:
    for args, expected in (
        ((), "give --broker HOST[:PORT] or --config"),
        (("--broker", "host:port"), "--broker: expected HOST or HOST:PORT"),
        (("--broker", "host", "--sink", "uns"), "--sink picks a sink of --config"),
        (("--broker", "host", "--cert", "c.pem"), "give both cert and key"),
    ):
        result = lineside("fleet", "status", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.slow
async def test_fleet_status_of_an_empty_or_unreachable_broker_exits_1(
    mosquitto: BrokerFactory,
) -> None:
    broker = mosquitto()
    address = f"{broker.host}:{broker.port}"
    empty = await asyncio.to_thread(
        lineside, "fleet", "status", "--broker", address, "--wait", "0.2"
    )
    assert empty.returncode == 1
    assert "no agent status on lineside/+/_agent/+/status" in empty.stderr
    broker.stop()
    down = await asyncio.to_thread(lineside, "fleet", "status", "--broker", address)
    assert down.returncode == 1
    assert down.stderr.startswith("lineside: ") and down.stderr.count("\n") == 1, down.stderr
    assert "connection refused" in down.stderr

"""A fleet of agent processes on one simulated plant and one real mosquitto (issue 14).

Every agent publishes its retained status; kill -9 of some (the socket closes) and SIGSTOP of
another (a host gone silent: only the keepalive tells) leave the others online and those
offline (their Will) within the keepalive; `lineside fleet status` shows it; the frozen one
comes back online when it runs again; every record of every agent arrives, counted by
(agent_id, stream, seq).

The short variant (3 agents: one killed, one frozen) runs with the suite; `make soak` runs 20
with 2 killed and one frozen.
"""

import asyncio
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.runtime import Agent
from agent.starter import plant_config, plant_machines
from agent.store import STREAMS, Store
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.brokers import BrokerFactory, Mosquitto
from tests.waiting import until

PREFIX = "fleet"
SITE = "demo"  # plant_config's site
KEEPALIVE = 2  # seconds: the broker gives up on a silent agent after 1.5 times this
# kill -9 closes the socket: the broker sends the Will at once, well within the keepalive.
KILLED_OFFLINE_WITHIN = 1.5 * KEEPALIVE
# A frozen agent says nothing: the broker's keepalive check finds it. mosquitto 2.0 checks at
# its own pace: 3 to 9 s seen at a 2 s keepalive (1.5 x 2 s by the book).
FROZEN_OFFLINE_WITHIN = 30.0


class FleetReader:
    """Everything under the prefix: the latest status of each agent, and every record's key."""

    def __init__(self, broker: Mosquitto) -> None:
        self.status: dict[str, dict[str, Any]] = {}
        self.keys: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/#", qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not message.payload:
            return
        body = orjson.loads(message.payload)
        with self._lock:
            if message.topic.endswith("/status"):
                self.status[message.topic.split("/")[-2]] = body
                return
            seqs = body["seq"] if isinstance(body["seq"], list) else [body["seq"]]
            self.keys.update((body["agent_id"], body["stream"], seq) for seq in seqs)

    def states(self) -> dict[str, bool | None]:
        with self._lock:
            return {agent: s.get("online") for agent, s in self.status.items()}

    def reason(self, agent: str) -> str | None:
        with self._lock:
            return self.status.get(agent, {}).get("reason")

    def has_all(self, agent: str, last: dict[str, int]) -> bool:
        with self._lock:
            return all(
                (agent, st, seq) in self.keys for st in STREAMS for seq in range(1, last[st] + 1)
            )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sink_text(broker: Mosquitto) -> str:
    return (
        f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'topic_prefix = "{PREFIX}"\nstatus_interval = "500ms"\nkeepalive = "{KEEPALIVE}s"\n'
    )


def agent_id(i: int) -> str:
    return f"edge-{i:02d}"


async def start_agent(path: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "-c", str(path), stderr=err
        )


async def fleet_status_cli(broker: Mosquitto) -> tuple[int, list[dict[str, Any]]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "fleet",
        "status",
        "--broker",
        f"{broker.host}:{broker.port}",
        "--prefix",
        PREFIX,
        "--site",
        SITE,
        "--wait",
        "1",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert not err, err.decode()
    assert process.returncode is not None
    return process.returncode, json.loads(out)


def last_seqs(data_dir: Path) -> dict[str, int]:
    with Store(data_dir) as store:
        streams = store.stats().streams
        return {st: streams[st].last_seq for st in STREAMS}


async def drain(tmp_path: Path, broker: Mosquitto, reader: FleetReader, i: int) -> None:
    """Run agent i again, in process and without sources, until the broker has every record
    its store holds: what was unsent at the kill (or at a clean stop) goes out now."""
    data_dir = tmp_path / f"data-{i:02d}"
    last = last_seqs(data_dir)
    path = tmp_path / f"drain-{i:02d}.toml"
    path.write_text(
        f'config_version = 1\n[agent]\nid = "{agent_id(i)}"\ndata_dir = "{data_dir}"\n'
        f'[plant]\nsite = "{SITE}"\n[web]\nenabled = false\n' + sink_text(broker)
    )
    agent = Agent(load_config(path))
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: reader.has_all(agent_id(i), last), 60)
    finally:
        stop.set()
        await running
    assert last_seqs(data_dir) == last, "the drain run stored nothing new"


async def run_fleet(
    tmp_path: Path, mosquitto: BrokerFactory, agents: int, kill: int, freeze: int
) -> None:
    broker = mosquitto()
    reader = FleetReader(broker)
    processes: list[asyncio.subprocess.Process] = []
    try:
        spec = load_plant("press").with_ephemeral_ports()
        async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
            machines = plant_machines(plant.endpoints())
            for i in range(agents):
                # One agent serves its status page (its figures come from the page's builder),
                # the others have none (the agent builds them itself).
                web = "port = 0" if i == 1 else "enabled = false"
                text = plant_config(
                    machines,
                    agent_id=agent_id(i),
                    data_dir=f"data-{i:02d}",
                    poll_interval="200ms",
                    report="all",
                )
                path = tmp_path / f"agent-{i:02d}.toml"
                path.write_text(text + f"\n[web]\n{web}\n" + sink_text(broker))
                processes.append(await start_agent(path, tmp_path / f"agent-{i:02d}.log"))
            everyone = {agent_id(i) for i in range(agents)}
            await until(lambda: reader.states() == dict.fromkeys(everyone, True), 120)
            await until(lambda: all(s["uptime_s"] > 0 for s in reader.status.values()), 30)
            # A loaded box may publish a status before a source's first good poll or the KPI
            # engine's first figures.
            await until(
                lambda: (
                    reader.status[agent_id(0)]["sources_up"] == 2
                    and set(reader.status[agent_id(0)]["oee"]) == {"press1", "press2"}
                ),
                30,
            )
            sample = reader.status[agent_id(0)]
            assert sample["sources_up"] == 2 and sample["sources_down"] == 0, sample
            assert set(sample["oee"]) == {"press1", "press2"}, sample

            for process in processes[:kill]:
                process.send_signal(signal.SIGKILL)
            killed = {agent_id(i) for i in range(kill)}
            expected = {a: a not in killed for a in everyone}
            await until(lambda: reader.states() == expected, KILLED_OFFLINE_WITHIN)
            assert reader.states() == expected
            for process in processes[:kill]:
                assert await asyncio.wait_for(process.wait(), 30) == -9

            frozen = processes[kill : kill + freeze]
            for process in frozen:
                process.send_signal(signal.SIGSTOP)
            gone = killed | {agent_id(i) for i in range(kill, kill + freeze)}
            expected = {a: a not in gone for a in everyone}
            await until(lambda: reader.states() == expected, FROZEN_OFFLINE_WITHIN)
            assert reader.states() == expected
            assert all(reader.reason(a) == "connection lost" for a in gone)

            code, rows = await fleet_status_cli(broker)
            assert code == 1, "an agent is offline"
            assert {r["agent_id"]: r["state"] for r in rows} == {
                a: "online" if up else "offline" for a, up in expected.items()
            }

            for process in frozen:  # back: it reconnects and says so
                process.send_signal(signal.SIGCONT)
            await until(lambda: reader.states() == {a: a not in killed for a in everyone}, 30)

            for process in processes[kill:]:
                process.send_signal(signal.SIGTERM)
            for process in processes[kill:]:
                assert await asyncio.wait_for(process.wait(), 30) == 0
            # A clean stop says so itself, with its last figures.
            await until(lambda: not any(reader.states().values()), 15)
            assert all(reader.reason(a) == "stopped" for a in everyone - killed)
        for i in range(agents):
            await drain(tmp_path, broker, reader, i)
        for i in range(agents):
            last = last_seqs(tmp_path / f"data-{i:02d}")
            assert last["telemetry"] > 0 and last["events"] > 0
            assert reader.has_all(agent_id(i), last), f"{agent_id(i)}: a record is missing"
    finally:
        for process in processes:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                await process.wait()
        reader.close()


@pytest.mark.slow
async def test_fleet_of_three_one_killed_one_frozen(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    await run_fleet(tmp_path, mosquitto, agents=3, kill=1, freeze=1)


@pytest.mark.soak
async def test_fleet_of_twenty_two_killed_one_frozen(
    tmp_path: Path, mosquitto: BrokerFactory
) -> None:
    await run_fleet(tmp_path, mosquitto, agents=20, kill=2, freeze=1)

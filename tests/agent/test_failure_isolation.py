"""No exception of one source, sink or inspection ends the agent (real agent, real plant).

Each failing component is a real one (a Modbus TCP, Modbus RTU and OPC UA source, an MQTT sink,
a vision inspection) wired into a real `Agent` against the simulated plant, with an exception
nobody foresaw injected into it: the agent logs one line, reads the failing source's tags bad,
tries again after its back-off, and the others carry on meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.export import export_readings
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.registry import runtime_class
from agent.runtime import Agent, sink_tags
from agent.sink import Record, SinkContext
from agent.starter import plant_config, plant_machines
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.brokers import BrokerFactory
from tests.connectors.opcua.sim import TableMachine, make_pki
from tests.connectors.opcua.test_security import PROFILE as ONE_TAG
from tests.waiting import until

Fault = tuple[str, BaseException]  # ("connect" | "poll", what it raises)


def faulty(cls: Any, faults: Sequence[Fault]) -> Any:
    """`cls` (a source runtime) raising `faults` in order from its connect and poll, then well."""

    class Faulty(cls):  # type: ignore[misc]
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.faults = list(faults)

        async def connect(self) -> None:
            if self.faults and self.faults[0][0] == "connect":
                raise self.faults.pop(0)[1]
            await super().connect()

        async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
            if self.faults and self.faults[0][0] == "poll":
                raise self.faults.pop(0)[1]
            result: list[ReadingBatch] = await super().poll(groups)
            return result

    return Faulty


def replace_source(agent: Agent, name: str, faults: Sequence[Fault]) -> Any:
    spec = next(s for s in agent.config.sources if s.name == name)
    at = next(i for i, s in enumerate(agent.sources) if s.name == name)
    agent.sources[at] = faulty(runtime_class(spec.type), faults)(spec, agent.tags, agent.clock)
    return agent.sources[at]


def quality_of(agent: Agent, source: str, tag: str | None = None) -> set[int]:
    """The latest qualities of a source's tags (or of its one tag `tag`)."""
    ids = [t.id for t in agent.tags if t.source == source and tag in (None, t.name)]
    return {int(q) for q in agent.latest_quality[ids]}


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[list[Event]]:
    events: list[Event] = []
    agent.event_listeners.append(events.append)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield events
        assert not task.done(), "the agent ended"
    finally:
        stop.set()
        await task


def one_line_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Every warning or error the agent logged is one line without a traceback."""
    for record in caplog.records:
        if record.levelno >= logging.WARNING and record.name.startswith("lineside"):
            assert record.exc_info is None, record.getMessage()
            assert "\n" not in record.getMessage()


def plant_text(plant: Plant) -> str:
    """The plant's two presses over Modbus TCP, press1 also over RTU and OPC UA."""
    text = plant_config(plant_machines(plant.endpoints()), poll_interval="100ms", report="all")
    assert plant.opcua_server is not None and plant.rtu_path is not None
    unit = next(e.rtu_unit_id for e in plant.endpoints() if e.machine == "press1")
    ns = plant.opcua_server.namespace_index
    return text + (
        f'\n[[sources]]\nname = "bus"\ntype = "modbus_rtu"\nport = "{plant.rtu_path}"\n'
        'baudrate = 115200\nparity = "N"\ntimeout = "200ms"\n'
        f'[[sources.units]]\nunit_id = {unit}\nmachine = "press1"\npoll_interval = "100ms"\n'
        'tags = [{ name = "rtu_state", address = "hr:0" }]\n'
        f'\n[[sources]]\nname = "ua"\ntype = "opcua"\nendpoint = "{plant.opcua_server.endpoint}"\n'
        'machine = "press1"\nmode = "poll"\ninterval = "100ms"\ntimeout = "1s"\n'
        f'tags = [{{ name = "ua_state", node_id = "ns={ns};s=press1.state" }}]\n'
    )


@pytest.mark.slow
async def test_each_source_kind_failing_unforeseen_reads_bad_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=True, rtu=True) as plant:
        path = tmp_path / "lineside.toml"
        path.write_text(plant_text(plant), encoding="utf-8")
        agent = Agent(load_config(path))
        kinds: dict[str, list[Fault]] = {
            "press1-plc": [("connect", ZeroDivisionError("division by zero"))],
            "bus": [("poll", KeyError("unit"))],
            "ua": [("connect", AssertionError()), ("poll", RuntimeError("x\ny"))],
        }
        sources = {name: replace_source(agent, name, f) for name, f in kinds.items()}
        async with running(agent) as events:
            await until(lambda: all(not s.faults for s in sources.values()), 20)
            first = {"press1-plc": "state", "bus": "rtu_state", "ua": "ua_state"}
            for name, tag in first.items():  # each one back, good, after its back-off
                await until(lambda n=name, t=tag: quality_of(agent, n, t) == {Quality.GOOD}, 20)  # type: ignore[misc]
            # press2's PLC never noticed: polled all along, never lost.
            assert agent.links["press2-plc"].polls > 3
    lost = {
        (e.data["source"], e.data["detail"])
        for e in events
        if e.kind is EventKind.CONNECTION and e.data["state"] == "lost"
    }
    # ua's second loss (its poll) comes within a minute of its first: held back and counted,
    # not told again (a flapping link is one line a minute); its disconnect is counted below.
    assert lost == {
        ("press1-plc", "unexpected ZeroDivisionError: division by zero"),
        ("bus", "unexpected KeyError: 'unit'"),
        ("ua", "unexpected AssertionError"),
    }
    assert agent.links["press1-plc"].connect_failures == 1
    assert agent.links["ua"].connect_failures == 1 and agent.links["ua"].disconnects == 1
    # Meanwhile their tags were stored bad, never as stale good values.
    bad = {
        (r.path.split("/")[3], r.path.rsplit("/", 1)[1])
        for r in export_readings(tmp_path / "data")
        if r.quality == Quality.BAD
    }
    assert {("press1", "rtu_state"), ("press1", "ua_state"), ("press1", "state")} <= bad
    assert not any(machine == "press2" for machine, _ in bad)
    one_line_logs(caplog)


@pytest.mark.slow
async def test_an_untrusting_opcua_server_leaves_the_modbus_sources_polling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Strict trust, day one: the OPC UA source reads bad with the reason until trusted."""
    from firmware_sim.opcua_server import SimOpcUaServer

    caplog.set_level(logging.INFO)
    pki = make_pki(tmp_path / "pki", "urn:lineside:test:edge", "kp-1")
    trusts = tmp_path / "server-trusts"
    trusts.mkdir()
    server = SimOpcUaServer(
        [TableMachine("press1", ONE_TAG, {"count": 4242})],
        security="sign_and_encrypt",
        cert_dir=tmp_path / "server",
        trusted_clients=trusts,
    )
    spec = load_plant("press").with_ephemeral_ports()
    async with server, Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as plant:
        text = plant_config(plant_machines(plant.endpoints()), poll_interval="100ms")
        ns = server.namespace_index
        text += (
            f'\n[[sources]]\nname = "ua"\ntype = "opcua"\nendpoint = "{server.endpoint}"\n'
            'machine = "press1"\nsecurity_policy = "Basic256Sha256"\n'
            f'security_mode = "SignAndEncrypt"\ncertificate = "{pki.cert}"\n'
            f'private_key = "{pki.key}"\nprivate_key_password_file = "{pki.passphrase_file}"\n'
            'trust_on_first_use = true\ntimeout = "2s"\n'
            f'tags = [{{ name = "ua_count", node_id = "ns={ns};s=press1.count" }}]\n'
        )
        path = tmp_path / "lineside.toml"
        path.write_text(text, encoding="utf-8")
        agent = Agent(load_config(path))
        link = agent.links["ua"]
        async with running(agent):
            await until(lambda: link.connect_failures >= 2, 20)  # retried on its back-off
            assert link.state == "lost"
            assert link.last_error == (
                f"ua ({server.endpoint}): the server rejected our certificate (it refused the "
                f"secure channel): have it trust {pki.cert}"
            )
            assert quality_of(agent, "ua") == {Quality.BAD}
            polled = agent.links["press1-plc"].polls
            await until(lambda: agent.links["press1-plc"].polls > polled + 5)
            # The server's administrator trusts it: the next attempt connects.
            (trusts / "lineside.der").write_bytes(pki.cert.read_bytes())
            await until(lambda: quality_of(agent, "ua") == {Quality.GOOD}, 20)
            ua = [t.id for t in agent.tags if t.source == "ua"]
            assert agent.latest_values[ua].tolist() == [4242.0]
    warnings = [r.getMessage() for r in caplog.records if r.name == "lineside.poller"]
    assert warnings.count(f"ua: cannot connect: {link.last_error}") == 1  # once per outage
    one_line_logs(caplog)


async def test_a_sink_failing_unforeseen_is_a_failed_send_retried(
    tmp_path: Path, mosquitto: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto()
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as plant:
        text = plant_config(plant_machines(plant.endpoints()), poll_interval="100ms")
        text += (
            f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\n'
            f'port = {broker.port}\ntopic_prefix = "plant"\n'
        )
        path = tmp_path / "lineside.toml"
        path.write_text(text, encoding="utf-8")
        agent = Agent(load_config(path))
        forwarder = agent.forwarders[0]
        sink_config = agent.config.sinks[0]
        context = SinkContext(agent.config.agent.id, sink_tags(agent.store.tags()))
        base = runtime_class(sink_config.type)
        failures = [KeyError("metric"), ZeroDivisionError("division by zero")]

        class FaultySink(base):  # type: ignore[misc,valid-type]
            async def send(self, records: Sequence[Record]) -> None:
                if failures:
                    raise failures.pop(0)
                await super().send(records)

        forwarder.sink = FaultySink(sink_config, context)
        async with running(agent):
            await until(lambda: not failures and sum(forwarder.stats.sent.values()) > 0, 20)
            polled = agent.links["press1-plc"].polls
            await until(lambda: agent.links["press1-plc"].polls > polled + 3)
        assert forwarder.stats.failures >= 1
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # The outage is logged once, by whichever lane (telemetry or events) failed first: two
    # lanes sending at start may take the two faults in either order.
    unexpected = ("KeyError: 'metric'", "ZeroDivisionError: division by zero")
    assert any(f"uns: unexpected {e}; holding data" in m for e in unexpected for m in messages)
    one_line_logs(caplog)


async def test_an_inspection_failing_unforeseen_starts_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.vision import onnx_graphs as graphs
    from tests.vision.parts import write_parts

    write_parts(tmp_path / "frames", [False, True, False])
    graphs.anomaly_model(tmp_path / "surface.onnx")
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as plant:
        text = plant_config(plant_machines(plant.endpoints()), poll_interval="100ms")
        text += (
            '\n[[inspections]]\nname = "surface"\nmachine = "press1"\n'
            'source = { type = "folder", path = "frames" }\nmodel = "surface.onnx"\n'
        )
        path = tmp_path / "lineside.toml"
        path.write_text(text, encoding="utf-8")
        agent = Agent(load_config(path))
        (inspector,) = agent.inspectors
        real_load = inspector.load_model
        calls: list[int] = []

        def flaky_load() -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise KeyError("input")  # not a ModelError: nobody foresaw it
            return real_load()

        inspector.load_model = flaky_load
        async with running(agent) as events:
            await until(lambda: sum(e.kind is EventKind.INSPECTION for e in events) == 3, 20)
            assert agent.links["press1-plc"].polls > 0
    assert len(calls) == 2
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "inspection surface failed: unexpected KeyError: 'input'; starting it again" in messages
    one_line_logs(caplog)


def test_first_leaf_and_one_line() -> None:
    from agent.errors import ConnectError, one_line
    from agent.runtime import _first_leaf

    group = ExceptionGroup("g", [ExceptionGroup("h", [KeyError("k")]), ValueError("v")])
    assert one_line(_first_leaf(group)) == "unexpected KeyError: 'k'"
    assert one_line(ConnectError("press: refused")) == "press: refused"
    assert one_line(AssertionError()) == "unexpected AssertionError"


async def test_a_page_request_failing_unforeseen_is_a_500_and_the_agent_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from tests.agent.web.running import running_agent

    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        real_state = run.web.state.state

        async def broken(machine: str | None) -> Any:
            raise KeyError(machine)

        run.web.state.state = broken  # type: ignore[method-assign, assignment]
        failed = await client.get("/api/state", params={"machine": "press1"})
        run.web.state.state = real_state  # type: ignore[method-assign]
        polled = run.agent.links["press1-plc"].polls
        await until(lambda: run.agent.links["press1-plc"].polls > polled + 3)
        again = await client.get("/api/state")
    assert failed.status_code == 500
    assert failed.json() == {"error": "internal error: unexpected KeyError: 'press1'"}
    assert again.status_code == 200
    messages = [r.getMessage() for r in caplog.records if r.name == "lineside.web"]
    assert "status page: a request failed: unexpected KeyError: 'press1'" in messages
    one_line_logs(caplog)


@pytest.mark.slow
async def test_a_source_whose_figures_fail_costs_only_its_figures(tmp_path: Path) -> None:
    import json

    from agent.runtime import STATUS_FILE

    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(5.0), opcua=False, rtu=False) as plant:
        path = tmp_path / "lineside.toml"
        path.write_text(
            plant_config(plant_machines(plant.endpoints()), poll_interval="100ms"),
            encoding="utf-8",
        )
        agent = Agent(load_config(path))
        at = next(i for i, s in enumerate(agent.sources) if s.name == "press1-plc")
        base = type(agent.sources[at])

        class BrokenFigures(base):  # type: ignore[misc,valid-type]
            def statistics(self) -> Any:
                raise KeyError("requests")

        agent.sources[at] = BrokenFigures(agent.config.sources[at], agent.tags, agent.clock)
        status = tmp_path / "data" / STATUS_FILE

        def written() -> dict[str, Any]:
            figures: dict[str, Any] = json.loads(status.read_text(encoding="utf-8"))
            return figures

        def connected() -> bool:
            return status.exists() and written()["sources"]["press1-plc"]["link"]["polls"] > 0

        async with running(agent):
            await until(connected)  # the status file is rewritten every 2 s
    figures = written()["sources"]["press1-plc"]
    assert figures["statistics_error"] == "unexpected KeyError: 'requests'"
    assert figures["link"]["state"] == "connected"
    assert "requests" in written()["sources"]["press2-plc"]

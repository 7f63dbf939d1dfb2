"""The MC source and the MC simulator: read by lineside and by pymcprotocol (an MC client
nobody here wrote), both checked against the simulated machine's own values; and bad input
from the PLC, never stored as a good value."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pymcprotocol
import pytest

from agent.config import load_config
from agent.errors import ConnectError
from agent.model import Quality
from agent.oneshot import read_once
from agent.starter import PlantMachine, mc_address, render_config
from connectors.mc.config import McSourceConfig
from connectors.mc.source import McSource
from firmware_sim.clock import ManualClock
from firmware_sim.plant import Plant, load_plant
from firmware_sim.profile import load_profile

PROFILE = load_profile("press")
NUMERIC = [t for t in PROFILE.tags if t.type != "string"]


class _Ids:
    def id_of(self, machine: str, name: str) -> int:
        return [t.name for t in NUMERIC].index(name)


def _config(port: int, **settings: Any) -> McSourceConfig:
    tags = []
    for t in NUMERIC:
        tag: dict[str, Any] = {"name": t.name, "address": mc_address(t), "type": t.type}
        if t.type not in ("bool", "int16", "uint16"):
            tag["order"] = t.order
        if t.scale != 1.0:
            tag["scale"] = t.scale
        tags.append(tag)
    doc = {"type": "mc", "name": "plc", "host": "127.0.0.1", "port": port, "machine": "press1"}
    return McSourceConfig.model_validate({**doc, "tags": tags, **settings})


def _source(port: int, **settings: Any) -> McSource:
    return McSource(_config(port, **settings), _Ids())  # type: ignore[arg-type]


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    spec = load_plant("press").with_ephemeral_ports()
    plant = Plant(spec, ManualClock(3600.0), opcua=False, rtu=False)
    await plant._start_mc()  # served, not ticking: the values hold still to be compared
    try:
        yield plant
    finally:
        await plant.stop()


def _truth(plant: Plant) -> dict[str, float]:
    values = plant.machines["press1"].values()
    out = {}
    for t in NUMERIC:
        v = float(values[t.name])
        if t.type == "int16" and t.scale != 1.0:
            v = round(v / t.scale) * t.scale
        if t.type == "float32":
            v = float(__import__("numpy").float32(v))
        out[t.name] = v
    return out


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"code": "ascii"},
        {"frame": "4e", "max_in_flight": 4, "max_random_points": 0},
        {"series": "iqr", "code": "ascii", "frame": "4e"},
    ],
)
async def test_lineside_reads_the_machine_as_it_is(plant: Plant, settings: dict[str, Any]) -> None:
    source = _source(plant.mc_servers["press1"].port, **settings)
    await source.connect()
    try:
        [batch] = await source.poll(list(source.poll_groups()))
    finally:
        await source.close()
    truth = _truth(plant)
    names = [NUMERIC[i].name for i in batch.tag_ids]
    assert (batch.quality == Quality.GOOD).all()
    for name, value in zip(names, batch.values.tolist(), strict=True):
        assert value == pytest.approx(truth[name], rel=1e-6, abs=1e-9), name
    assert truth["part_count"] > 0  # an hour into the run: something to compare


@pytest.fixture
def threaded_plant() -> Iterator[Plant]:
    """The plant on a loop of its own thread, for the synchronous pymcprotocol."""
    loop = asyncio.new_event_loop()
    spec = load_plant("press").with_ephemeral_ports()
    plant = Plant(spec, ManualClock(3600.0), opcua=False, rtu=False)
    loop.run_until_complete(plant._start_mc())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield plant
    finally:
        asyncio.run_coroutine_threadsafe(plant.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("plctype", ["Q", "iQ-R"])
@pytest.mark.parametrize("commtype", ["binary", "ascii"])
def test_pymcprotocol_reads_the_simulator_as_the_machine_is(
    threaded_plant: Plant, plctype: str, commtype: str
) -> None:
    client = pymcprotocol.Type3E(plctype=plctype)
    client.setaccessopt(commtype=commtype)
    client.connect("127.0.0.1", threaded_plant.mc_servers["press1"].port)
    try:
        words = client.batchread_wordunits("D0", 16)
        [running] = client.batchread_bitunits("M0", 1)
        _, dwords = client.randomread(word_devices=["D0"], dword_devices=["D4", "D6"])
    finally:
        client.close()
    truth = _truth(threaded_plant)
    assert words[0] == truth["state"]
    assert words[1] == truth["unit_mode"]
    assert words[10] * 0.1 == pytest.approx(truth["die_temp"])
    assert words[14] == truth["alarm_code"]
    assert running == truth["running"]
    # 32-bit counters low word first (the profile's CDAB), as a MELSEC CPU keeps a DINT
    assert [d & 0xFFFFFFFF for d in dwords] == [truth["part_count"], truth["good_count"]]


async def test_an_error_end_code_is_named_and_no_value_is_good(plant: Plant) -> None:
    server = plant.mc_servers["press1"]
    server.unit.faults.set("exception", code=0x55)
    source = _source(server.port)
    await source.connect()
    try:
        [batch] = await source.poll(list(source.poll_groups()))
    finally:
        await source.close()
    assert (batch.quality == Quality.BAD).all() and all(map(math.isnan, batch.values))
    assert "online change disabled (enable writes during RUN) (0055)" in source.reasons.summary()


async def test_a_device_past_the_end_is_bad_the_others_good(plant: Plant) -> None:
    port = plant.mc_servers["press1"].port
    config = McSourceConfig.model_validate(
        {
            "type": "mc",
            "name": "plc",
            "host": "127.0.0.1",
            "port": port,
            "machine": "m",
            "max_random_points": 0,
            "tags": [{"name": "state", "address": "D0"}, {"name": "far", "address": "D60000"}],
        }
    )

    class Ids:
        def id_of(self, machine: str, name: str) -> int:
            return ["state", "far"].index(name)

    source = McSource(config, Ids())  # type: ignore[arg-type]
    await source.connect()
    try:
        [batch] = await source.poll(["1s"])
    finally:
        await source.close()
    by_id = dict(zip(batch.tag_ids.tolist(), batch.quality.tolist(), strict=True))
    assert by_id == {0: Quality.GOOD, 1: Quality.BAD}
    assert "read past the last device number (C056)" in source.reasons.summary()


@pytest.mark.parametrize("mode", ["malformed", "truncated", "drop", "slow"])
async def test_a_plc_that_misbehaves_gives_bad_readings_never_wrong_good_ones(
    plant: Plant, mode: str
) -> None:
    server = plant.mc_servers["press1"]
    params: dict[str, Any] = {"delay": "5s"} if mode == "slow" else {}
    server.unit.faults.set(mode, **params)
    source = _source(server.port, timeout="200ms", max_random_points=0, max_gap=0)
    await source.connect()
    try:
        try:
            [batch] = await source.poll(list(source.poll_groups()))
        except ConnectError:
            return  # the PLC closed the connection: the link loop's bad batches follow
        assert (batch.quality == Quality.BAD).all()
        assert all(map(math.isnan, batch.values))
        with pytest.raises(ConnectError):  # the connection was closed: the next poll says so
            await source.poll(list(source.poll_groups()))
    finally:
        await source.close()


async def test_a_plc_that_never_answers_does_not_hold_up_another(plant: Plant) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(3600)

    rogue = await asyncio.start_server(silent, "127.0.0.1", 0)
    rogue_port = rogue.sockets[0].getsockname()[1]
    slow = _source(rogue_port, timeout="60s")
    good = _source(plant.mc_servers["press1"].port)
    await slow.connect()
    await good.connect()
    stuck = asyncio.create_task(slow.poll(["1s"]))
    try:
        for _ in range(3):
            [batch] = await good.poll(["1s"])
            assert (batch.quality == Quality.GOOD).all()
        assert not stuck.done()
    finally:
        stuck.cancel()
        await slow.close()
        await good.close()
        rogue.close()


async def test_a_server_that_closes_mid_frame_reads_bad() -> None:
    promised = 0

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        header = bytes.fromhex("d000 00 ff ff03 00") + promised.to_bytes(2, "little")
        writer.write(header + bytes(4))  # the end code and half a word, then the end
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half, "127.0.0.1", 0)
    source = _source(server.sockets[0].getsockname()[1])
    promised = 2 + source.unit_groups("1s")[0].plan.requests[0].payload_bytes
    await source.connect()
    try:
        with pytest.raises(ConnectError):
            await source.poll(["1s"])
    finally:
        await source.close()
        server.close()
    assert source.statistics().responses == 0


async def test_a_late_3e_answer_is_never_taken_for_the_next_request(plant: Plant) -> None:
    server = plant.mc_servers["press1"]
    image = server.unit.image
    config = McSourceConfig.model_validate(
        {
            "type": "mc",
            "name": "plc",
            "host": "127.0.0.1",
            "port": server.port,
            "machine": "m",
            "timeout": "200ms",
            "tags": [{"name": "state", "address": "D0", "type": "uint16"}],
        }
    )

    class Ids:
        def id_of(self, machine: str, name: str) -> int:
            return 0

    source = McSource(config, Ids())  # type: ignore[arg-type]
    image.holding[0:2] = (1).to_bytes(2, "big")
    server.unit.faults.set("slow", delay="400ms")
    await source.connect()
    try:
        [first] = await source.poll(["1s"])
        assert first.quality.tolist() == [Quality.BAD]
        image.holding[0:2] = (2).to_bytes(2, "big")  # the PLC's value moves on
        server.unit.faults.clear()
        try:
            [second] = await source.poll(["1s"])
        except ConnectError:
            await source.connect()
            [second] = await source.poll(["1s"])
        # the answer to the first request (1) carries no serial on 3E: it must not pass
        assert (second.values.tolist(), second.quality.tolist()) == ([2.0], [Quality.GOOD])
    finally:
        await source.close()


async def test_the_init_config_reads_every_tag_of_the_plant_good(
    plant: Plant, tmp_path: Path
) -> None:
    machines = [
        PlantMachine(name, "press", "127.0.0.1", server.port, protocol="mc")
        for name, server in plant.mc_servers.items()
    ]
    path = tmp_path / "lineside.toml"
    path.write_text(render_config(["# test"], "edge-1", "site", machines))
    result = await read_once(load_config(path))
    assert not result.errors
    assert len(result.readings) == 2 * len(NUMERIC)
    assert not result.bad


async def test_a_late_4e_answer_is_known_by_its_serial_and_dropped(plant: Plant) -> None:
    server = plant.mc_servers["press1"]
    image = server.unit.image
    config = McSourceConfig.model_validate(
        {
            "type": "mc",
            "name": "plc",
            "host": "127.0.0.1",
            "port": server.port,
            "machine": "m",
            "frame": "4e",
            "timeout": "300ms",
            "tags": [{"name": "state", "address": "D0", "type": "uint16"}],
        }
    )

    class Ids:
        def id_of(self, machine: str, name: str) -> int:
            return 0

    source = McSource(config, Ids())  # type: ignore[arg-type]
    image.holding[0:2] = (1).to_bytes(2, "big")
    server.unit.faults.set("slow", delay="400ms")
    await source.connect()
    try:
        [first] = await source.poll(["1s"])
        assert first.quality.tolist() == [Quality.BAD]
        image.holding[0:2] = (2).to_bytes(2, "big")
        server.unit.faults.clear()
        # The server answers in turn: the late answer comes 100 ms into this poll, its own
        # answer right after, well inside the 300 ms timeout.
        [second] = await source.poll(["1s"])  # the connection stays: late answers are known
        assert (second.values.tolist(), second.quality.tolist()) == ([2.0], [Quality.GOOD])
    finally:
        await source.close()


async def test_statistics_count_requests_answers_bytes_and_latency(plant: Plant) -> None:
    source = _source(plant.mc_servers["press1"].port)
    await source.connect()
    try:
        for _ in range(3):
            await source.poll(list(source.poll_groups()))
    finally:
        await source.close()
    stats = source.statistics()
    assert (stats.polls, stats.requests, stats.responses) == (3, 3, 3)
    assert stats.timeouts == stats.exceptions == stats.malformed == 0
    assert stats.bytes_out > 0 and stats.bytes_in > 0
    assert 0 < stats.latency_p50_s <= stats.latency_p99_s
    assert stats.latency is not None and stats.latency.count == 3
    assert stats.extras["string_tags"] == 0

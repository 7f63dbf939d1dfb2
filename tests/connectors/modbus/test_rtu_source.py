"""ModbusRtuSource and the RTU link on the simulator's pty bus: five units, one serial line.

Back-off runs on an injected FakeClock, so isolation is tested by moving time by hand; only
the bus itself (timeouts, t3.5) runs on real time, with short limits.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
import tty
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.clock import FakeClock
from agent.config import load_config
from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from agent.model import Quality, ReadingBatch
from agent.starter import starter_config
from agent.tags import Tag, TagTable
from connectors.modbus.config import ModbusRtuSourceConfig, ModbusTcpSourceConfig
from connectors.modbus.framing import crc16, rtu_answer_size, rtu_read, with_crc
from connectors.modbus.rtu import RtuLink, parse_response, silent_interval
from connectors.modbus.rtu_source import ModbusRtuSource
from firmware_sim.clock import ManualClock
from firmware_sim.plant import Plant, load_plant

pytestmark = pytest.mark.timeout(30)

GOOD, BAD = Quality.GOOD.value, Quality.BAD.value
TIMEOUT = 0.1


# -- pure framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "crc"),
    [
        ("01 05 00 00 FF 00", 0x3A8C),
        ("01 03 00 00 00 04", 0x0944),
        ("11 03 00 6B 00 03", 0x8776),
        ("01 03 00 00 00 0A", 0xCDC5),
    ],
)
def test_crc_vectors(frame: str, crc: int) -> None:
    assert crc16(bytes.fromhex(frame)) == crc
    assert with_crc(bytes.fromhex(frame))[-2:] == crc.to_bytes(2, "little")  # low byte first


def test_read_request_and_response_lengths() -> None:
    assert rtu_read(0x11, 3, 0x6B, 3) == bytes.fromhex("11 03 00 6B 00 03 76 87")
    assert rtu_answer_size(3, 10, 3) == 25
    assert rtu_answer_size(1, 10, 1) == 7  # two bytes of bits
    assert rtu_answer_size(2, 16, 2) == 7
    assert rtu_answer_size(4, 1, 0x84) == 5  # exception
    assert rtu_answer_size(4, 1, 0x83) is None  # fits neither
    for bad in [(0, 3, 0, 1), (248, 3, 0, 1), (1, 6, 0, 1), (1, 3, 0, 126), (1, 3, 65535, 2)]:
        with pytest.raises(ValueError):
            rtu_read(*bad)
    with pytest.raises(ValueError):
        silent_interval(0)
    assert silent_interval(9600) == pytest.approx(0.00401, abs=1e-5)
    assert silent_interval(115200) == 0.00175


def test_parse_response_good_and_bad() -> None:
    good = with_crc(bytes.fromhex("01 03 04 00 01 00 02"))
    assert parse_response(good, 1, 3, 2) == bytes.fromhex("00 01 00 02")
    with pytest.raises(ProtocolError, match="bad CRC"):
        parse_response(good[:-1] + bytes([good[-1] ^ 1]), 1, 3, 2)
    with pytest.raises(ProtocolError, match="address 1"):
        parse_response(good, 2, 3, 2)
    with pytest.raises(ProtocolError, match="function code 3"):
        parse_response(good, 1, 4, 2)
    with pytest.raises(ProtocolError, match="byte count 4"):
        parse_response(good, 1, 3, 3)
    with pytest.raises(DeviceError, match="server device busy") as caught:
        parse_response(with_crc(bytes.fromhex("01 83 06")), 1, 3, 2)
    assert caught.value.code == 6


# -- on the simulated bus -------------------------------------------------------------------


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    clock = ManualClock()
    async with Plant(
        load_plant("demo").with_ephemeral_ports(), clock, opcua=False, rtu=True
    ) as running:
        clock.advance(900)
        running.tick()
        yield running


def _bus(tmp_path: Path, plant: Plant, **settings: Any) -> tuple[ModbusRtuSourceConfig, TagTable]:
    """All five demo machines as units of one RTU source, tags as their starter configs say."""
    rtu_ids = plant.spec.rtu_unit_ids()
    units = []
    for profile in ("press", "cement", "loom"):
        path = tmp_path / f"{profile}.toml"
        path.write_text(starter_config(profile), encoding="utf-8")
        for source in load_config(path).sources:
            assert isinstance(source, ModbusTcpSourceConfig)
            for unit in source.units:
                dumped = unit.model_dump(exclude_none=True)
                units.append({**dumped, "unit_id": rtu_ids[unit.machine]})
    assert plant.rtu_path is not None
    config = ModbusRtuSourceConfig.model_validate(
        {
            "name": "bus",
            "type": "modbus_rtu",
            "port": plant.rtu_path,
            "timeout": f"{int(TIMEOUT * 1000)}ms",
            "frame_pause": "0s",
            "retries": 0,
            **settings,
            "units": units,
        }
    )
    infos: list[Tag] = []
    for unit in config.units:
        for tag in unit.tags:
            tag_path = f"site/area/line/{unit.machine}/{tag.name}"
            infos.append(Tag(len(infos), tag_path, unit.machine, tag.name, "bus", "", 0.0, 0.0))
    return config, TagTable(infos)


def _by_machine(
    tags: TagTable, batches: list[ReadingBatch]
) -> dict[str, dict[str, tuple[float, int]]]:
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for batch in batches:
        for tag_id, value, quality in zip(batch.tag_ids, batch.values, batch.quality, strict=True):
            info = tags.tags[int(tag_id)]
            out.setdefault(info.machine, {})[info.name] = (float(value), int(quality))
    return out


def _assert_truth(
    config: ModbusRtuSourceConfig,
    plant: Plant,
    got: dict[str, dict[str, tuple[float, int]]],
    machine: str,
) -> None:
    truth = plant.machines[machine].values()
    tags = {t.name: t for u in config.units if u.machine == machine for t in u.tags}
    numeric = [n for n, v in truth.items() if not isinstance(v, str)]
    assert sorted(got[machine]) == sorted(numeric)
    for name in numeric:
        value, quality = got[machine][name]
        assert quality == GOOD, (machine, name)
        expected = float(truth[name])
        tolerance = abs(tags[name].scale) / 2 + 1e-6 * abs(expected)
        assert value == pytest.approx(expected, abs=tolerance), (machine, name)


def _good(got: dict[str, dict[str, tuple[float, int]]], machine: str) -> bool:
    return all(q == GOOD for _, q in got[machine].values())


def _bad(got: dict[str, dict[str, tuple[float, int]]], machine: str) -> bool:
    return all(q == BAD and math.isnan(v) for v, q in got[machine].values())


async def test_every_unit_on_the_bus_reads_its_models_values(tmp_path: Path, plant: Plant) -> None:
    config, tags = _bus(tmp_path, plant)
    source = ModbusRtuSource(config, tags)
    await source.connect()
    batches = await source.poll(list(source.poll_groups()))
    assert len(batches) == 5
    got = _by_machine(tags, batches)
    for machine in plant.machines:
        _assert_truth(config, plant, got, machine)
    stats = source.statistics()
    assert stats.requests == stats.responses > 5
    assert stats.timeouts == stats.malformed == stats.extras["isolated_units"] == 0
    assert (
        stats.extras["string_tags"] == 5
    )  # die_id, cement_grade, article x2... as the profiles say
    assert stats.bytes_out == 8 * stats.requests
    await source.close()


async def test_a_dead_unit_is_isolated_and_costs_one_timeout_per_backoff(
    tmp_path: Path, plant: Plant
) -> None:
    config, tags = _bus(tmp_path, plant)
    clock = FakeClock()
    source = ModbusRtuSource(config, tags, clock, backoff_initial=1.0, backoff_max=4.0)
    await source.connect()
    server = plant.rtu_server
    assert server is not None
    plant.units["press2"].faults.set("refuse")

    def dead_requests() -> int:
        return server.stats.faults  # requests the silent unit swallowed

    def poll_once() -> Any:
        return source.poll(["1s"])

    expected_requests = []
    for step in range(12):  # 0.5 s of fake time per poll: 6 s in all
        started = time.monotonic()
        got = _by_machine(tags, await poll_once())
        elapsed = time.monotonic() - started
        assert _bad(got, "press2")
        for machine in ("press1", "mill1", "loom1", "loom2"):
            assert _good(got, machine), (step, machine)
        # A poll costs at most one timeout for the dead unit, plus the live units' answers.
        assert elapsed < TIMEOUT + 1.0
        expected_requests.append(dead_requests())
        clock.advance(0.5)
    # Tried at t=0 (back-off 1 s), t=1 (then 2 s), t=3 (then 4 s, the cap), and not again
    # before t=7: three timeouts in six seconds instead of twelve.
    assert expected_requests == [1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]
    stats = source.statistics()
    assert stats.timeouts == 3 and stats.extras["isolations"] == 3
    assert stats.extras["isolated_units"] == 1
    assert stats.extras["skipped_requests"] > 0
    # Its tags read bad for the timeout that isolated it, the others' are good.
    press2 = {t.id for t in tags if t.machine == "press2"}
    why = source.reasons.by_tag()
    assert set(why) <= press2 and len(why) >= len(press2) - 1  # (a text tag is not read)
    assert set(why.values()) == {f"timeout after {TIMEOUT * 1000:g}ms"}

    # It comes back: the next probe succeeds and it is polled every time again.
    plant.units["press2"].faults.clear()
    clock.advance(4.0)
    got = _by_machine(tags, await poll_once())
    _assert_truth(config, plant, got, "press2")
    assert source.statistics().extras["isolated_units"] == 0
    clock.advance(0.1)
    assert _good(_by_machine(tags, await poll_once()), "press2")
    assert source.reasons.summary() == {}
    await source.close()


@pytest.mark.parametrize("kind", [0, 1])  # 0: bad function code (good CRC), 1: bad CRC
async def test_a_garbling_unit_is_isolated_and_the_link_stays(
    tmp_path: Path, plant: Plant, kind: int
) -> None:
    config, tags = _bus(tmp_path, plant)
    clock = FakeClock()
    source = ModbusRtuSource(config, tags, clock)
    await source.connect()
    faults = plant.units["mill1"].faults
    # The simulator draws the kind of garbage from its seeded RNG: pick a seed that gives it.
    seed = next(s for s in range(100) if random.Random(s).randrange(2) == kind)
    faults.apply({"mode": "malformed", "seed": seed})
    got = _by_machine(tags, await source.poll(["1s"]))
    assert _bad(got, "mill1")
    for machine in ("press1", "press2", "loom1", "loom2"):
        _assert_truth(config, plant, got, machine)
    stats = source.statistics()
    assert stats.malformed == 1 and stats.extras["isolated_units"] == 1
    got = _by_machine(tags, await source.poll(["1s"]))  # skipped, no request
    assert _bad(got, "mill1") and source.statistics().malformed == 1
    faults.clear()
    clock.advance(1.0)
    got = _by_machine(tags, await source.poll(["1s"]))
    _assert_truth(config, plant, got, "mill1")


async def test_exception_is_bad_but_not_isolated(tmp_path: Path, plant: Plant) -> None:
    config, tags = _bus(tmp_path, plant)
    source = ModbusRtuSource(config, tags, FakeClock())
    await source.connect()
    plant.units["loom1"].faults.set("exception", code=4)
    for _ in range(2):
        got = _by_machine(tags, await source.poll(["1s"]))
        assert _bad(got, "loom1") and _good(got, "loom2")
    stats = source.statistics()
    planned = len(next(u for u in source.unit_groups("1s") if u.machine == "loom1").reads)
    assert stats.exceptions == 2 * planned  # it answers, so it is asked every poll
    assert stats.extras["isolated_units"] == 0


@pytest.mark.parametrize("mode", ["slow", "truncated"])
async def test_slow_and_truncated_are_timeouts(tmp_path: Path, plant: Plant, mode: str) -> None:
    config, tags = _bus(tmp_path, plant)
    source = ModbusRtuSource(config, tags, FakeClock())
    await source.connect()
    if mode == "slow":
        plant.units["press1"].faults.set("slow", delay="0.15s")
    else:
        plant.units["press1"].faults.set("truncated")
    got = _by_machine(tags, await source.poll(["1s"]))
    assert _bad(got, "press1")
    # The slow unit's late answer lands while the others are asked: it is not theirs.
    for machine in ("press2", "mill1", "loom1", "loom2"):
        _assert_truth(config, plant, got, machine)
    stats = source.statistics()
    assert stats.timeouts == 1 and stats.extras["isolated_units"] == 1


async def test_late_answer_is_flushed_before_the_next_request(plant: Plant) -> None:
    assert plant.rtu_path is not None
    link = RtuLink(plant.rtu_path, frame_pause=0.0)
    await link.open()
    plant.units["press1"].faults.set("slow", delay="0.1s")
    with pytest.raises(RequestTimeout):
        await link.read(1, 3, 0, 2, 0.05)
    plant.units["press1"].faults.clear()
    await asyncio.sleep(0.1)  # the bus, not a clock: the late answer must be on the wire
    payload = await link.read(1, 3, 0, 2, 0.5)
    assert len(payload) == 4
    assert link.stray_bytes == 9  # the late answer to the first request, dropped
    link.close()
    with pytest.raises(ConnectError, match="closed by the client"):
        await link.read(1, 3, 0, 2, 0.5)


async def test_unopenable_port_is_a_connect_error(tmp_path: Path, plant: Plant) -> None:
    config, tags = _bus(tmp_path, plant, port=str(tmp_path / "no-such-tty"))
    source = ModbusRtuSource(config, tags)
    with pytest.raises(ConnectError, match="no-such-tty"):
        await source.connect()
    with pytest.raises(ConnectError, match="not open"):
        await source.poll(["1s"])
    bad = source.bad_batches(["1s"], 7)
    assert len(bad) == 5 and all((b.quality == BAD).all() for b in bad)
    assert all(np.isnan(b.values).all() for b in bad)


def test_backoff_settings_are_checked(tmp_path: Path) -> None:
    config = ModbusRtuSourceConfig.model_validate(
        {
            "name": "bus",
            "type": "modbus_rtu",
            "port": "/dev/null",
            "units": [{"unit_id": 1, "machine": "m", "tags": [{"name": "a", "address": "hr:0"}]}],
        }
    )
    tags = TagTable([Tag(0, "s/a/l/m/a", "m", "a", "bus", "", 0, 0)])
    with pytest.raises(ValueError):
        ModbusRtuSource(config, tags, backoff_initial=2.0, backoff_max=1.0)
    assert ModbusRtuSource(config, tags).poll_groups() == {"1s": 1.0}


async def test_a_late_frame_back_to_back_with_the_answer_is_cut_off() -> None:
    # A bare pty pair plays the bus: another unit's late answer and ours arrive in one burst.
    master, slave = os.openpty()
    tty.setraw(slave)
    link = RtuLink(os.ttyname(slave), frame_pause=0.0)
    await link.open()
    try:
        loop = asyncio.get_running_loop()
        requests: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(master, lambda: requests.put_nowait(os.read(master, 64)))
        reading = asyncio.ensure_future(link.read(3, 4, 0, 2, 0.5))
        assert await asyncio.wait_for(requests.get(), 1.0) == rtu_read(3, 4, 0, 2)
        late = with_crc(bytes.fromhex("02 03 02 00 63"))
        ours = with_crc(bytes.fromhex("03 04 04 00 01 00 02"))
        os.write(master, late + ours)
        assert await reading == bytes.fromhex("00 01 00 02")
        assert link.stray_bytes == len(late)
        # A frame with a bad CRC is reported, and the port stays open.
        reading = asyncio.ensure_future(link.read(3, 4, 0, 2, 0.5))
        assert await asyncio.wait_for(requests.get(), 1.0) == rtu_read(3, 4, 0, 2)
        os.write(master, ours[:-1] + bytes([ours[-1] ^ 0xFF]))
        with pytest.raises(ProtocolError, match="bad CRC"):
            await reading
        assert link.is_open
    finally:
        loop.remove_reader(master)
        link.close()
        os.close(master)
        os.close(slave)

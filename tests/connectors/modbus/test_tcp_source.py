"""ModbusTcpSource against the simulated plant over real sockets: values, faults, deadlines."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import Config, load_config
from agent.errors import ConnectError
from agent.model import Quality, ReadingBatch
from agent.starter import starter_config
from agent.tags import TagTable
from connectors.modbus.config import ModbusTcpSourceConfig
from connectors.modbus.tcp_source import ModbusTcpSource
from firmware_sim.clock import ManualClock
from firmware_sim.plant import Plant, load_plant

pytestmark = pytest.mark.timeout(30)

GOOD, BAD = Quality.GOOD.value, Quality.BAD.value


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    clock = ManualClock()
    async with Plant(
        load_plant("demo").with_ephemeral_ports(), clock, opcua=False, rtu=False
    ) as running:
        clock.advance(900)  # a quarter of an hour in: counters and analogs move
        running.tick()
        yield running


def _config(tmp_path: Path, profile: str, plant: Plant, **settings: str) -> Config:
    """The starter config of `profile`, pointed at the plant's ports, with `settings` added."""
    ports = {e.machine: e.modbus_tcp.rsplit(":", 1)[1] for e in plant.endpoints()}
    text = starter_config(profile)
    for key in settings:  # the starter sets some keys (timeout, retries): replace them
        text = re.sub(rf"^{key} = .*\n", "", text, flags=re.MULTILINE)
    extra = "".join(f"{key} = {value}\n" for key, value in settings.items())

    def point(match: re.Match[str]) -> str:
        return f'name = "{match[1]}-plc"\n{match[2]}port = {ports[match[1]]}\n{extra}'

    text, n = re.subn(r'name = "(\w+)-plc"\n((?:.*\n){2})port = \d+\n', point, text)
    assert n >= 1
    path = tmp_path / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def _source(config: Config, machine: str, **backoff: Any) -> ModbusTcpSource:
    source = config.sources_by_name[f"{machine}-plc"]
    assert isinstance(source, ModbusTcpSourceConfig)
    return ModbusTcpSource(source, TagTable.from_config(config), **backoff)


def _readings(batches: list[ReadingBatch]) -> dict[int, tuple[float, int]]:
    out: dict[int, tuple[float, int]] = {}
    for batch in batches:
        for tag_id, value, quality in zip(batch.tag_ids, batch.values, batch.quality, strict=True):
            out[int(tag_id)] = (float(value), int(quality))
    return out


def _check_truth(
    config: Config, machine: str, truth: Mapping[str, object], batches: list[ReadingBatch]
) -> int:
    """Every numeric tag of `machine` reads its model value, within the register's resolution."""
    tags = TagTable.from_config(config)
    got = _readings(batches)
    checked = 0
    for tag in config.tags_of(machine):
        expected = truth[tag.name]
        tag_id = tags.id_of(machine, tag.name)
        if isinstance(expected, str):
            assert tag_id not in got  # strings are not part of a ReadingBatch
            continue
        value, quality = got[tag_id]
        assert quality == GOOD, tag.name
        scale = getattr(tag, "scale", 1.0)
        tolerance = abs(scale) / 2 + 1e-6 * abs(float(expected))  # type: ignore[arg-type]
        assert value == pytest.approx(float(expected), abs=tolerance), tag.name  # type: ignore[arg-type]
        checked += 1
    return checked


@pytest.mark.parametrize("in_flight", [1, 4])
@pytest.mark.parametrize("profile", ["press", "cement", "loom"])
async def test_every_tag_reads_the_models_value(
    tmp_path: Path, plant: Plant, profile: str, in_flight: int
) -> None:
    config = _config(tmp_path, profile, plant, max_in_flight=str(in_flight), max_gap="0")
    for source_config in config.sources:
        machine = source_config.machines()[0]
        source = _source(config, machine)
        await source.connect()
        groups = list(source.poll_groups())
        batches = await source.poll(groups)
        assert all(b.source == source.name for b in batches)
        assert _check_truth(config, machine, plant.machines[machine].values(), batches) >= 8
        stats = source.statistics()
        planned = sum(len(u.reads) for g in groups for u in source.unit_groups(g))
        assert planned > 1  # max_gap 0 gives several requests: pipelining has work to do
        assert stats.requests == stats.responses == planned
        assert stats.bytes_out == 12 * planned
        assert stats.timeouts == stats.exceptions == stats.malformed == 0
        assert 0 < stats.latency_p50_s <= stats.latency_p99_s < 1.0
        assert stats.latency is not None
        assert stats.latency.count == stats.responses  # one latency per answer, every wave
        assert 0 < stats.latency_last_s < 1.0
        await source.close()


async def test_batches_carry_the_arrival_time(tmp_path: Path, plant: Plant) -> None:
    source = _source(_config(tmp_path, "press", plant), "press1")
    await source.connect()
    before = time.time_ns()
    (batch,) = await source.poll(["1s"])
    assert before <= int(batch.ts_ns[0]) <= time.time_ns()
    assert batch.ts_ns.shape == (1,)
    await source.close()


async def test_each_poll_hands_over_arrays_of_its_own(tmp_path: Path, plant: Plant) -> None:
    # A poll's batches are made once and reused by the next polls, their arrays are not: the
    # readings a poll handed over stay as they were read.
    source = _source(_config(tmp_path, "press", plant), "press1")
    await source.connect()
    first = await source.poll(["1s"])
    kept = [(b.values.copy(), b.quality.copy(), b.ts_ns.copy()) for b in first]
    second = await source.poll(["1s"])
    assert len(first) == len(second) >= 1
    for old, new, (values, quality, ts) in zip(first, second, kept, strict=True):
        assert not np.shares_memory(old.values, new.values)
        assert not np.shares_memory(old.quality, new.quality)
        assert np.array_equal(old.values, values) and np.array_equal(old.quality, quality)
        assert np.array_equal(old.ts_ns, ts) and int(new.ts_ns[0]) >= int(ts[0])
        assert (new.quality == GOOD).all()
    await source.close()


async def test_a_tag_with_its_own_interval_is_its_own_group(tmp_path: Path, plant: Plant) -> None:
    config = _config(tmp_path, "press", plant)
    path = tmp_path / "lineside.toml"
    text = path.read_text().replace(
        'name = "tonnage", address = "hr:12", type = "float32"',
        'name = "tonnage", address = "hr:12", type = "float32", interval = "250ms"',
    )
    assert text != path.read_text()
    path.write_text(text)
    config = load_config(path)
    source = _source(config, "press1")
    assert source.poll_groups() == {"250ms": 0.25, "1s": 1.0}
    await source.connect()
    (fast,) = await source.poll(["250ms"])
    tonnage = TagTable.from_config(config).id_of("press1", "tonnage")
    assert fast.tag_ids.tolist() == [tonnage]
    assert fast.values[0] == pytest.approx(plant.machines["press1"].values()["tonnage"], rel=1e-6)
    (slow,) = await source.poll(["1s"])
    assert tonnage not in slow.tag_ids.tolist()
    await source.close()


async def test_exception_makes_only_its_request_bad(tmp_path: Path, plant: Plant) -> None:
    # hr:2000 lies past the simulator's register image: that one request gets exception 02.
    config = _config(tmp_path, "press", plant)
    path = tmp_path / "lineside.toml"
    text = path.read_text().replace(
        "tags = [\n", 'tags = [\n  { name = "beyond", address = "hr:2000", type = "uint16" },\n', 1
    )
    path.write_text(text)
    config = load_config(path)
    source = _source(config, "press1")
    await source.connect()
    batches = await source.poll(["1s"])
    got = _readings(batches)
    beyond = TagTable.from_config(config).id_of("press1", "beyond")
    assert math.isnan(got[beyond][0]) and got[beyond][1] == BAD
    assert sum(1 for _, q in got.values() if q == GOOD) == len(got) - 1
    stats = source.statistics()
    assert stats.exceptions == 1
    assert stats.latency is not None
    assert stats.latency.count == stats.responses == stats.requests - 1  # none for the refusal


async def test_device_exception_on_every_request(tmp_path: Path, plant: Plant) -> None:
    # No gap bridged: a bridged read refused with 02 is split and sent again (test_holes.py).
    config = _config(tmp_path, "press", plant, retries="1", max_gap="0")
    source = _source(config, "press1")
    await source.connect()
    plant.units["press1"].faults.set("exception", code=2)
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == BAD).all() and np.isnan(batch.values).all()
    planned = len(source.unit_groups("1s")[0].reads)
    # 02 is final: no retry. 06 (busy) is asked again once.
    assert source.statistics().exceptions == planned
    plant.units["press1"].faults.set("exception", code=6)
    await source.poll(["1s"])
    assert source.statistics().exceptions == planned + 2 * planned
    plant.units["press1"].faults.clear()
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == GOOD).all()


async def test_a_silent_device_is_bad_within_one_timeout(tmp_path: Path, plant: Plant) -> None:
    config = _config(tmp_path, "press", plant, timeout='"150ms"', retries="1", max_gap="0")
    source = _source(config, "press1")
    await source.connect()
    planned = len(source.unit_groups("1s")[0].reads)
    assert planned >= 4
    plant.units["press1"].faults.set("slow", delay="2s")
    started = time.monotonic()
    (batch,) = await source.poll(["1s"])
    elapsed = time.monotonic() - started
    assert (batch.quality == BAD).all()
    # The first timeout isolates the unit: its other requests are not sent. Before, each
    # request waited its timeout, retried: requests x (retries + 1) x timeout.
    assert elapsed < planned * 2 * 0.15
    stats = source.statistics()
    assert stats.timeouts == 1 and stats.responses == 0
    assert stats.extras["skipped_requests"] == planned - 1 and stats.extras["isolated_units"] == 1
    # The text tag (die_id) is bad for the reason of its request too.
    texts = len(source.texts.tag_ids)
    assert texts == 1
    assert source.reasons.summary() == {"timeout after 150ms": len(batch) + texts}
    # Within its back-off (1 s) the next poll sends nothing and is bad at once, for the reason.
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == BAD).all()
    assert source.statistics().requests == 1
    assert set(source.reasons.by_tag().values()) == {"timeout after 150ms"}
    await source.close()


async def test_pipelined_timeouts_share_the_wait(tmp_path: Path, plant: Plant) -> None:
    config = _config(
        tmp_path, "press", plant, timeout='"150ms"', retries="0", max_gap="0", max_in_flight="4"
    )
    source = _source(config, "press1")
    await source.connect()
    plant.units["press1"].faults.set("slow", delay="2s")
    started = time.monotonic()
    (batch,) = await source.poll(["1s"])
    planned = len(source.unit_groups("1s")[0].reads)
    assert (batch.quality == BAD).all()
    assert time.monotonic() - started < math.ceil(planned / 4) * 0.15 + 0.15


async def test_malformed_answer_is_bad_then_the_link_reconnects(
    tmp_path: Path, plant: Plant
) -> None:
    source = _source(_config(tmp_path, "press", plant, max_gap="0"), "press1", backoff_initial=0.2)
    await source.connect()
    plant.units["press1"].faults.set("malformed")
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == BAD).all()
    assert source.statistics().malformed == 1  # the rest of the poll was not even sent
    assert source.statistics().aborted == len(source.unit_groups("1s")[0].reads) - 1
    with pytest.raises(ConnectError, match="after a malformed answer"):
        await source.poll(["1s"])
    plant.units["press1"].faults.clear()
    await source.connect()
    # The unit garbled an answer: it is isolated for its back-off, then asked again.
    requests = source.statistics().requests
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == BAD).all() and source.statistics().requests == requests
    assert set(source.reasons.by_tag().values()) == {"malformed answer"}
    deadline = time.monotonic() + 5
    while not (batch.quality == GOOD).all() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        (batch,) = await source.poll(["1s"])
    assert (batch.quality == GOOD).all()
    assert source.reasons.summary() == {}
    assert source.statistics().reconnects == 1


async def test_truncated_answer_is_a_timeout(tmp_path: Path, plant: Plant) -> None:
    config = _config(tmp_path, "press", plant, timeout='"150ms"', retries="0")
    source = _source(config, "press1")
    await source.connect()
    plant.units["press1"].faults.set("truncated")
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == BAD).all()
    assert source.statistics().timeouts == 1  # half an answer: the stream is closed
    with pytest.raises(ConnectError, match="half a frame"):
        await source.poll(["1s"])


async def test_refused_and_dropped_connections_raise(tmp_path: Path, plant: Plant) -> None:
    source = _source(_config(tmp_path, "press", plant), "press1")
    plant.units["press1"].faults.set("refuse")
    with pytest.raises(ConnectError):
        await source.connect()
        await source.poll(["1s"])  # the simulator accepts, then closes at once
    plant.units["press1"].faults.set("drop")
    await source.connect()
    with pytest.raises(ConnectError):
        await source.poll(["1s"])
    bad = source.bad_batches(["1s"], 123)
    assert len(bad) == 1 and (bad[0].quality == BAD).all() and np.isnan(bad[0].values).all()
    assert bad[0].ts_ns.tolist() == [123]
    assert len(bad[0]) == len(source.unit_groups("1s")[0].tag_ids)


async def test_reboot_drops_the_link_and_counters_restart(tmp_path: Path, plant: Plant) -> None:
    config = _config(tmp_path, "press", plant)
    source = _source(config, "press1")
    part_count = TagTable.from_config(config).id_of("press1", "part_count")
    await source.connect()
    before = _readings(await source.poll(["1s"]))[part_count][0]
    assert before > 100
    plant.units["press1"].faults.set("reboot", down_time="60s")
    with pytest.raises(ConnectError):
        await source.poll(["1s"])
    with pytest.raises(ConnectError):  # down: refused while it reboots
        await source.connect()
        await source.poll(["1s"])
    plant.units["press1"].faults.clear()  # back up
    assert isinstance(plant.clock, ManualClock)
    plant.clock.advance(60)
    plant.tick()
    await source.connect()
    batches = await source.poll(["1s"])
    after = _readings(batches)[part_count][0]
    assert after == plant.machines["press1"].values()["part_count"]
    assert 0 < after < before
    _check_truth(config, "press1", plant.machines["press1"].values(), batches)


async def test_inter_request_delay_spaces_requests(tmp_path: Path, plant: Plant) -> None:
    config = _config(
        tmp_path, "press", plant, inter_request_delay='"40ms"', max_gap="0", max_in_flight="4"
    )
    source = _source(config, "press1")
    await source.connect()
    planned = len(source.unit_groups("1s")[0].reads)
    started = time.monotonic()
    (batch,) = await source.poll(["1s"])
    assert (batch.quality == GOOD).all()
    assert time.monotonic() - started >= planned * 0.04 - 0.01


async def test_poll_before_connect_raises(tmp_path: Path, plant: Plant) -> None:
    source = _source(_config(tmp_path, "press", plant), "press1")
    with pytest.raises(ConnectError, match="not connected"):
        await source.poll(["1s"])

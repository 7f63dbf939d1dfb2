"""The simulated plant over S7: python-snap7's client reads it against the models' values, and
lineside reads it with a config from `init --protocol s7`; the S7 map is derived, not typed."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import snap7
from snap7.util import get_bool, get_dint, get_dword, get_int, get_lreal, get_real, get_word

from agent.config import load_config
from agent.errors import ConnectError
from agent.model import Quality
from agent.starter import starter_config
from agent.tags import TagTable
from connectors.s7.config import S7SourceConfig
from connectors.s7.source import S7Source
from firmware_sim.clock import ManualClock
from firmware_sim.plant import Plant, load_plant
from firmware_sim.profile import KINDS, load_profile
from firmware_sim.s7_map import S7Tag, s7_map

pytestmark = pytest.mark.timeout(60)

GETTERS = {
    "WORD": get_word,
    "INT": get_int,
    "DWORD": get_dword,
    "DINT": get_dint,
    "REAL": get_real,
    "LREAL": get_lreal,
}


@pytest.fixture
async def plant() -> AsyncIterator[Plant]:
    spec = load_plant("demo").with_ephemeral_ports()
    clock = ManualClock()
    async with Plant(spec, clock, opcua=False, rtu=False, s7=True) as running:
        clock.advance(900)
        running.tick()
        yield running


def engineering(tag: S7Tag, raw: float) -> float:
    p = tag.profile_tag
    return raw if tag.type == "BOOL" else raw * p.scale + p.offset


def expected(value: object) -> float:
    return float(value)  # type: ignore[arg-type]


def read_with_snap7(endpoint: str, tags: tuple[S7Tag, ...]) -> dict[str, float]:
    """python-snap7's own synchronous client: db_read and its util getters."""
    host, port = endpoint.rsplit(":", 1)
    client = snap7.Client()
    client.connect(host, 0, 1, int(port))
    try:
        out = {}
        for tag in tags:
            data = client.db_read(tag.db, tag.byte, tag.size)
            raw = (
                float(get_bool(data, 0, tag.bit or 0))
                if tag.type == "BOOL"
                else GETTERS[tag.type](data, 0)
            )
            out[tag.name] = engineering(tag, raw)
        return out
    finally:
        client.disconnect()


def test_every_profile_maps_to_s7_without_overlaps() -> None:
    for kind in KINDS:
        mapped = s7_map(load_profile(kind))
        assert {t.name for t in mapped.tags} | set(mapped.skipped) == set(
            load_profile(kind).tag_names
        )
        # the strings (and 64-bit integers) are the ones left out
        assert all(
            load_profile(kind).tag(n).type in ("string", "int64", "uint64") for n in mapped.skipped
        )
        taken: dict[tuple[int, int, int | None], str] = {}
        for tag in mapped.tags:
            for byte in range(tag.byte, tag.byte + tag.size):
                key = (tag.db, byte, tag.bit) if tag.type == "BOOL" else (tag.db, byte, None)
                assert key not in taken, (kind, tag.name, taken.get(key))
                taken[key] = tag.name


async def test_snap7s_client_reads_the_simulators_values(plant: Plant) -> None:
    for endpoint in plant.endpoints():
        assert endpoint.s7 is not None
        machine = plant.machines[endpoint.machine]
        tags = s7_map(machine.profile).tags
        got = await asyncio.to_thread(read_with_snap7, endpoint.s7, tags)
        truth = machine.values()
        for tag in tags:
            p = tag.profile_tag
            want = expected(truth[tag.name])
            # integers are stored as round((value - offset) / scale): half a step at most
            step = abs(p.scale) / 2 if tag.type not in ("REAL", "LREAL", "BOOL") else 0
            assert math.isclose(got[tag.name], want, rel_tol=1e-6, abs_tol=step + 1e-9), (
                endpoint.machine,
                tag.name,
                got[tag.name],
                want,
            )


def s7_plant_config(tmp_path: Path, plant: Plant, profile: str) -> Path:
    """`init --profile <profile> --protocol s7`, pointed at the plant's S7 ports."""
    ports = {e.machine: (e.s7 or "").rsplit(":", 1)[1] for e in plant.endpoints()}
    text = starter_config(profile, "s7")
    text, n = re.subn(
        r'name = "(\w+)-plc"\n((?:.*\n){2})port = \d+',
        lambda m: f'name = "{m[1]}-plc"\n{m[2]}port = {ports[m[1]]}',
        text,
    )
    assert n >= 1
    path = tmp_path / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_lineside_reads_the_simulator_through_its_starter_config(
    tmp_path: Path, plant: Plant
) -> None:
    config = load_config(s7_plant_config(tmp_path, plant, "press"))
    tags = TagTable.from_config(config)
    for source_config in config.sources:
        assert isinstance(source_config, S7SourceConfig)
        source = S7Source(source_config, tags)
        await source.connect()
        try:
            batches = await source.poll(list(source.poll_groups()))
        finally:
            await source.close()
        truth = plant.machines[source_config.machine].values()
        for batch in batches:
            assert batch.quality.tolist() == [Quality.GOOD] * len(batch.quality)
            for tag_id, value in zip(batch.tag_ids.tolist(), batch.values.tolist(), strict=True):
                name = tags.tags[tag_id].name
                scale = load_profile("press").tag(name).scale
                assert math.isclose(value, expected(truth[name]), abs_tol=abs(scale) / 2 + 1e-6), (
                    name
                )
        assert source.statistics().requests == source.plans()["1s"].minimum_requests


@pytest.mark.parametrize("mode", ["malformed", "truncated", "drop", "exception"])
async def test_faults_over_s7_never_store_a_wrong_value_as_good(
    tmp_path: Path, plant: Plant, mode: str
) -> None:
    config = load_config(s7_plant_config(tmp_path, plant, "press"))
    tags = TagTable.from_config(config)
    source_config = config.sources_by_name["press1-plc"]
    assert isinstance(source_config, S7SourceConfig)
    source = S7Source(source_config, tags)
    await source.connect()
    gone: ConnectError | None = None
    try:
        plant.units["press1"].faults.set(mode)
        try:
            batches = await source.poll(["1s"])
        except ConnectError as exc:  # the CPU closed the connection: the link loop's case
            gone, batches = exc, source.bad_batches(["1s"], 0)
        plant.units["press1"].faults.clear()
    finally:
        await source.close()
    for batch in batches:
        assert set(batch.quality.tolist()) == {Quality.BAD}
        assert all(math.isnan(v) for v in batch.values.tolist())
    if mode == "drop":
        assert gone is not None and "connection lost" in str(gone)
    else:
        assert gone is None
        assert set(source.reasons.by_tag()) == {int(i) for i in batches[0].tag_ids}


@pytest.mark.parametrize("profile", ["press", "cement", "loom"])
def test_init_protocol_s7_writes_the_simulators_addresses(tmp_path: Path, profile: str) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config(profile, "s7"), encoding="utf-8")
    config = load_config(path)
    for n, source in enumerate(config.sources):
        assert isinstance(source, S7SourceConfig)
        assert (source.port, source.rack, source.slot) == (10200 + n, 0, 1)
        kind = next(m.kind for m in config.machines if m.name == source.machine)
        assert kind is not None
        mapped = {t.name: t.address for t in s7_map(load_profile(kind)).tags}
        assert {t.name: str(t.address) for t in source.tags} == mapped

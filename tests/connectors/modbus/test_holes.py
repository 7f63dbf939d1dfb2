"""Reads through unused addresses: bridged by default on TCP, split when the device refuses.

A simulated PLC whose register map has holes (firmware-sim's `RegisterImage.unmapped`) answers
exception 02 to any read that touches one, as a real PLC does; the source must then read the
same tags without the holes, in the same poll, and keep doing so.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from agent.model import Quality, ReadingBatch
from agent.tags import TagTable
from benchmarks.workloads import scattered_mixed
from connectors.modbus.address import Table as WireTable
from connectors.modbus.config import ModbusRtuSourceConfig, ModbusTcpSourceConfig
from connectors.modbus.planner import PlanTag, plan_unit, split_request
from connectors.modbus.rtu_source import ModbusRtuSource
from connectors.modbus.tcp_source import ModbusTcpSource
from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage, Table
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_rtu import ModbusRtuServer
from firmware_sim.modbus_tcp import ModbusTcpServer

pytestmark = pytest.mark.timeout(30)

HR, CO = Table.HOLDING_REGISTERS, Table.COILS
# Tags either side of a hole in each table; the holes are inside what one read would bridge.
TAGS = [
    ("a", "hr:0", 11),
    ("b", "hr:30", 22),
    ("c", "hr:40", 33),
    ("d", "co:0", 1),
    ("e", "co:90", 1),
]
HOLES = {HR: ((10, 19),), CO: ((50, 60),)}


def _image(holes: bool) -> RegisterImage:
    image = RegisterImage(size=200, unmapped=dict(HOLES) if holes else {})
    for _, address, value in TAGS:
        table, offset = address.split(":")
        if table == "hr":
            image.set_registers(HR, int(offset), value.to_bytes(2, "big"))
        else:
            image.set_bit(CO, int(offset), bool(value))
    return image


@pytest.fixture(params=[True, False], ids=["holes", "no-holes"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[ModbusTcpServer]:
    running = ModbusTcpServer({1: Unit(_image(request.param), Faults())})
    await running.start()
    yield running
    await running.stop()


def _source(
    tmp_path: Path,
    port: int,
    tags: list[tuple[str, str, str]] | None = None,
    settings: dict[str, str] | None = None,
) -> tuple[ModbusTcpSource, TagTable]:
    """A TCP source of one unit with `tags` (name, address, type), by default TAGS."""
    if tags is None:
        tags = [(n, a, "bool" if a.startswith("co") else "uint16") for n, a, _ in TAGS]
    extra = "".join(f"{key} = {value}\n" for key, value in (settings or {}).items())
    rows = "\n".join(
        f'[[sources.units.tags]]\nname = "{name}"\naddress = "{address}"\ntype = "{kind}"'
        for name, address, kind in tags
    )
    text = (
        'config_version = 1\n[agent]\nid = "t"\ndata_dir = "data"\n[plant]\nsite = "s"\n'
        '[[machines]]\nname = "m"\narea = "a"\nline = "l"\n'
        '[[sources]]\nname = "plc"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntimeout = "1s"\n{extra}'
        f'[[sources.units]]\nunit_id = 1\nmachine = "m"\npoll_interval = "1s"\n{rows}\n'
    )
    path = tmp_path / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    (spec,) = config.sources
    assert isinstance(spec, ModbusTcpSourceConfig)
    table = TagTable.from_config(config)
    return ModbusTcpSource(spec, table), table


def _values(batches: list[ReadingBatch], table: TagTable) -> dict[str, float]:
    out: dict[str, float] = {}
    for batch in batches:
        assert bool(np.all(batch.quality == Quality.GOOD.value)), batch
        for tag_id, value in zip(batch.tag_ids, batch.values, strict=True):
            out[table.by_id(int(tag_id)).name] = float(value)
    return out


def _spans(source: ModbusTcpSource) -> list[str]:
    return [
        f"{r.table.value}:{r.start}+{r.count}" for r in source.unit_groups("1s")[0].plan.requests
    ]


@pytest.mark.parametrize("spacing", [{}, {"inter_request_delay": '"5ms"'}], ids=["waves", "spaced"])
async def test_a_refused_bridged_read_is_split_in_the_same_poll_and_kept(
    tmp_path: Path,
    server: ModbusTcpServer,
    spacing: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    holes = bool(server.units[1].image.unmapped)
    source, table = _source(tmp_path, server.port, settings={"max_in_flight": "4", **spacing})
    # The default bridges both gaps: one read per table.
    assert _spans(source) == ["co:0+91", "hr:0+41"]
    expected = {name: float(value) for name, _, value in TAGS}
    await source.connect()
    try:
        with caplog.at_level(logging.WARNING, logger="lineside.source"):
            first = await source.poll(["1s"])
            assert _values(first, table) == expected  # no poll lost to the holes
            exceptions = server.stats.exceptions
            requests = server.stats.requests
            for _ in range(3):
                assert _values(await source.poll(["1s"]), table) == expected
    finally:
        await source.close()
    split = [r for r in caplog.records if "illegal data address (02)" in r.getMessage()]
    if holes:
        assert exceptions == 2  # each bridged read refused once, then never sent again
        assert server.stats.exceptions == 2
        assert _spans(source) == ["co:0+1", "co:90+1", "hr:0+1", "hr:30+1", "hr:40+1"]
        assert server.stats.requests - requests == 3 * 5
        assert len(split) == 2  # logged once per split read, not once per poll
        assert "hr:0+41" in split[1].getMessage() and "hr:30+1" in split[1].getMessage()
        assert source.reasons.summary() == {}  # the parts read good: no reason left
        assert source.reasons.tags() == len(TAGS)
    else:
        assert (exceptions, requests) == (0, 2)
        assert _spans(source) == ["co:0+91", "hr:0+41"]
        assert split == []


async def test_a_part_refused_again_reads_bad_with_its_reason(tmp_path: Path) -> None:
    """A tag whose own address is unmapped stays bad after the split; its neighbours read."""
    image = _image(True)
    image.unmapped[HR] = ((10, 19), (30, 30))
    running = ModbusTcpServer({1: Unit(image, Faults())})
    await running.start()
    source, table = _source(tmp_path, running.port)
    await source.connect()
    try:
        batches = await source.poll(["1s"])
        await source.poll(["1s"])
    finally:
        await source.close()
        await running.stop()
    got = {
        table.by_id(int(i)).name: int(q)
        for b in batches
        for i, q in zip(b.tag_ids, b.quality, strict=True)
    }
    assert got == {"a": 0, "b": Quality.BAD.value, "c": 0, "d": 0, "e": 0}
    assert source.reasons.summary() == {"illegal data address (02)": 1}


def test_the_default_gap_reaches_the_fewest_reads_of_w3(tmp_path: Path) -> None:
    """W3's scattered layout: the TCP default plans the fewest reads the 125-register limit
    allows (hr spans 201 registers and ir 137, so two reads each, one per bit table)."""
    layout = scattered_mixed()
    source, _ = _source(tmp_path, 502, [(t.name, t.address, t.type) for t in layout])
    tags = [PlanTag(i, t.table, t.offset, t.width, t.type) for i, t in enumerate(layout)]
    fewest = plan_unit(tags, max_gap=124, max_bit_gap=1999).requests_per_poll
    assert fewest == 6
    assert source.unit_groups("1s")[0].plan.requests_per_poll == fewest


def test_a_split_keeps_the_tags_in_the_reads_order() -> None:
    HR = WireTable.HOLDING_REGISTERS
    tags = [
        PlanTag(3, HR, 0, 2, "float32"),
        PlanTag(1, HR, 2, 1, "uint16"),
        PlanTag(2, HR, 40, 1, "bool", bit=3),
        PlanTag(0, HR, 40, 1, "bool", bit=0),
        PlanTag(4, HR, 90, 4, "float64"),
    ]
    (request,) = plan_unit(tags, max_gap=124).requests
    parts = split_request(request)
    assert [(p.start, p.count) for p in parts] == [(0, 3), (40, 1), (90, 4)]
    assert [t.tag_id for p in parts for t in p.tags] == [t.tag_id for t in request.tags]
    assert all(p.wasted == 0 for p in parts)
    assert split_request(parts[0]) == (parts[0],)


async def test_on_rtu_a_refused_bridged_read_is_split_too(tmp_path: Path) -> None:
    """The serial source reads the parts one at a time, in the same poll."""
    server = ModbusRtuServer({1: Unit(_image(True), Faults())}, baudrate=115200)
    port = await server.start()
    source, table = _source(tmp_path, 502, settings={"max_gap": "40"})
    tcp = source.unit_groups("1s")[0]
    assert len(tcp.reads) == 2  # co:0+91 (40 registers are 640 bits), hr:0+41
    spec = ModbusRtuSourceConfig.model_validate(
        {
            "name": "bus",
            "type": "modbus_rtu",
            "port": port,
            "baudrate": 115200,
            "timeout": "200ms",
            "frame_pause": "0s",
            "max_gap": 40,
            "units": [
                {
                    "unit_id": 1,
                    "machine": "m",
                    "tags": [
                        {"name": n, "address": a, "type": "bool" if a[:2] == "co" else "uint16"}
                        for n, a, _ in TAGS
                    ],
                }
            ],
        }
    )
    rtu = ModbusRtuSource(spec, table)
    await rtu.connect()
    try:
        first = await rtu.poll(["1s"])
        second = await rtu.poll(["1s"])
    finally:
        await rtu.close()
        await server.stop()
    expected = {name: float(value) for name, _, value in TAGS}
    assert _values(first, table) == expected and _values(second, table) == expected
    assert rtu.statistics().exceptions == 2  # co:0+91 and hr:0+41, once each
    spans = [f"{r.table.value}:{r.start}+{r.count}" for r in rtu.unit_groups("1s")[0].plan.requests]
    assert spans == ["co:0+1", "co:90+1", "hr:0+1", "hr:30+1", "hr:40+1"]

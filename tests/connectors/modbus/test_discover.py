"""Discovery: the scan logic against device maps with holes, then the simulator over real TCP."""

import asyncio
import csv
import socket
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConnectError
from connectors.modbus.address import Table
from connectors.modbus.discover import discover, parse_target, parse_units, scan_table
from connectors.modbus.findings import (
    DROPPED,
    ILLEGAL_ADDRESS,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    OK,
    TIMEOUT,
    Answer,
    TableScan,
    UnitProbe,
    UnitScan,
    format_units,
    tag_rows,
    tags_path,
    write_tags,
)
from firmware_sim.image import RegisterImage
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer

# -- a device map as data: readable half-open ranges per table -------------------------------


class MapDevice:
    """Answers reads like a device whose readable addresses are `ranges` (02 elsewhere)."""

    def __init__(
        self,
        ranges: Mapping[Table, list[tuple[int, int]]],
        *,
        max_count: int = 2000,
        missing: Answer = ILLEGAL_ADDRESS,
        no_function: frozenset[Table] = frozenset(),
    ) -> None:
        self.readable = {t: set(a for s, e in r for a in range(s, e)) for t, r in ranges.items()}
        self.max_count = max_count
        self.missing = missing
        self.no_function = no_function
        self.reads: list[tuple[Table, int, int]] = []

    async def read(self, table: Table, start: int, count: int) -> Answer:
        self.reads.append((table, start, count))
        if table in self.no_function:
            return ILLEGAL_FUNCTION
        if count > self.max_count:
            return ILLEGAL_VALUE
        have = self.readable.get(table, set())
        if all(a in have for a in range(start, start + count)):
            return OK
        return self.missing


HR = Table.HOLDING_REGISTERS

MAPS = [
    pytest.param([(0, 1024)], id="contiguous from 0 (the simulator's layout)"),
    pytest.param([(0, 125)], id="exactly one block"),
    pytest.param([(0, 10), (120, 130), (1000, 1100)], id="three islands with gaps"),
    pytest.param([(0, 10), (250, 260), (7777, 7900)], id="islands starting on and off the grid"),
    pytest.param([(40, 300)], id="begins inside the first block"),
    pytest.param([(0, 10), (124, 130)], id="second island touches a block's last address"),
    pytest.param([(9990, 10000)], id="only at the top"),
    pytest.param([(0, 10000)], id="everything"),
    pytest.param([], id="nothing"),
    pytest.param([(0, 1), (125, 126), (9999, 10000)], id="single addresses on the grid"),
    pytest.param([(3000, 3400), (3500, 3750)], id="two ranges, each reaching a block end"),
]


@pytest.mark.parametrize("ranges", MAPS)
async def test_readable_ranges_are_found_exactly(ranges: list[tuple[int, int]]) -> None:
    device = MapDevice({HR: ranges})
    scan = await scan_table(device.read, HR, 9999)
    assert scan.readable == tuple(ranges)
    assert scan.requests == len(device.reads)
    assert scan.doubtful == 0 and not scan.unsupported


@pytest.mark.parametrize("ranges", MAPS)
async def test_the_number_of_reads_stays_bounded(ranges: list[tuple[int, int]]) -> None:
    # One read per block plus at most two binary searches (7 reads each) per boundary.
    device = MapDevice({HR: ranges})
    scan = await scan_table(device.read, HR, 9999)
    probes = 80  # one per 125 addresses in unreadable space
    assert scan.requests <= probes + 2 * (1 + 7) * max(1, len(ranges)) * 2


async def test_an_empty_table_costs_one_read_per_125_addresses() -> None:
    device = MapDevice({})
    for table in (HR, Table.COILS):
        scan = await scan_table(device.read, table, 9999)
        assert scan.readable == ()
        # the first block, address 0, then 125, 250, ..., 9875 and 9999
        assert scan.requests == 1 + 1 + 79 + 1


async def test_bit_tables_are_scanned_in_2000_bit_blocks() -> None:
    device = MapDevice({Table.COILS: [(0, 1024)], Table.DISCRETE_INPUTS: [(100, 160)]})
    coils = await scan_table(device.read, Table.COILS, 9999)
    inputs = await scan_table(device.read, Table.DISCRETE_INPUTS, 9999)
    assert coils.readable == ((0, 1024),)
    assert inputs.readable == ((100, 160),)
    # 0..1999 fails, 1 + 10 reads find its readable prefix, then one probe per 125 addresses.
    assert coils.requests <= 1 + 11 + 72 + 1
    assert max(count for _, _, count in device.reads) == 2000


async def test_an_island_between_two_probes_is_missed_as_documented() -> None:
    # 10..19 follows the unreadable 5 and holds no multiple of 125: nothing probes it.
    device = MapDevice({HR: [(0, 5), (10, 20), (300, 310)]})
    scan = await scan_table(device.read, HR, 999)
    assert scan.readable == ((0, 5),)


async def test_a_run_longer_than_the_device_limit_is_followed_back_to_its_start() -> None:
    device = MapDevice({HR: [(0, 3), (10, 400)]}, max_count=40)
    scan = await scan_table(device.read, HR, 999)
    assert scan.readable == ((0, 3), (10, 400))
    assert max(count for _, _, count in device.reads if count <= 40) <= 40


async def test_a_lower_device_limit_shrinks_the_blocks() -> None:
    device = MapDevice({HR: [(0, 500)]}, max_count=60)
    scan = await scan_table(device.read, HR, 999)
    assert scan.readable == ((0, 500),)
    assert max(count for _, _, count in device.reads if count <= 60) <= 60


async def test_a_device_answering_03_for_missing_addresses_is_understood() -> None:
    device = MapDevice({HR: [(0, 200)]}, max_count=125, missing=ILLEGAL_VALUE)
    scan = await scan_table(device.read, HR, 999)
    assert scan.readable == ((0, 200),)
    assert scan.requests < 60


async def test_a_missing_function_ends_the_table_at_once() -> None:
    device = MapDevice({}, no_function=frozenset({Table.COILS}))
    scan = await scan_table(device.read, Table.COILS, 9999)
    assert scan.unsupported and scan.readable == () and scan.requests == 1


async def test_timeouts_count_as_unreadable_and_doubtful() -> None:
    device = MapDevice({HR: [(0, 50)]}, missing=TIMEOUT)
    scan = await scan_table(device.read, HR, 249)
    assert scan.readable == ((0, 50),)
    assert scan.doubtful > 0


async def test_bad_scan_arguments_are_refused() -> None:
    device = MapDevice({})
    with pytest.raises(ValueError, match="max-address"):
        await scan_table(device.read, HR, 65536)
    with pytest.raises(ValueError, match="block"):
        await scan_table(device.read, HR, 100, block=126)
    assert device.reads == []


# -- arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("plc.local", ("plc.local", 502)),
        ("10.0.0.5:5020", ("10.0.0.5", 5020)),
        ("[::1]:1502", ("::1", 1502)),
        ("[fe80::1]", ("fe80::1", 502)),
    ],
)
def test_targets(text: str, want: tuple[str, int]) -> None:
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["", ":502", "host:0", "host:70000", "host:port", "a b:1"])
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError):
        parse_target(text)


def test_unit_ranges() -> None:
    assert parse_units("1-247") == tuple(range(1, 248))
    assert parse_units("1,2,10-12, 2") == (1, 2, 10, 11, 12)
    assert parse_units("0,255") == (0, 255)


@pytest.mark.parametrize("text", ["", "1-", "x", "5-3", "1,,2", "256", "250-260", "-1"])
def test_bad_unit_ranges(text: str) -> None:
    with pytest.raises(ValueError):
        parse_units(text)


def test_unit_ids_print_as_ranges() -> None:
    assert format_units([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    assert format_units(range(1, 248)) == "1-247"
    assert format_units([]) == ""
    assert parse_units(format_units([0, 4, 5, 6, 255])) == (0, 4, 5, 6, 255)


def test_probe_answers() -> None:
    assert UnitProbe(1, OK).present
    assert UnitProbe(1, ILLEGAL_ADDRESS).present  # there, just without hr:0
    assert UnitProbe(1, ILLEGAL_FUNCTION).present
    assert not UnitProbe(1, 0x0B).present
    assert not UnitProbe(1, 0x0A).present
    assert not UnitProbe(1, TIMEOUT).present
    assert not UnitProbe(1, DROPPED).present


# -- the tag list ------------------------------------------------------------------------------


def test_tag_rows_share_the_cap_between_tables() -> None:
    scan = UnitScan(
        3,
        (
            TableScan(Table.COILS, ((0, 1000),), 1),
            TableScan(Table.DISCRETE_INPUTS, (), 1),
            TableScan(Table.INPUT_REGISTERS, ((0, 10),), 1),
            TableScan(HR, ((0, 5), (100, 2000)), 1),
        ),
    )
    rows, left_out = tag_rows(scan, cap=100)
    assert len(rows) == 100 and left_out == 1000 + 10 + 1905 - 100
    by_table = Counter(row["address"].split(":")[0] for row in rows)
    assert by_table == {"hr": 45, "ir": 10, "co": 45}
    assert rows[0] == {
        "name": "hr_0",
        "address": "hr:0",
        "type": "uint16",
        "unit": "",
        "description": "readable on unit 3 (lineside discover)",
    }
    assert rows[5]["address"] == "hr:100"  # past the gap
    assert {r["type"] for r in rows if r["address"].startswith("co")} == {"bool"}
    all_rows, none_left = tag_rows(scan, cap=10_000)
    assert len(all_rows) == 2915 and none_left == 0


def test_tags_path() -> None:
    assert tags_path(Path("map.csv"), 4, several=False) == Path("map.csv")
    assert tags_path(Path("d/map.csv"), 4, several=True) == Path("d/map_unit4.csv")


# -- the simulator over real TCP ---------------------------------------------------------------


@pytest.fixture
async def gateway() -> AsyncIterator[int]:
    """One port serving unit 1 (1024 addresses per table) and unit 2 (300), like a gateway."""
    server = ModbusTcpServer({1: Unit(RegisterImage(size=1024)), 2: Unit(RegisterImage(size=300))})
    port = await server.start()
    yield port
    await server.stop()


async def test_units_and_ranges_on_a_gateway(gateway: int) -> None:
    progress: list[tuple[str, int, int]] = []
    found = await discover(
        "127.0.0.1",
        gateway,
        [1, 2, 3],
        max_address=9999,
        progress=lambda what, done, total: progress.append((what, done, total)),
    )
    assert found.answering == (1, 2)
    assert [p.answer for p in found.probes][2] == 0x0B  # unit 3: the gateway says nobody there
    assert not found.any_unit
    sizes = {1: 1024, 2: 300}
    for scan in found.scans:
        assert [t.table for t in scan.tables] == ["co", "di", "ir", "hr"]
        for table in scan.tables:
            assert table.readable == ((0, sizes[scan.unit_id]),), (scan.unit_id, table.table)
            assert table.doubtful == 0
        # The bound the scan promises for max-address 9999: a few hundred reads per unit.
        assert scan.requests <= 360
    assert found.requests == 3 + sum(s.requests for s in found.scans)
    assert progress[0] == ("probing unit ids", 0, 3)
    assert ("unit 2: done", 4, 4) in progress


async def test_the_tag_list_validates_as_a_tags_file(gateway: int, tmp_path: Path) -> None:
    found = await discover("127.0.0.1", gateway, [2], max_address=999)
    rows, left_out = tag_rows(found.scans[0])
    assert len(rows) == 1200 and left_out == 0
    write_tags(tmp_path / "found.csv", rows)
    with (tmp_path / "found.csv").open(encoding="utf-8", newline="") as f:
        assert next(csv.reader(f)) == ["name", "address", "type", "unit", "description"]
    (tmp_path / "lineside.toml").write_text(
        "config_version = 1\n"
        "[agent]\nid = 'edge-1'\n"
        "[plant]\nsite = 'test'\n"
        "[[machines]]\nname = 'm2'\narea = 'a'\nline = 'l'\nkind = 'press'\n"
        "[[sources]]\nname = 'gw'\ntype = 'modbus_tcp'\nhost = '127.0.0.1'\n"
        f"port = {gateway}\n"
        "[[sources.units]]\nunit_id = 2\nmachine = 'm2'\ntags_file = 'found.csv'\n",
        encoding="utf-8",
    )
    config = load_config(tmp_path / "lineside.toml")
    tags = config.sources[0].units[0].tags  # type: ignore[attr-defined]
    assert len(tags) == 1200
    assert str(tags[0].address) == "hr:0" and tags[0].type == "uint16"
    assert {t.type for t in tags if str(t.address).startswith("co")} == {"bool"}


async def test_a_device_that_answers_every_unit_id_is_scanned_once() -> None:
    # A single device behind a server that answers any unit id the same way.
    image = RegisterImage(size=64)
    server = ModbusTcpServer({u: Unit(image) for u in range(0, 6)})
    port = await server.start()
    try:
        found = await discover("127.0.0.1", port, [1, 2, 3, 4, 5], max_address=199)
    finally:
        await server.stop()
    assert found.any_unit
    assert [s.unit_id for s in found.scans] == [1]
    assert found.scans[0].tables[3].readable == ((0, 64),)


async def test_a_dead_port_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectError, match="refused"):
        await discover("127.0.0.1", port, [1])


async def test_a_silent_device_times_out_unit_by_unit() -> None:
    # A listener that accepts and never answers: every probe times out, nobody is found.
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        found = await discover("127.0.0.1", port, [1, 2], time_limit=0.05)
    finally:
        server.close()
        await server.wait_closed()
    assert [p.answer for p in found.probes] == [TIMEOUT, TIMEOUT]
    assert found.answering == () and found.scans == ()

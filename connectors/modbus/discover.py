"""Finding what a Modbus TCP device serves: which unit ids answer and which addresses read.

`lineside discover modbus HOST[:PORT]` runs this in two steps, one request in flight at a
time (many gateways serialise requests to their serial side anyway):

1. **Unit ids.** One cheap probe per unit id: FC03 `hr:0`, count 1. Any answer from the device,
   data or an exception such as 02 (no holding register 0) or 01 (no FC03), means a device is
   there; a timeout, or a gateway's 0A / 0B (path unavailable, target did not respond), means
   nobody is. A plain Modbus TCP device often ignores the unit id and answers them all: when
   every probed unit id (two or more) answers, its registers are scanned once, as the first.
2. **Readable ranges**, per table (co, di, ir, hr) from 0 to `max_address`, coarse to fine.
   In readable space the scan reads whole blocks (125 registers / 2000 bits); a block that
   fails (02) has its readable prefix found by binary search. In unreadable space it probes
   one address in every SAMPLE_EVERY (125), and the highest address scanned; a probe that reads
   starts a binary search back to where that readable range begins, and the scan goes on in
   readable space. A search takes at most log2(block) reads (7 for registers, 11 for bits), so
   the cost is one read per block or per 125 unreadable addresses, plus about 10-20 per edge
   of a readable range: 82 reads for an empty table up to 9999, 348 for a unit of the
   simulator (1024 addresses readable in each table).

The price of that bound: a readable range that follows an unreadable gap and holds neither a
multiple of 125 nor the highest address (say hr:10-19 after hr:0-4) is not seen: nothing
probes it. Timeouts and other failed reads count as unreadable and are reported (`doubtful`),
so such ranges can be re-checked. A device whose own request limit is lower than 125 registers
answers 03 and gets smaller blocks; one that answers 03 for a single missing address is
understood to mean 02 by it.

The scan itself (`scan_table`) is pure logic over an async read function; `discover` is the
I/O shell around `ModbusTcpClient`. What a run found, and the `tags_file` rows made from it,
are `findings.py`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from connectors.modbus.address import TABLE_SIZE, Table
from connectors.modbus.client import ModbusTcpClient
from connectors.modbus.findings import (
    DROPPED,
    ILLEGAL_ADDRESS,
    ILLEGAL_FUNCTION,
    ILLEGAL_VALUE,
    MALFORMED,
    MAX_ROWS,
    OK,
    TIMEOUT,
    Answer,
    Discovery,
    TableScan,
    UnitProbe,
    UnitScan,
)
from connectors.modbus.planner import MAX_BITS, MAX_REGISTERS

DEFAULT_PORT = 502
DEFAULT_UNITS = "1-247"
DEFAULT_MAX_ADDRESS = 9999
# In unreadable space one address in this many is probed: a readable range is found when it
# holds one of them (or address 0, or the highest address scanned).
SAMPLE_EVERY = 125
TABLES = (Table.COILS, Table.DISCRETE_INPUTS, Table.INPUT_REGISTERS, Table.HOLDING_REGISTERS)

# Reads `count` addresses of `table` from `start` on one unit.
TableRead = Callable[[Table, int, int], Awaitable[Answer]]
# (what is being done, done so far, total) for a progress bar.
Progress = Callable[[str, int, int], None]


# -- arguments ---------------------------------------------------------------------------------


def parse_target(text: str) -> tuple[str, int]:
    """`HOST`, `HOST:PORT` or `[IPv6]:PORT` → (host, port); ValueError with a usable message."""
    text = text.strip()
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if bracketed:
        host, port_text = bracketed.group(1), bracketed.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text:  # a bare IPv6 address: no port can be told apart
        host, port_text = text, None
    else:
        host, port_text = text, None
    if not host or not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
        raise ValueError(f"bad target {text!r}: write HOST or HOST:PORT, e.g. 192.168.1.10:502")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bad port in {text!r}: a port is 1..65535")
    return host, int(port_text)


def parse_units(text: str) -> tuple[int, ...]:
    """`"1-247"` or `"1,2,10-20"` → sorted distinct unit ids in 0..255; ValueError if malformed."""
    ids: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"bad unit ids {text!r}: write ranges like 1-247 or 1,2,10-20")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        if first > last:
            raise ValueError(f"bad unit id range {part!r}: {first} is after {last}")
        if last > 255:
            raise ValueError(f"unit id {last} is out of range: unit ids are 0..255")
        ids.update(range(first, last + 1))
    return tuple(sorted(ids))


def check_max_address(value: int) -> int:
    if not 0 <= value < TABLE_SIZE:
        raise ValueError(f"--max-address must be 0..{TABLE_SIZE - 1}, not {value}")
    return value


# -- the scan (pure logic over a read function) ------------------------------------------------


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(slots=True)
class _TableScanner:
    read: TableRead
    table: Table
    end: int  # one past the highest address scanned
    limit: int  # addresses per block read
    requests: int = 0
    doubtful: int = 0
    unsupported: bool = False
    # Some devices answer 03 (illegal data value) instead of 02 for an address they lack.
    value_means_address: bool = False
    readable: list[tuple[int, int]] = field(default_factory=list)

    async def ask(self, start: int, count: int) -> Answer:
        self.requests += 1
        answer = await self.read(self.table, start, count)
        if answer == ILLEGAL_FUNCTION:
            self.unsupported = True
        elif answer == ILLEGAL_VALUE and self.value_means_address:
            answer = ILLEGAL_ADDRESS
        elif answer not in (OK, ILLEGAL_ADDRESS, ILLEGAL_VALUE):
            self.doubtful += 1
        return answer

    async def run(self) -> None:
        pos = 0
        bad = -1  # the highest address known unreadable below `pos`
        in_readable = True  # optimistic at the start: most maps begin at 0
        while pos < self.end and not self.unsupported:
            if not in_readable:
                # Everything in (bad, pos) is taken as unreadable; `pos` is a sample point.
                if await self.ask(pos, 1) != OK:
                    bad, pos = pos, self._next_sample(pos)
                    continue
                start = await self._run_start(bad, pos)
                self.readable.append((start, pos + 1))
                pos, in_readable = pos + 1, True
                continue
            count = min(self.limit, self.end - pos)
            answer = await self.ask(pos, count)
            if answer == OK:
                self.readable.append((pos, pos + count))
                pos += count
            elif answer == ILLEGAL_VALUE and count > 1:
                self.limit = max(1, count // 2)  # the device's own limit is lower than ours
            elif answer == ILLEGAL_VALUE:
                self.value_means_address = True  # 03 to one address: "no such address"
                self.limit = MAX_BITS if self.table.is_bits else MAX_REGISTERS
            elif not self.unsupported:
                prefix = await self._readable_prefix(pos, count)
                if prefix:
                    self.readable.append((pos, pos + prefix))
                bad = pos + prefix
                pos, in_readable = self._next_sample(bad), False

    def _next_sample(self, bad: int) -> int:
        """The next address probed after `bad`: a multiple of SAMPLE_EVERY, or the last one.

        Probing the last address too finds a range at the very top of the scanned space.
        """
        grid = (bad // SAMPLE_EVERY + 1) * SAMPLE_EVERY
        last = self.end - 1
        return grid if grid <= last or bad >= last else last

    async def _readable_prefix(self, start: int, count: int) -> int:
        """Largest k < count with [start, start + k) readable, knowing [start, +count) is not."""
        if count == 1 or await self.ask(start, 1) != OK:
            return 0
        good, bad = 1, count  # reading `good` addresses works, `bad` does not
        while bad - good > 1 and not self.unsupported:
            mid = (good + bad) // 2
            if await self.ask(start, mid) == OK:
                good = mid
            else:
                bad = mid
        return good

    async def _run_start(self, bad: int, pos: int) -> int:
        """Where the readable run through `pos` begins, knowing `bad` < pos is unreadable."""
        top = pos  # the run is known readable from `top` to pos
        while top - bad > 1 and not self.unsupported:
            # Reading from `good` up to top works, from `low` not (or is not tried: a read
            # must stay within the block size, so a longer run is followed block by block).
            floor = max(bad, top - self.limit - 1)
            low, good = floor, top
            while good - low > 1 and not self.unsupported:
                mid = (good + low + 1) // 2
                if await self.ask(mid, top - mid) == OK:
                    good = mid
                else:
                    low = mid
            if low != floor or floor == bad or good == top:
                return good  # `low` was read and failed, or is known unreadable
            top = good
        return top


async def scan_table(
    read: TableRead, table: Table, max_address: int, *, block: int | None = None
) -> TableScan:
    """The readable ranges of `table` in 0..max_address (see the module docstring)."""
    top = MAX_BITS if table.is_bits else MAX_REGISTERS
    limit = top if block is None else block
    if not 1 <= limit <= top:
        raise ValueError(f"block must be 1..{top} for {table.unit}, not {block}")
    scanner = _TableScanner(read, table, check_max_address(max_address) + 1, limit)
    await scanner.run()
    return TableScan(
        table,
        _merge(scanner.readable),
        scanner.requests,
        scanner.doubtful,
        scanner.unsupported,
    )


async def scan_unit(
    read: TableRead, max_address: int, progress: Progress | None = None, unit_id: int = 0
) -> tuple[TableScan, ...]:
    scans = []
    for done, table in enumerate(TABLES):
        if progress is not None:
            progress(f"unit {unit_id}: {table.noun}s", done, len(TABLES))
        scans.append(await scan_table(read, table, max_address))
    if progress is not None:
        progress(f"unit {unit_id}: done", len(TABLES), len(TABLES))
    return tuple(scans)


# -- the I/O shell -----------------------------------------------------------------------------


class _Link:
    """One connection, one request at a time; reconnects once when the device drops it."""

    def __init__(self, client: ModbusTcpClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.requests = 0

    async def read(self, unit_id: int, table: Table, start: int, count: int) -> Answer:
        for attempt in (0, 1):
            await self.client.connect()  # a no-op while connected; ConnectError ends the run
            self.requests += 1
            try:
                await self.client.read(unit_id, table.function_code, start, count, self.timeout)
                return OK
            except DeviceError as exc:
                return exc.code if exc.code is not None else MALFORMED
            except RequestTimeout:
                return TIMEOUT
            except ProtocolError:
                return MALFORMED
            except ConnectError:
                if attempt:
                    return DROPPED
        raise AssertionError("unreachable")

    async def registers(self, unit_id: int, table: Table, start: int, count: int) -> list[int]:
        """The values of `count` registers from `start` (empty when the read fails)."""
        await self.client.connect()
        self.requests += 1
        try:
            data = await self.client.read(unit_id, table.function_code, start, count, self.timeout)
        except (DeviceError, RequestTimeout, ProtocolError, ConnectError):
            return []
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]

    async def values(self, unit_id: int, scan: TableScan, cap: int) -> dict[int, int]:
        """The first `cap` readable registers of `scan`, address -> value."""
        out: dict[int, int] = {}
        for start, end in scan.readable:
            end = min(end, start + cap - len(out))
            for at in range(start, end, MAX_REGISTERS):
                count = min(MAX_REGISTERS, end - at)
                out.update(enumerate(await self.registers(unit_id, scan.table, at, count), at))
            if len(out) >= cap:
                break
        return out

    def reader(self, unit_id: int) -> TableRead:
        async def read(table: Table, start: int, count: int) -> Answer:
            return await self.read(unit_id, table, start, count)

        return read


async def discover(
    host: str,
    port: int,
    units: Sequence[int],
    *,
    max_address: int = DEFAULT_MAX_ADDRESS,
    time_limit: float = 0.3,
    connect_timeout: float = 3.0,
    progress: Progress | None = None,
    focus: tuple[Table, int, int] | None = None,
    read_values: bool = False,
    pause: float = 1.0,
) -> Discovery:
    """Probe `units` on host:port, then scan each answering unit. ConnectError if unreachable.

    `time_limit` bounds each read; a read that passes it counts as unanswered. `focus`
    (table, first, last address) scans that range only. With `read_values` the registers that
    go in the tag list are read twice, `pause` seconds apart, for their values and guesses.
    """
    check_max_address(max_address)
    client = ModbusTcpClient(host, port, max_in_flight=1, connect_timeout=connect_timeout)
    link = _Link(client, time_limit)
    try:
        await client.connect()
        probes = []
        for done, unit_id in enumerate(units):
            if progress is not None:
                progress("probing unit ids", done, len(units))
            answer = await link.read(unit_id, Table.HOLDING_REGISTERS, 0, 1)
            probes.append(UnitProbe(unit_id, answer))
        if progress is not None:
            progress("probing unit ids", len(units), len(units))
        found = Discovery(host, port, time_limit, tuple(probes), (), 0)
        # A device that answers every unit id is one device: scan it once.
        to_scan = found.answering[:1] if found.any_unit else found.answering
        scans = []
        for unit_id in to_scan:
            if focus is None:
                tables = await scan_unit(link.reader(unit_id), max_address, progress, unit_id)
            else:
                table, first, last = focus
                whole = await scan_table(link.reader(unit_id), table, last)
                tables = (_clip(whole, first, last + 1),)
            scans.append(UnitScan(unit_id, tables))
        if read_values:
            scans = [await _with_values(link, scan, pause) for scan in scans]
    finally:
        client.close()
    return Discovery(host, port, time_limit, tuple(probes), tuple(scans), link.requests)


def _clip(scan: TableScan, start: int, end: int) -> TableScan:
    """`scan` with its readable ranges cut to start..end (half-open)."""
    kept = tuple((max(s, start), min(e, end)) for s, e in scan.readable if s < end and e > start)
    return TableScan(scan.table, kept, scan.requests, scan.doubtful, scan.unsupported)


async def _with_values(link: _Link, scan: UnitScan, pause: float) -> UnitScan:
    registers = [t for t in scan.tables if not t.table.is_bits]
    first = {t.table: await link.values(scan.unit_id, t, MAX_ROWS) for t in registers}
    await asyncio.sleep(pause)  # long enough for a counter to move, short for a person
    second = {t.table: await link.values(scan.unit_id, t, MAX_ROWS) for t in registers}
    return UnitScan(scan.unit_id, scan.tables, first, second)


def parse_focus(text: str) -> tuple[Table, int, int]:
    """`hr:0-99` or `ir:10` as (table, first, last); ValueError naming the form."""
    match = re.fullmatch(r"(co|di|ir|hr):(\d+)(?:-(\d+))?", text.strip())
    if match is None:
        raise ValueError(f'--range {text!r}: write a table and addresses, e.g. "hr:0-99"')
    first = int(match.group(2))
    last = int(match.group(3)) if match.group(3) is not None else first
    if last < first or last > TABLE_SIZE - 1:
        raise ValueError(f"--range {text!r}: addresses run from 0 to {TABLE_SIZE - 1}, low first")
    return Table(match.group(1)), first, last

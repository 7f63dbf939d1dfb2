"""The read plan of one Modbus unit: which requests one poll sends, built once at start.

`plan_unit(tags)` sorts the unit's tags by (table, address) and coalesces them into as few
reads as the protocol allows (standards.md §5.2: at most 125 registers or 2000 bits per
request, or a lower per-device limit). Contiguous and overlapping tags share a request (two
bits of one register read it once); gaps of up to `max_gap` unused registers (`max_bit_gap`
bits in a bit table) are read through, because one longer request costs less than a second
round trip (Telegraf's optimisation). A multi-register value is never split across two
requests: the halves would come from two different scans of the PLC and could tear.

A device may refuse a read that runs through addresses it does not map (exception 02, illegal
data address). `split_request` gives the reads of the same tags with no gap bridged, which the
sources fall back to for that read (connectors/modbus/source.py).

The planner is pure: it takes frozen `PlanTag`s and returns a frozen `ReadPlan`, whose
figures (requests, registers and bytes per poll, wasted registers) are what `lineside plan`
prints and what a benchmark compares.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from agent.model import DATA_TYPES
from connectors.modbus.address import REGISTER_WIDTH, Table

# Protocol ceilings (standards.md §5.2); a device may impose lower ones.
MAX_REGISTERS = 125
MAX_BITS = 2000
# Modbus TCP ADU sizes: MBAP header (7) + function code (1) + start (2) + quantity (2) for a
# read request; MBAP (7) + function code (1) + byte count (1) + data for its response.
TCP_REQUEST_BYTES = 12
TCP_RESPONSE_OVERHEAD = 9
# Bits in one register: a gap of g registers costs as many bytes as one of 16 g bits.
BITS_PER_REGISTER = 16
# 0-based wire addresses are 16-bit.
ADDRESS_SPACE = 65536

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
# Registers per value for the fixed-width types; strings take ceil(length / 2).
REGISTERS_PER_TYPE = REGISTER_WIDTH
TYPES = DATA_TYPES


def tag_width(table: Table, type: str, length: int = 0) -> int:
    """Addresses one value occupies: 1 bit, 1/2/4 registers, or ceil(length / 2) for a string."""
    if table.is_bits:
        return 1
    if type == "string":
        return math.ceil(length / 2)
    try:
        return REGISTERS_PER_TYPE[type]
    except KeyError:
        raise ValueError(f"unknown type {type!r}; known: {', '.join(TYPES)}") from None


@dataclass(frozen=True, slots=True)
class PlanTag:
    """What the planner and the codec need of one configured tag.

    `offset` is the 0-based wire address; `offset_value` is the engineering offset added after
    scaling (value = raw * scale + offset_value). `bit` picks one bit (0 = least significant)
    of a register for a bool. Bools ignore scale and offset_value: they read 0.0 or 1.0.
    """

    tag_id: int
    table: Table
    offset: int
    width: int
    type: str
    order: str = "ABCD"
    bit: int | None = None
    length: int = 0
    scale: float = 1.0
    offset_value: float = 0.0

    def __post_init__(self) -> None:
        where = f"tag {self.tag_id} ({self.table.value}:{self.offset})"
        if self.type not in TYPES:
            raise ValueError(f"{where}: unknown type {self.type!r}; known: {', '.join(TYPES)}")
        if self.order not in ORDERS:
            raise ValueError(f"{where}: unknown order {self.order!r}; known: {', '.join(ORDERS)}")
        if self.table.is_bits and (self.type != "bool" or self.bit is not None):
            raise ValueError(f"{where}: a {self.table.unit} table holds plain bools only")
        if self.bit is not None and (self.type != "bool" or not 0 <= self.bit <= 15):
            raise ValueError(f"{where}: a register bit is a bool with bit in 0..15")
        if self.type == "string" and self.length < 1:
            raise ValueError(f"{where}: a string needs a length of at least 1 character")
        expected = tag_width(self.table, self.type, self.length)
        if self.width != expected:
            raise ValueError(
                f"{where}: a {self.type} is {expected} {self.table.unit} wide, not {self.width}"
            )
        if not 0 <= self.offset <= ADDRESS_SPACE - self.width:
            raise ValueError(f"{where}: does not fit in the address space 0..{ADDRESS_SPACE - 1}")

    @property
    def end(self) -> int:
        """One past the last address the tag occupies."""
        return self.offset + self.width


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read of `count` registers (or bits) from `start`, and the tags it serves."""

    table: Table
    start: int
    count: int
    tags: tuple[PlanTag, ...]

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def function_code(self) -> int:
        return self.table.function_code

    @property
    def payload_bytes(self) -> int:
        """Data bytes in the response: 2 per register, or the bits packed 8 to a byte."""
        return math.ceil(self.count / 8) if self.table.is_bits else 2 * self.count

    @property
    def wire_bytes(self) -> int:
        """Request plus response ADU on Modbus TCP."""
        return TCP_REQUEST_BYTES + TCP_RESPONSE_OVERHEAD + self.payload_bytes

    @property
    def wasted(self) -> int:
        """Registers (or bits) read that no tag uses: the price of bridged gaps."""
        return self.count - _covered(self.tags)

    def __str__(self) -> str:
        last = self.end - 1
        span = f"{self.start}" if last == self.start else f"{self.start}-{last}"
        return (
            f"{self.table.value}:{span} (FC{self.function_code:02d}, {self.count} "
            f"{self.table.unit}, {len(self.tags)} tags, {self.wasted} unused)"
        )


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The requests of one poll of one unit, in (table, address) order, and their figures."""

    requests: tuple[ReadRequest, ...]

    @property
    def requests_per_poll(self) -> int:
        return len(self.requests)

    @property
    def registers_read(self) -> int:
        return sum(r.count for r in self.requests if not r.table.is_bits)

    @property
    def bits_read(self) -> int:
        return sum(r.count for r in self.requests if r.table.is_bits)

    @property
    def wasted_registers(self) -> int:
        return sum(r.wasted for r in self.requests if not r.table.is_bits)

    @property
    def wasted_bits(self) -> int:
        return sum(r.wasted for r in self.requests if r.table.is_bits)

    @property
    def bytes_per_poll(self) -> int:
        """Bytes on the wire per poll on Modbus TCP, requests and responses together."""
        return sum(r.wire_bytes for r in self.requests)

    def __str__(self) -> str:
        lines = [str(r) for r in self.requests]
        lines.append(
            f"{self.requests_per_poll} requests, {self.registers_read} registers and "
            f"{self.bits_read} bits read ({self.wasted_registers} registers and "
            f"{self.wasted_bits} bits unused), {self.bytes_per_poll} bytes per poll on TCP"
        )
        return "\n".join(lines)


def plan_unit(
    tags: Sequence[PlanTag],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 0,
    max_bit_gap: int | None = None,
) -> ReadPlan:
    """Coalesce one unit's tags into the fewest reads within the limits.

    `max_gap` is the longest run of unused registers read through to join two tags into one
    request; `max_bit_gap` the same in a bit table (`max_gap` bits when not given). Raises
    ValueError for limits outside the protocol's, a repeated tag id, or a value wider than one
    request may be.
    """
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be in 1..{MAX_REGISTERS}, not {max_registers}")
    if not 1 <= max_bits <= MAX_BITS:
        raise ValueError(f"max_bits must be in 1..{MAX_BITS}, not {max_bits}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more, not {max_gap}")
    bit_gap = max_gap if max_bit_gap is None else max_bit_gap
    if bit_gap < 0:
        raise ValueError(f"max_bit_gap must be 0 or more, not {bit_gap}")
    seen: set[int] = set()
    for tag in tags:
        if tag.tag_id in seen:
            raise ValueError(f"tag id {tag.tag_id} appears twice in one unit")
        seen.add(tag.tag_id)

    ordered = sorted(tags, key=lambda t: (t.table, t.offset, t.tag_id))
    requests: list[ReadRequest] = []
    for table, group in groupby(ordered, key=lambda t: t.table):
        limit = max_bits if table.is_bits else max_registers
        requests.extend(_coalesce(table, group, limit, bit_gap if table.is_bits else max_gap))
    return ReadPlan(tuple(requests))


def split_request(request: ReadRequest) -> tuple[ReadRequest, ...]:
    """The reads of `request`'s tags with no unused address read through, in the same tag
    order (so their rows follow each other in the request's rows); `(request,)` when it
    bridged no gap."""
    if request.wasted == 0:
        return (request,)
    return tuple(_coalesce(request.table, request.tags, request.count, 0))


def _coalesce(table: Table, tags: Iterable[PlanTag], limit: int, max_gap: int) -> list[ReadRequest]:
    """Greedy sweep over one table's tags, sorted by address."""
    requests: list[ReadRequest] = []
    members: list[PlanTag] = []
    start = end = 0
    for tag in tags:
        if tag.width > limit:
            raise ValueError(
                f"tag {tag.tag_id} ({table.value}:{tag.offset}, {tag.type}) is {tag.width} "
                f"{table.unit} wide, more than the {limit} one request may read"
            )
        # A negative gap is an overlap (two bits of one register); it always joins.
        fits = tag.offset - end <= max_gap and tag.end - start <= limit
        if members and fits:
            members.append(tag)
            end = max(end, tag.end)
            continue
        if members:
            requests.append(ReadRequest(table, start, end - start, tuple(members)))
        members, start, end = [tag], tag.offset, tag.end
    if members:
        requests.append(ReadRequest(table, start, end - start, tuple(members)))
    return requests


def _covered(tags: Iterable[PlanTag]) -> int:
    """Addresses occupied by at least one tag (union of intervals; tags sorted by offset)."""
    total = 0
    reach = -1
    for tag in sorted(tags, key=lambda t: t.offset):
        if tag.end > reach:
            total += tag.end - max(tag.offset, reach)
            reach = tag.end
    return total

"""The register image of one simulated PLC: the four Modbus tables as plain byte buffers.

Holding and input registers are kept as big-endian bytes (the Modbus wire order), so a read
request is answered with one slice and no per-register work. Coils and discrete inputs keep one
byte (0 or 1) per bit; the server packs them into the wire format on request.

`unmapped` leaves holes in the map, as a real PLC's register map has: a read that touches an
unmapped address is answered with exception 02 (illegal data address), whatever else it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

TABLE_SIZE = 65536  # addresses 0..65535 in every table


class Table(StrEnum):
    COILS = "co"
    DISCRETE_INPUTS = "di"
    INPUT_REGISTERS = "ir"
    HOLDING_REGISTERS = "hr"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COILS, Table.DISCRETE_INPUTS)


@dataclass(slots=True)
class RegisterImage:
    """The four tables of one unit. `size` bounds every table (addresses 0..size-1)."""

    size: int = 1024
    holding: bytearray = field(default_factory=bytearray)
    input: bytearray = field(default_factory=bytearray)
    coils: bytearray = field(default_factory=bytearray)
    discrete: bytearray = field(default_factory=bytearray)
    # Holes in the map: per table, (first, last) address ranges, both included.
    unmapped: dict[Table, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.size <= TABLE_SIZE:
            raise ValueError(f"table size must be 1..{TABLE_SIZE}, got {self.size}")
        for name, per_address in (("holding", 2), ("input", 2), ("coils", 1), ("discrete", 1)):
            buf = getattr(self, name)
            if not buf:
                setattr(self, name, bytearray(self.size * per_address))
            elif len(buf) != self.size * per_address:
                raise ValueError(f"{name} must hold {self.size} addresses")

    def table(self, table: Table) -> bytearray:
        return {
            Table.HOLDING_REGISTERS: self.holding,
            Table.INPUT_REGISTERS: self.input,
            Table.COILS: self.coils,
            Table.DISCRETE_INPUTS: self.discrete,
        }[table]

    def set_registers(self, table: Table, address: int, words: bytes) -> None:
        """Write big-endian register bytes at `address` (both register tables)."""
        buf = self.table(table)
        start = address * 2
        if table.is_bits or start < 0 or start + len(words) > len(buf) or len(words) % 2:
            raise ValueError(f"cannot write {len(words)} bytes at {table}:{address}")
        buf[start : start + len(words)] = words

    def set_bit(self, table: Table, address: int, value: bool) -> None:
        buf = self.table(table)
        if not table.is_bits or not 0 <= address < len(buf):
            raise ValueError(f"cannot set bit {table}:{address}")
        buf[address] = 1 if value else 0

    def mapped(self, table: Table, address: int, count: int) -> bool:
        """Whether every address of `address`..`address + count - 1` is mapped."""
        holes = self.unmapped.get(table)
        if not holes:
            return True
        last = address + count - 1
        return all(end < address or start > last for start, end in holes)

    def registers(self, table: Table, address: int, count: int) -> bytes:
        """`count` registers from `address` as big-endian bytes."""
        return bytes(self.table(table)[address * 2 : (address + count) * 2])

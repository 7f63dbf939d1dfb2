"""Modbus addresses as written in configs and datasheets, parsed to one wire form.

Two spellings are accepted and resolve to the same `ModbusAddress`:

- the 0-based table form: `hr:100`, `ir:7`, `co:3`, `di:12`, and `hr:5.3` for bit 3 of a
  register. The offset is what travels in the request PDU.
- the 1-based datasheet ("Modicon") form: `40101` is holding register offset 100; five digits
  (`40001`..`49999`) or six (`400001`..`465536`), with 0xxxx coils, 1xxxx discrete inputs,
  3xxxx input registers and 4xxxx holding registers. Coils need a string (`"00004"`) since an
  integer loses its leading zeros.

A bool tag on a register without a bit number reads as "register is non-zero".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TABLE_SIZE = 65536  # offsets 0..65535 in every table


# Registers a value occupies; strings take ceil(length / 2) (two characters per register).
REGISTER_WIDTH = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}


class Table(StrEnum):
    COILS = "co"
    DISCRETE_INPUTS = "di"
    INPUT_REGISTERS = "ir"
    HOLDING_REGISTERS = "hr"

    @property
    def is_bits(self) -> bool:
        return self in (Table.COILS, Table.DISCRETE_INPUTS)

    @property
    def noun(self) -> str:
        return _NOUN[self]

    @property
    def function_code(self) -> int:
        """The Modbus read function code for this table."""
        return _FUNCTION_CODES[self]

    @property
    def unit(self) -> str:
        """What one address of this table holds, for messages and printed plans."""
        return "bits" if self.is_bits else "registers"


_NOUN = {
    Table.COILS: "coil",
    Table.DISCRETE_INPUTS: "discrete input",
    Table.INPUT_REGISTERS: "input register",
    Table.HOLDING_REGISTERS: "holding register",
}

_FUNCTION_CODES = {
    Table.COILS: 1,
    Table.DISCRETE_INPUTS: 2,
    Table.HOLDING_REGISTERS: 3,
    Table.INPUT_REGISTERS: 4,
}

# The leading digit of the datasheet form names the table.
_DATASHEET_TABLE = {
    "0": Table.COILS,
    "1": Table.DISCRETE_INPUTS,
    "3": Table.INPUT_REGISTERS,
    "4": Table.HOLDING_REGISTERS,
}

_TABLE_FORM = re.compile(r"([a-z]+):(\d+)(?:\.(\d+))?")
_HELP = 'write a table and a 0-based offset like "hr:100", or a datasheet number like 40101'


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    """Where a value lives on the wire: table, 0-based offset and, for a bit in a register, bit."""

    table: Table
    offset: int
    bit: int | None = None

    def __str__(self) -> str:
        if self.bit is None:
            return f"{self.table}:{self.offset}"
        return f"{self.table}:{self.offset}.{self.bit}"


def parse_address(value: str | int) -> ModbusAddress:
    """Parse either spelling; raises ValueError with a message fit for a config problem line."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected an address like "hr:100" or 40101, got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad address {value}: {_HELP}")
        if value < 10001:
            # An integer has lost any leading zeros: 5 may be coil 00005 or a typo.
            raise ValueError(
                f'address {value} is ambiguous: write "co:{max(value - 1, 0)}" (0-based coil '
                f'offset) or "{value:05d}" (datasheet form, as a string)'
            )
        return _datasheet(str(value), shown=str(value))
    text = value.strip()
    if text.isdigit():
        if len(text) < 5:
            number = int(text)
            raise ValueError(
                f'address "{text}" is ambiguous: write "co:{max(number - 1, 0)}" (0-based coil '
                f'offset) or "{number:05d}" (datasheet form)'
            )
        return _datasheet(text, shown=repr(text))
    return _table_form(text)


def _table_form(text: str) -> ModbusAddress:
    match = _TABLE_FORM.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"bad address {text!r}: {_HELP}")
    prefix, offset_text, bit_text = match.groups()
    try:
        table = Table(prefix)
    except ValueError:
        raise ValueError(f"unknown table {prefix!r} in {text!r} (known: co, di, hr, ir)") from None
    offset = int(offset_text)
    if offset >= TABLE_SIZE:
        raise ValueError(f"address {text} is out of range: offsets run 0..65535")
    bit = None
    if bit_text is not None:
        if table.is_bits:
            raise ValueError(
                f"address {text}: a bit number is only for registers (hr, ir), not {table.noun}s"
            )
        bit = int(bit_text)
        if bit > 15:
            raise ValueError(f"address {text}: bit {bit} is out of range 0..15")
    return ModbusAddress(table, offset, bit)


def _datasheet(digits: str, shown: str) -> ModbusAddress:
    table = _DATASHEET_TABLE.get(digits[0])
    if table is None:
        raise ValueError(
            f"address {shown}: the first digit names the table: 0xxxx coils, 1xxxx discrete "
            "inputs, 3xxxx input registers, 4xxxx holding registers"
        )
    if len(digits) not in (5, 6):
        raise ValueError(f"address {shown}: datasheet numbers have 5 or 6 digits; {_HELP}")
    number = int(digits[1:])
    if number == 0:
        first = digits[0] + "0" * (len(digits) - 2) + "1"
        raise ValueError(
            f"address {shown} does not exist: datasheet numbers start at 1 ({first} is {table}:0)"
        )
    if number > TABLE_SIZE:
        raise ValueError(f"address {shown} is out of range: offsets run 0..65535")
    return ModbusAddress(table, number - 1)


def register_width(data_type: str, length: int | None = None) -> int:
    """Registers (or bits, for coils and discrete inputs) a value of `data_type` occupies."""
    if data_type == "string":
        return ((length or 0) + 1) // 2
    return REGISTER_WIDTH[data_type]


def check_tag(address: ModbusAddress, data_type: str, length: int | None) -> tuple[str, str] | None:
    """The first problem with a tag's address, type and length as (key, message), or None.

    The key names the field the user should change: "type", "length" or "address".
    """
    if address.table.is_bits and data_type != "bool":
        return (
            "type",
            f"{address} is a {address.table.noun}, a single bit: use type bool, not {data_type}",
        )
    if address.bit is not None and data_type != "bool":
        return ("type", f"{address} is a single bit: use type bool, not {data_type}")
    if data_type == "string":
        if length is None:
            return ("length", "type string needs a length (characters)")
        if length < 1:
            return ("length", f"must be at least 1, got {length}")
    elif length is not None:
        return ("length", f"length is only for type string, not {data_type}")
    if address.table.is_bits or address.bit is not None:
        return None
    width = register_width(data_type, length)
    last = address.offset + width - 1
    if last >= TABLE_SIZE:
        return (
            "address",
            f"{data_type} at {address} needs {width} registers, up to "
            f"{address.table}:{last}, past the last one ({address.table}:{TABLE_SIZE - 1})",
        )
    return None

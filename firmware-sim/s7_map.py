"""The S7 view of a machine profile: its tags' S7 addresses, derived from the Modbus map.

The profiles keep one register map (`profiles/*.toml`); the S7 addresses follow from it by one
fixed rule, so the simulator and `lineside init --protocol s7` cannot disagree:

| Modbus             | S7                                                          |
|--------------------|-------------------------------------------------------------|
| `hr:N`             | DB1, byte 2N                                                |
| `ir:N`             | DB2, byte 2N                                                |
| `co:N`, `di:N`     | DB3, DB4: bit N % 8 of byte N // 8 (`DB3.DBX0.3`)            |
| `hr:N.b`           | DB1, bit b % 8 of byte 2N + 1 - b // 8 (a big-endian word)  |

| Modbus type | S7 type                          |
|-------------|----------------------------------|
| uint16      | WORD (`DB1.DBW2`)                |
| int16       | INT                              |
| uint32      | DWORD                            |
| int32       | DINT                             |
| float32     | REAL                             |
| float64     | LREAL (`DB1.DBB8:LREAL`)         |
| bool        | BOOL (a whole register: its bit 0, `DB1.DBX(2N+1).0`) |

S7 is big-endian, so a Modbus word order (CDAB) has no S7 counterpart: the value is stored
the S7 way. Strings and 64-bit integers (no S7-300 type) are not served over S7; `skipped`
names them. Scale, offset and unit carry over.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

from firmware_sim.encoder import to_raw
from firmware_sim.image import Table
from firmware_sim.profile import Profile, ProfileTag

DB_OF_TABLE = {
    Table.HOLDING_REGISTERS: 1,
    Table.INPUT_REGISTERS: 2,
    Table.COILS: 3,
    Table.DISCRETE_INPUTS: 4,
}
_S7_TYPE = {
    "uint16": ("WORD", "W", ">H", 16, False),
    "int16": ("INT", "W", ">h", 16, True),
    "uint32": ("DWORD", "D", ">I", 32, False),
    "int32": ("DINT", "D", ">i", 32, True),
    "float32": ("REAL", "D", ">f", 32, None),
    "float64": ("LREAL", "B", ">d", 64, None),
}

Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class S7Tag:
    """One profile tag as an S7 CPU serves it."""

    name: str
    address: str  # as a lineside config writes it: "DB1.DBD4:DWORD"
    db: int
    byte: int
    type: str
    bit: int | None
    profile_tag: ProfileTag

    @property
    def size(self) -> int:
        return 1 if self.type == "BOOL" else struct.calcsize(_S7_TYPE_FORMAT[self.type])


_S7_TYPE_FORMAT = {v[0]: v[2] for v in _S7_TYPE.values()}


@dataclass(frozen=True, slots=True)
class S7Map:
    tags: tuple[S7Tag, ...]
    db_sizes: Mapping[int, int]  # DB number -> bytes
    skipped: tuple[str, ...]  # profile tags not served over S7


def s7_tag(tag: ProfileTag) -> S7Tag | None:
    """The S7 form of one profile tag, or None when S7 has no place for it."""
    db = DB_OF_TABLE[tag.table]
    if tag.table.is_bits:
        byte, bit = divmod(tag.index, 8)
        return S7Tag(tag.name, f"DB{db}.DBX{byte}.{bit}", db, byte, "BOOL", bit, tag)
    if tag.bit is not None or tag.type == "bool":
        b = tag.bit or 0
        byte = 2 * tag.index + 1 - b // 8
        return S7Tag(tag.name, f"DB{db}.DBX{byte}.{b % 8}", db, byte, "BOOL", b % 8, tag)
    found = _S7_TYPE.get(tag.type)
    if found is None:
        return None
    kind, letter, _, _, _ = found
    byte = 2 * tag.index
    suffix = f":{kind}" if kind not in ("WORD", "DWORD") or letter == "B" else ""
    return S7Tag(tag.name, f"DB{db}.DB{letter}{byte}{suffix}", db, byte, kind, None, tag)


@cache
def s7_map(profile: Profile) -> S7Map:
    tags: list[S7Tag] = []
    skipped: list[str] = []
    sizes: dict[int, int] = {}
    for profile_tag in profile.tags:
        tag = s7_tag(profile_tag)
        if tag is None:
            skipped.append(profile_tag.name)
            continue
        tags.append(tag)
        sizes[tag.db] = max(sizes.get(tag.db, 2), tag.byte + tag.size)
    return S7Map(tuple(tags), dict(sorted(sizes.items())), tuple(skipped))


def _writer(tag: S7Tag) -> Callable[[Value, dict[int, bytearray]], None]:
    db, byte = tag.db, tag.byte
    if tag.type == "BOOL":
        mask = 1 << (tag.bit or 0)

        def write_bit(value: Value, dbs: dict[int, bytearray]) -> None:
            buf = dbs[db]
            buf[byte] = buf[byte] | mask if value else buf[byte] & ~mask

        return write_bit
    p = tag.profile_tag
    _, _, fmt, bits, signed = _S7_TYPE[p.type]
    packer = struct.Struct(fmt).pack_into
    scale, offset = p.scale, p.offset

    def write(value: Value, dbs: dict[int, bytearray]) -> None:
        if signed is None:
            packer(dbs[db], byte, (float(value) - offset) / scale)
        else:
            packer(dbs[db], byte, to_raw(value, scale, offset, bits, signed))  # type: ignore[arg-type]

    return write


def make_s7_encoder(
    profile: Profile,
) -> Callable[[Mapping[str, Value], dict[int, bytearray]], None]:
    """A function writing a machine's values into its data blocks (buffers by DB number)."""
    writers = tuple((t.name, _writer(t)) for t in s7_map(profile).tags)

    def encode(values: Mapping[str, Value], dbs: dict[int, bytearray]) -> None:
        for name, write in writers:
            write(values[name], dbs)

    return encode

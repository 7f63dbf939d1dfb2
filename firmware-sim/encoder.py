"""Write a machine's engineering values into its register image, as its profile lays them out.

`make_encoder(profile)` resolves each tag's packing once (struct format, byte permutation,
scaling, buffer) and returns a function that only converts and copies; it runs for every machine
on every simulator tick, so nothing is looked up by name there.

Conversions: raw = (value - offset) / scale; integers are rounded, unsigned ones wrap modulo
2^bits (counters roll over like a PLC's), signed ones are clipped to their range. Multi-register
values follow standards.md §5.6 with A the most significant byte: ABCD big-endian, CDAB word
swap, BADC byte swap inside each word, DCBA little-endian; 64-bit values apply the same idea to
four registers (CDAB = GHEFCDAB). Strings are two characters per register, high byte first,
padded with NULs. Bit 0 of `hr:5.0` is the least significant bit of the register.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from functools import cache

from firmware_sim.image import RegisterImage, Table
from firmware_sim.profile import Profile, ProfileTag

Value = float | int | bool | str
Encoder = Callable[[Mapping[str, Value], RegisterImage], None]
_Writer = Callable[[Value, RegisterImage], None]

_BUFFER = {
    Table.HOLDING_REGISTERS: "holding",
    Table.INPUT_REGISTERS: "input",
    Table.COILS: "coils",
    Table.DISCRETE_INPUTS: "discrete",
}
# type -> (big-endian struct format, bits, signed); floats have signed=None
_NUMERIC: dict[str, tuple[str, int, bool | None]] = {
    "int16": (">h", 16, True),
    "uint16": (">H", 16, False),
    "int32": (">i", 32, True),
    "uint32": (">I", 32, False),
    "int64": (">q", 64, True),
    "uint64": (">Q", 64, False),
    "float32": (">f", 32, None),
    "float64": (">d", 64, None),
    "bool": (">H", 16, False),  # a whole register holding 0 or 1
}
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def byte_permutation(order: str, nbytes: int) -> tuple[int, ...]:
    """Indices into the big-endian bytes giving the register bytes in `order`."""
    if order not in ORDERS:
        raise ValueError(f"unknown byte order {order!r}; known: {', '.join(ORDERS)}")
    words = [(i, i + 1) for i in range(0, nbytes, 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [(lo, hi) for hi, lo in words]
    return tuple(i for word in words for i in word)


def to_raw(value: float, scale: float, offset: float, bits: int, signed: bool) -> int:
    """Engineering value -> register integer: rounded, wrapped (unsigned) or clipped (signed)."""
    if isinstance(value, int) and scale == 1.0 and offset == 0.0:
        n = int(value)  # exact: a float would drop the low bits of a 64-bit counter
    else:
        raw = (float(value) - offset) / scale
        if not math.isfinite(raw):
            raise ValueError(f"cannot encode {value!r} as an integer")
        n = round(raw)
    if signed:
        top = 1 << (bits - 1)
        return max(-top, min(top - 1, n))
    return n % (1 << bits)


def _bit_writer(tag: ProfileTag) -> _Writer:
    attr, index = _BUFFER[tag.table], tag.index

    def write(value: Value, image: RegisterImage) -> None:
        buf: bytearray = getattr(image, attr)
        if not 0 <= index < len(buf):
            raise ValueError(f"{tag.name}: {tag.address} is outside the image")
        buf[index] = 1 if value else 0

    return write


def _register_bit_writer(tag: ProfileTag) -> _Writer:
    attr = _BUFFER[tag.table]
    hi = tag.index * 2
    bit = tag.bit or 0
    if not 0 <= bit < 16:
        raise ValueError(f"{tag.name}: bit {bit} is not in 0..15")
    mask = 1 << bit

    def write(value: Value, image: RegisterImage) -> None:
        buf: bytearray = getattr(image, attr)
        if not 0 <= hi < len(buf) - 1:
            raise ValueError(f"{tag.name}: {tag.address} is outside the image")
        word = (buf[hi] << 8) | buf[hi + 1]
        word = word | mask if value else word & ~mask
        buf[hi] = word >> 8
        buf[hi + 1] = word & 0xFF

    return write


def _string_writer(tag: ProfileTag) -> _Writer:
    table, index, nbytes = tag.table, tag.index, tag.width * 2

    def write(value: Value, image: RegisterImage) -> None:
        data = str(value).encode("latin-1", errors="replace")[: tag.length]
        image.set_registers(table, index, data.ljust(nbytes, b"\0"))

    return write


def _numeric_writer(tag: ProfileTag) -> _Writer:
    fmt, bits, signed = _NUMERIC[tag.type]
    packer = struct.Struct(fmt).pack
    perm = byte_permutation(tag.order, bits // 8)
    table, index, scale, offset = tag.table, tag.index, tag.scale, tag.offset
    if scale == 0:
        raise ValueError(f"{tag.name}: scale must not be 0")
    identity = perm == tuple(range(bits // 8))

    def write(value: Value, image: RegisterImage) -> None:
        if signed is None:
            packed = packer((float(value) - offset) / scale)
        else:
            packed = packer(to_raw(value, scale, offset, bits, signed))  # type: ignore[arg-type]
        image.set_registers(table, index, packed if identity else bytes(packed[i] for i in perm))

    return write


def tag_writer(tag: ProfileTag) -> _Writer:
    """The function that writes one tag's value into an image."""
    if tag.table.is_bits:
        return _bit_writer(tag)
    if tag.bit is not None:
        return _register_bit_writer(tag)
    if tag.type == "string":
        return _string_writer(tag)
    if tag.type not in _NUMERIC:
        raise ValueError(f"{tag.name}: unknown type {tag.type!r}")
    return _numeric_writer(tag)


@cache
def make_encoder(profile: Profile) -> Encoder:
    writers = tuple((tag.name, tag_writer(tag)) for tag in profile.tags)

    def encode(values: Mapping[str, Value], image: RegisterImage) -> None:
        for name, write in writers:
            try:
                value = values[name]
            except KeyError:
                raise KeyError(f"{profile.kind}: no value for tag {name!r}") from None
            write(value, image)

    return encode


def encode_values(profile: Profile, values: Mapping[str, Value], image: RegisterImage) -> None:
    make_encoder(profile)(values, image)

"""Encoder: numeric vectors of standards.md §5.6, scaling, wrapping, bits, strings, round trips.

The decoder below is written independently of the encoder, straight from the §5.6 table, with
`struct` formats per order.
"""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.encoder import encode_values, make_encoder
from firmware_sim.image import RegisterImage, Table
from firmware_sim.machines import make_machine
from firmware_sim.profile import KINDS, Profile, ProfileTag, load_profile, profile_from_toml

HR = Table.HOLDING_REGISTERS


def one_tag(type_: str, address: str = "hr:0", **extra: object) -> Profile:
    lines = ['kind = "x"', "[[tags]]", 'name = "v"', f'address = "{address}"', f'type = "{type_}"']
    for k, v in extra.items():
        lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    return profile_from_toml("\n".join(lines))


def regs(image: RegisterImage, count: int, address: int = 0, table: Table = HR) -> list[int]:
    raw = image.registers(table, address, count)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def encode_one(profile: Profile, value: object) -> RegisterImage:
    image = RegisterImage()
    encode_values(profile, {"v": value}, image)  # type: ignore[dict-item]
    return image


def decode(tag: ProfileTag, image: RegisterImage) -> float | int | bool | str:
    """Independent decoder: the §5.6 table, one branch per order."""
    if tag.table.is_bits:
        return bool(image.table(tag.table)[tag.index])
    raw = image.registers(tag.table, tag.index, tag.width)
    if tag.bit is not None:
        return bool(int.from_bytes(raw, "big") >> tag.bit & 1)
    if tag.type == "string":
        return raw.rstrip(b"\0").decode("latin-1")
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if tag.order == "CDAB":  # word swap
        words = words[::-1]
    elif tag.order == "BADC":  # byte swap inside each word
        words = [w[::-1] for w in words]
    elif tag.order == "DCBA":  # little-endian
        words = [w[::-1] for w in words[::-1]]
    fmt = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q",
           "uint64": ">Q", "float32": ">f", "float64": ">d", "bool": ">H"}[tag.type]  # fmt: skip
    n: int | float = struct.unpack(fmt, b"".join(words))[0]
    if tag.type == "bool":
        return bool(n)
    if tag.scale == 1.0 and tag.offset == 0.0:
        return n  # keep 64-bit integers exact
    return n * tag.scale + tag.offset


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("ABCD", [0x42F6, 0xE666]),
        ("CDAB", [0xE666, 0x42F6]),
        ("BADC", [0xF642, 0x66E6]),
        ("DCBA", [0x66E6, 0xF642]),
    ],
)
def test_float32_vectors(order: str, expected: list[int]) -> None:
    assert regs(encode_one(one_tag("float32", order=order), 123.45), 2) == expected


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("ABCD", [0x0102, 0x0304, 0x0506, 0x0708]),
        ("CDAB", [0x0708, 0x0506, 0x0304, 0x0102]),
        ("BADC", [0x0201, 0x0403, 0x0605, 0x0807]),
        ("DCBA", [0x0807, 0x0605, 0x0403, 0x0201]),
    ],
)
def test_64_bit_orders(order: str, expected: list[int]) -> None:
    assert regs(encode_one(one_tag("uint64", order=order), 0x0102030405060708), 4) == expected


def test_float64_one() -> None:
    assert regs(encode_one(one_tag("float64"), 1.0), 4) == [0x3FF0, 0, 0, 0]


def test_scaled_int16_rounds_and_clips() -> None:
    p = one_tag("int16", scale=0.1)
    assert regs(encode_one(p, -12.3), 1) == [0xFF85]  # -123
    assert regs(encode_one(p, 58.26), 1) == [583]
    assert regs(encode_one(p, 5000.0), 1) == [0x7FFF]
    assert regs(encode_one(p, -5000.0), 1) == [0x8000]
    offset = one_tag("uint16", scale=0.5, offset=-40.0)
    assert regs(encode_one(offset, 10.0), 1) == [100]


def test_unsigned_counters_wrap() -> None:
    assert regs(encode_one(one_tag("uint16"), 65537), 1) == [1]
    assert regs(encode_one(one_tag("uint16"), -1), 1) == [0xFFFF]
    assert regs(encode_one(one_tag("uint32", order="CDAB"), 2**32 + 0x00010002), 2) == [2, 1]
    scaled = one_tag("uint32", scale=0.01)
    assert regs(encode_one(scaled, 682.399), 2) == [1, 68240 - 65536]


def test_strings_two_characters_per_register() -> None:
    assert regs(encode_one(one_tag("string", length=5), "ABC"), 3) == [0x4142, 0x4300, 0]
    image = encode_one(one_tag("string", length=4), "ABCDEFG")
    assert regs(image, 3) == [0x4142, 0x4344, 0]  # truncated, next register untouched


def test_bits_in_tables_and_in_registers() -> None:
    for table in ("co", "di"):
        p = one_tag("bool", f"{table}:7")
        image = encode_one(p, True)
        assert image.table(Table(table))[7] == 1
        encode_values(p, {"v": False}, image)
        assert image.table(Table(table))[7] == 0
    p = one_tag("bool", "hr:5.3")
    image = RegisterImage()
    image.set_registers(HR, 5, b"\x80\x01")
    encode_values(p, {"v": True}, image)
    assert regs(image, 1, 5) == [0x8009]
    encode_values(p, {"v": False}, image)
    assert regs(image, 1, 5) == [0x8001]
    high = one_tag("bool", "ir:2.15")
    image = encode_one(high, True)
    assert regs(image, 1, 2, Table.INPUT_REGISTERS) == [0x8000]


def test_bad_input_is_refused() -> None:
    with pytest.raises(KeyError, match="'v'"):
        encode_values(one_tag("uint16"), {}, RegisterImage())
    with pytest.raises(ValueError):
        encode_one(one_tag("int16"), math.nan)
    with pytest.raises(ValueError):
        encode_one(one_tag("uint32", "hr:1023"), 1)  # second register beyond the image
    with pytest.raises(ValueError):
        encode_one(one_tag("bool", "co:1024"), True)
    with pytest.raises(ValueError, match="order"):
        make_encoder(one_tag("float32", order="ACBD"))
    with pytest.raises(ValueError, match="bit"):
        make_encoder(one_tag("bool", "hr:0.16"))
    with pytest.raises(ValueError, match="type"):
        make_encoder(one_tag("float16"))


ORDERS = st.sampled_from(["ABCD", "CDAB", "BADC", "DCBA"])
INT_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@settings(max_examples=150, deadline=None)
@given(type_=st.sampled_from(sorted(INT_RANGES)), order=ORDERS, data=st.data())
def test_integer_round_trip(type_: str, order: str, data: st.DataObject) -> None:
    lo, hi = INT_RANGES[type_]
    value = data.draw(st.integers(lo, hi))
    tag = one_tag(type_, "hr:3", order=order)
    assert decode(tag.tags[0], encode_one(tag, value)) == value


@settings(max_examples=150, deadline=None)
@given(order=ORDERS, value=st.floats(width=32, allow_nan=False))
def test_float32_round_trip(order: str, value: float) -> None:
    tag = one_tag("float32", "ir:10", order=order)
    assert decode(tag.tags[0], encode_one(tag, value)) == value


@settings(max_examples=150, deadline=None)
@given(order=ORDERS, value=st.floats(allow_nan=False))
def test_float64_round_trip(order: str, value: float) -> None:
    tag = one_tag("float64", "hr:0", order=order)
    assert decode(tag.tags[0], encode_one(tag, value)) == value


@settings(max_examples=100, deadline=None)
@given(value=st.floats(-3000.0, 3000.0))
def test_scaled_round_trip_within_half_a_step(value: float) -> None:
    tag = one_tag("int16", scale=0.1, offset=10.0)
    decoded = decode(tag.tags[0], encode_one(tag, value))
    assert isinstance(decoded, float)
    assert abs(decoded - value) <= 0.05 + 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_machine_values_round_trip_through_their_profile(kind: str) -> None:
    profile = load_profile(kind)
    m = make_machine(kind, "m", 3)
    encode = make_encoder(profile)
    image = RegisterImage()
    for t in (0.0, 1000.0, 20000.0):
        m.advance_to(t)
        values = m.values()
        encode(values, image)
        for tag in profile.tags:
            got, want = decode(tag, image), values[tag.name]
            if isinstance(want, bool | str):
                assert got == want, tag.name
            elif tag.type == "float32":
                assert got == pytest.approx(want, rel=1e-6), tag.name
            else:
                assert got == pytest.approx(want, abs=tag.scale / 2 + 1e-9), tag.name

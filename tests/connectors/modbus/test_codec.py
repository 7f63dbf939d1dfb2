import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.model import Quality
from agent.texts import NOT_ASCII, decode_text
from connectors.modbus.address import Table
from connectors.modbus.codec import RequestDecoder, plan_decoders, register_permutation
from connectors.modbus.planner import PlanTag, ReadRequest, plan_unit, tag_width

HR = Table.HOLDING_REGISTERS
IR = Table.INPUT_REGISTERS
CO = Table.COILS
DI = Table.DISCRETE_INPUTS

# Big-endian struct format of each numeric type, kept apart from the codec's own table.
FORMATS = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}


def regs(*words: int) -> bytes:
    """Register values as a response carries them (big-endian)."""
    return struct.pack(f">{len(words)}H", *words)


def arrange(big_endian: bytes, order: str) -> bytes:
    """Lay out a value's big-endian bytes in registers, word by word (independent of the codec)."""
    pairs = [big_endian[i : i + 2] for i in range(0, len(big_endian), 2)]
    if order in ("CDAB", "DCBA"):
        pairs = pairs[::-1]
    if order in ("BADC", "DCBA"):
        pairs = [p[::-1] for p in pairs]
    return b"".join(pairs)


def tag(
    tag_id: int,
    offset: int,
    type_: str,
    table: Table = HR,
    *,
    order: str = "ABCD",
    bit: int | None = None,
    length: int = 0,
    scale: float = 1.0,
    offset_value: float = 0.0,
) -> PlanTag:
    width = tag_width(table, type_, length)
    return PlanTag(tag_id, table, offset, width, type_, order, bit, length, scale, offset_value)


def one_request(*tags: PlanTag, max_gap: int = 125) -> ReadRequest:
    plan = plan_unit(tags, max_gap=max_gap)
    assert plan.requests_per_poll == 1
    return plan.requests[0]


def decode_one(t: PlanTag, payload: bytes) -> float:
    values = RequestDecoder(one_request(t)).decode(payload)
    assert values.shape == (1,)
    return float(values[0])


F32_12345 = struct.unpack(">f", struct.pack(">f", 123.45))[0]


@pytest.mark.parametrize(
    ("type_", "order", "payload", "expected"),
    [
        # standards.md §5.6: 123.45 as float32 in the four orders.
        ("float32", "ABCD", regs(0x42F6, 0xE666), F32_12345),
        ("float32", "CDAB", regs(0xE666, 0x42F6), F32_12345),
        ("float32", "BADC", regs(0xF642, 0x66E6), F32_12345),
        ("float32", "DCBA", regs(0x66E6, 0xF642), F32_12345),
        # 1.0 as float64 ABCD (§5.6), and -123.456 = C05E DD2F 1A9F BE77 in every order.
        ("float64", "ABCD", regs(0x3FF0, 0, 0, 0), 1.0),
        ("float64", "ABCD", regs(0xC05E, 0xDD2F, 0x1A9F, 0xBE77), -123.456),
        ("float64", "CDAB", regs(0xBE77, 0x1A9F, 0xDD2F, 0xC05E), -123.456),
        ("float64", "BADC", regs(0x5EC0, 0x2FDD, 0x9F1A, 0x77BE), -123.456),
        ("float64", "DCBA", regs(0x77BE, 0x9F1A, 0x2FDD, 0x5EC0), -123.456),
        # 0x0012345678ABCDEF (below 2^53, so exact) as int64 in every order.
        ("int64", "ABCD", regs(0x0012, 0x3456, 0x78AB, 0xCDEF), 0x0012345678ABCDEF),
        ("int64", "CDAB", regs(0xCDEF, 0x78AB, 0x3456, 0x0012), 0x0012345678ABCDEF),
        ("int64", "BADC", regs(0x1200, 0x5634, 0xAB78, 0xEFCD), 0x0012345678ABCDEF),
        ("int64", "DCBA", regs(0xEFCD, 0xAB78, 0x5634, 0x1200), 0x0012345678ABCDEF),
        # Signed and unsigned 16/32/64-bit extremes.
        ("int16", "ABCD", regs(0xFFFF), -1),
        ("int16", "ABCD", regs(0x8000), -32768),
        ("int16", "ABCD", regs(0x7FFF), 32767),
        ("uint16", "ABCD", regs(0xFFFF), 65535),
        ("int16", "BADC", regs(0x0180), -32767),  # 0x8001 with its bytes swapped
        ("uint16", "CDAB", regs(0x1234), 0x1234),  # one word: a word swap changes nothing
        ("uint16", "DCBA", regs(0x1234), 0x3412),
        ("int32", "ABCD", regs(0xFFFF, 0xFFFE), -2),
        ("int32", "CDAB", regs(0xFFFE, 0xFFFF), -2),
        ("int32", "ABCD", regs(0x8000, 0x0000), -(2**31)),
        ("uint32", "ABCD", regs(0xFFFF, 0xFFFF), 2**32 - 1),
        ("uint32", "CDAB", regs(0x5678, 0x1234), 0x12345678),
        ("uint32", "BADC", regs(0x3412, 0x7856), 0x12345678),
        ("uint32", "DCBA", regs(0x7856, 0x3412), 0x12345678),
        ("int64", "ABCD", regs(0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF), -1),
        ("int64", "ABCD", regs(0x8000, 0, 0, 0), -(2**63)),
        ("uint64", "ABCD", regs(0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF), float(2**64 - 1)),
        ("float32", "ABCD", regs(0xBF80, 0x0000), -1.0),
        ("float32", "ABCD", regs(0x7F80, 0x0000), math.inf),
    ],
)
def test_numeric_vectors(type_: str, order: str, payload: bytes, expected: float) -> None:
    assert decode_one(tag(1, 0, type_, order=order), payload) == expected


def test_vectors_are_what_struct_packs() -> None:
    # The hand-written 64-bit vectors above agree with struct plus the documented layouts.
    be = struct.pack(">d", -123.456)
    assert arrange(be, "CDAB") == regs(0xBE77, 0x1A9F, 0xDD2F, 0xC05E)
    assert arrange(be, "BADC") == regs(0x5EC0, 0x2FDD, 0x9F1A, 0x77BE)
    assert arrange(be, "DCBA") == struct.pack("<d", -123.456)


def test_nan_passes_through() -> None:
    assert math.isnan(decode_one(tag(1, 0, "float32"), regs(0x7FC0, 0x0000)))


def test_int64_beyond_2_to_53_loses_its_low_digits() -> None:
    # Documented limit: float64 holds integers exactly only up to 2^53.
    value = 2**53 + 1
    got = decode_one(tag(1, 0, "int64"), struct.pack(">q", value))
    assert got == float(2**53)
    assert got != value


@pytest.mark.parametrize(
    ("type_", "raw", "scale", "offset"),
    [
        ("int16", 1234, 0.1, 0.0),
        ("int16", -1234, 0.1, -40.0),
        ("uint16", 65535, 0.01, 5.0),
        ("int32", -100_000, 0.001, 0.5),
        ("float32", 2.5, -2.0, 1.0),
    ],
)
def test_scale_and_offset(type_: str, raw: float, scale: float, offset: float) -> None:
    t = tag(1, 0, type_, scale=scale, offset_value=offset)
    assert decode_one(t, struct.pack(FORMATS[type_], raw)) == raw * scale + offset


def test_bools_ignore_scale_and_offset() -> None:
    t = tag(1, 4, "bool", bit=0, scale=10.0, offset_value=3.0)
    assert decode_one(t, regs(0x0001)) == 1.0
    assert decode_one(t, regs(0x0000)) == 0.0


def test_bits_in_registers() -> None:
    request = one_request(
        *(tag(b, 10, "bool", bit=b) for b in (0, 1, 2, 13, 14, 15)),
        tag(20, 11, "bool"),  # a whole register holding a bool
        tag(21, 12, "bool"),
        tag(22, 12, "bool", bit=8),
    )
    decoder = RequestDecoder(request)
    values = decoder.decode(regs(0xA005, 0x0000, 0x0100))
    assert decoder.tag_ids.tolist() == [0, 1, 2, 13, 14, 15, 20, 21, 22]
    assert values.tolist() == [1, 0, 1, 1, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("table", [CO, DI])
def test_bits_in_bit_tables(table: Table) -> None:
    request = one_request(*(tag(i, 100 + i, "bool", table=table) for i in (0, 1, 2, 7, 8, 12)))
    assert (request.start, request.count, request.payload_bytes) == (100, 13, 2)
    decoder = RequestDecoder(request)
    # bit 0 is the least significant bit of the first byte.
    values = decoder.decode(bytes([0b1000_0101, 0b0001_0000]))
    assert decoder.tag_ids.tolist() == [0, 1, 2, 7, 8, 12]
    assert values.tolist() == [1, 0, 1, 1, 0, 1]
    assert decoder.decode(bytes([0, 0])).tolist() == [0] * 6


def test_a_request_mixing_types_and_orders() -> None:
    tags = [
        tag(0, 0, "float32", order="ABCD"),
        tag(1, 2, "int16", scale=0.5),
        tag(2, 3, "float32", order="CDAB"),
        tag(3, 5, "bool", bit=3),
        tag(4, 6, "uint32", order="DCBA"),
        tag(5, 9, "float64", order="BADC", offset_value=-1.0),  # register 8 is a gap
        tag(6, 13, "string", length=4),
        tag(7, 15, "uint16", scale=0.1),
        tag(8, 16, "float32", order="CDAB"),
    ]
    payload = b"".join(
        [
            arrange(struct.pack(">f", 1.5), "ABCD"),
            struct.pack(">h", -7),
            arrange(struct.pack(">f", -2.25), "CDAB"),
            regs(0b1000),
            arrange(struct.pack(">I", 3_000_000_000), "DCBA"),
            regs(0xDEAD),
            arrange(struct.pack(">d", -123.456), "BADC"),
            b"LN-1",
            struct.pack(">H", 1234),
            arrange(struct.pack(">f", 0.25), "CDAB"),
        ]
    )
    decoder = RequestDecoder(one_request(*tags, max_gap=1))
    assert len(payload) == decoder.request.payload_bytes == 36
    assert decoder.tag_ids.tolist() == [0, 1, 2, 3, 4, 5, 7, 8]
    assert decoder.string_tag_ids.tolist() == [6]
    assert decoder.decode(payload).tolist() == [
        1.5,
        -3.5,
        -2.25,
        1.0,
        3_000_000_000.0,
        -123.456 - 1.0,
        1234 * 0.1,
        0.25,
    ]
    assert decoder.decode_strings(payload) == {6: b"LN-1"}


@pytest.mark.parametrize(
    ("length", "order", "data", "expected"),
    [
        (4, "ABCD", b"AB12", ("AB12", Quality.GOOD, "")),
        (5, "ABCD", b"AB-42\0", ("AB-42", Quality.GOOD, "")),
        (6, "ABCD", b"XY\0\0\0\0", ("XY", Quality.GOOD, "")),
        (3, "ABCD", b"ABCD", ("ABC", Quality.GOOD, "")),  # the fourth byte is past the length
        (4, "ABCD", b"OK\0Z", ("OK", Quality.GOOD, "")),  # ends at the first NUL
        (6, "ABCD", b"DIE   ", ("DIE", Quality.GOOD, "")),  # space padding dropped
        (4, "ABCD", b"DIE-", ("DIE-", Quality.GOOD, "")),  # no terminator: the whole length
        (2, "ABCD", b"\0\0", ("", Quality.GOOD, "")),
        (4, "BADC", b"ID-E", ("DIE-", Quality.GOOD, "")),  # the low byte of each register first
        (3, "DCBA", b"ID\0E", ("DIE", Quality.GOOD, "")),
        (4, "CDAB", b"DIE-", ("DIE-", Quality.GOOD, "")),  # a word order: the bytes stay
        # Not ASCII: replaced, nothing dropped, and the reading says so.
        (4, "ABCD", b"\xb0C\xff1", ("\ufffdC\ufffd1", Quality.UNCERTAIN, NOT_ASCII)),
    ],
)
def test_strings(length: int, order: str, data: bytes, expected: tuple[str, Quality, str]) -> None:
    decoder = RequestDecoder(one_request(tag(9, 40, "string", length=length, order=order)))
    assert decoder.tag_ids.tolist() == []
    assert decoder.has_strings
    assert decoder.decode(data).tolist() == []
    assert decode_text(decoder.decode_strings(data)[9]) == expected


def test_many_float32_in_one_response() -> None:
    values = [i * 1.25 - 30.0 for i in range(62)]
    decoder = RequestDecoder(one_request(*(tag(i, 2 * i, "float32") for i in range(62))))
    assert decoder.decode(struct.pack(">62f", *values)).tolist() == values
    # The same tags word-swapped take the general path and agree.
    swapped = RequestDecoder(
        one_request(*(tag(i, 2 * i, "float32", order="CDAB") for i in range(62)))
    )
    payload = b"".join(arrange(struct.pack(">f", v), "CDAB") for v in values)
    assert swapped.decode(payload).tolist() == values


def test_returned_arrays_are_fresh() -> None:
    # A batch keeps the array it is given, so the next decode must not overwrite it.
    decoder = RequestDecoder(one_request(*(tag(i, i, "uint16") for i in range(3))))
    first = decoder.decode(regs(1, 2, 3))
    decoder.decode(regs(4, 5, 6))
    assert first.tolist() == [1, 2, 3]
    assert first.dtype == np.float64 and decoder.tag_ids.dtype == np.int32


@pytest.mark.parametrize(
    ("request_tags", "payload"),
    [
        ([tag(0, 0, "float32")], regs(1)),
        ([tag(0, 0, "float32")], regs(1, 2, 3)),
        ([tag(0, 0, "uint16")], b""),
        ([tag(i, i, "bool", table=CO) for i in range(9)], b"\x00"),
        ([tag(i, i, "bool", table=CO) for i in range(9)], b"\x00\x00\x00"),
    ],
)
def test_wrong_payload_size_is_refused(request_tags: list[PlanTag], payload: bytes) -> None:
    decoder = RequestDecoder(one_request(*request_tags))
    with pytest.raises(ValueError, match="payload bytes"):
        decoder.decode(payload)
    with pytest.raises(ValueError, match="payload bytes"):
        decoder.decode_strings(payload)


def test_plan_decoders_follow_the_plan() -> None:
    plan = plan_unit([tag(0, 0, "uint16"), tag(1, 0, "bool", table=CO), tag(2, 9, "uint16")])
    decoders = plan_decoders(plan)
    assert [d.request for d in decoders] == list(plan.requests)
    assert [d.tag_ids.tolist() for d in decoders] == [[1], [0], [2]]


@pytest.mark.parametrize(
    ("order", "nbytes", "perm"),
    [
        ("ABCD", 4, (0, 1, 2, 3)),
        ("CDAB", 4, (2, 3, 0, 1)),
        ("BADC", 4, (1, 0, 3, 2)),
        ("DCBA", 4, (3, 2, 1, 0)),
        ("CDAB", 8, (6, 7, 4, 5, 2, 3, 0, 1)),
        ("BADC", 8, (1, 0, 3, 2, 5, 4, 7, 6)),
        ("DCBA", 2, (1, 0)),
    ],
)
def test_register_permutation(order: str, nbytes: int, perm: tuple[int, ...]) -> None:
    assert register_permutation(order, nbytes) == perm


def test_register_permutation_refuses_unknown_order() -> None:
    with pytest.raises(ValueError, match="unknown order"):
        register_permutation("BACD", 4)


# Round trips: values packed with struct in the test, laid out at random addresses in random
# orders, planned, and decoded by the codec.

INTEGER_RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


@st.composite
def numeric_value(draw: st.DrawFn) -> tuple[str, float | int]:
    type_ = draw(st.sampled_from([*INTEGER_RANGES, "float32", "float64"]))
    if type_ in INTEGER_RANGES:
        low, high = INTEGER_RANGES[type_]
        return type_, draw(st.integers(low, high))
    if type_ == "float32":
        return type_, draw(st.floats(width=32, allow_nan=False))
    return type_, draw(st.floats(allow_nan=False))


layouts = st.lists(
    st.tuples(
        numeric_value(),
        st.sampled_from(["ABCD", "CDAB", "BADC", "DCBA"]),
        st.integers(0, 3),  # unused registers before the value
        st.sampled_from([(1.0, 0.0), (0.1, 0.0), (-2.0, 10.0), (0.001, -273.15)]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(layout=layouts, max_gap=st.integers(0, 4), base=st.integers(0, 60000))
def test_register_round_trip(
    layout: list[tuple[tuple[str, float | int], str, int, tuple[float, float]]],
    max_gap: int,
    base: int,
) -> None:
    image = bytearray()
    tags: list[PlanTag] = []
    expected: dict[int, float] = {}
    for tag_id, ((type_, value), order, gap, (scale, offset)) in enumerate(layout):
        image += b"\xee\xee" * gap
        t = tag(
            tag_id, base + len(image) // 2, type_, order=order, scale=scale, offset_value=offset
        )
        image += arrange(struct.pack(FORMATS[type_], value), order)
        tags.append(t)
        # float64 of the raw value, then scale and offset, as two roundings.
        expected[tag_id] = float(value) * scale + offset
    seen: dict[int, float] = {}
    for decoder in plan_decoders(plan_unit(tags, max_gap=max_gap)):
        r = decoder.request
        payload = bytes(image[2 * (r.start - base) : 2 * (r.end - base)])
        values = decoder.decode(payload)
        seen.update(zip(decoder.tag_ids.tolist(), values.tolist(), strict=True))
    assert seen == expected


@settings(max_examples=100, deadline=None)
@given(
    states=st.lists(st.booleans(), min_size=1, max_size=2100),
    chosen=st.data(),
    table=st.sampled_from([CO, DI]),
)
def test_bit_round_trip(states: list[bool], chosen: st.DataObject, table: Table) -> None:
    picks = chosen.draw(st.sets(st.integers(0, len(states) - 1), min_size=1))
    tags = [tag(i, i, "bool", table=table) for i in sorted(picks)]
    decoded: dict[int, float] = {}
    for decoder in plan_decoders(plan_unit(tags, max_gap=7)):
        r = decoder.request
        packed = bytearray((r.count + 7) // 8)
        for i in range(r.count):
            if states[r.start + i]:
                packed[i // 8] |= 1 << (i % 8)
        decoded.update(zip(decoder.tag_ids.tolist(), decoder.decode(packed).tolist(), strict=True))
    assert decoded == {i: float(states[i]) for i in picks}


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
    chosen=st.data(),
)
def test_register_bit_round_trip(words: list[int], chosen: st.DataObject) -> None:
    picks = chosen.draw(
        st.sets(st.tuples(st.integers(0, len(words) - 1), st.integers(0, 15)), min_size=1)
    )
    tags = [tag(i, reg, "bool", bit=bit) for i, (reg, bit) in enumerate(sorted(picks))]
    request = one_request(*tags)
    payload = regs(*words[request.start : request.end])
    decoder = RequestDecoder(request)
    decoded = dict(zip(decoder.tag_ids.tolist(), decoder.decode(payload).tolist(), strict=True))
    assert decoded == {
        i: float((words[reg] >> bit) & 1) for i, (reg, bit) in enumerate(sorted(picks))
    }


def test_few_scattered_values_of_mixed_types_decode_with_their_scale() -> None:
    # A request of a few values (the scattered-tag poll): every type, gaps between them, one
    # scaled, read from a bytearray as well as from bytes.
    types = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
    values: list[float | int] = [
        -2,
        65535,
        -70000,
        4_000_000_000,
        -(2**40),
        2**63 + 2**11,
        1.5,
        -0.25,
    ]
    image = bytearray()
    tags = []
    for tag_id, (type_, value) in enumerate(zip(types, values, strict=True)):
        image += b"\xee\xee"
        scale = 0.5 if type_ == "int32" else 1.0
        tags.append(tag(tag_id, len(image) // 2, type_, scale=scale))
        image += struct.pack(FORMATS[type_], value)
    request = one_request(*tags)
    payload = bytes(image[2 * request.start : 2 * request.end])
    decoder = RequestDecoder(request)
    expected = [float(v) for v in values]
    expected[2] = -35000.0
    assert decoder.decode(payload).tolist() == expected
    assert decoder.decode(bytearray(payload)).tolist() == expected


def test_overlapping_values_decode_each_from_its_own_bytes() -> None:
    # A float32 and its two halves as uint16: the bytes are shared, each reads its own view.
    payload = struct.pack(">f", 1.5)
    request = one_request(tag(0, 0, "float32"), tag(1, 0, "uint16"), tag(2, 1, "uint16"))
    high, low = struct.unpack(">HH", payload)
    decoded = dict(
        zip(
            RequestDecoder(request).tag_ids.tolist(),
            RequestDecoder(request).decode(payload).tolist(),
            strict=True,
        )
    )
    assert decoded == {0: 1.5, 1: float(high), 2: float(low)}

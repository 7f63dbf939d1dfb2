"""The S7 codec: frames out, answers in, fast and slow paths, and answers that must not pass."""

from __future__ import annotations

import calendar
import math
import struct

import numpy as np
import pytest

from agent.errors import DeviceError, ProtocolError
from connectors.s7.address import parse_address
from connectors.s7.codec import RequestCodec, parse_setup, setup_frame
from connectors.s7.planner import PlanTag, ReadItem, plan_reads


def codec_of(*addresses: str, scale: float = 1.0, max_gap: int = 0) -> RequestCodec:
    tags = [PlanTag(i, parse_address(a), scale) for i, a in enumerate(addresses)]
    (request,) = plan_reads(tags, max_gap=max_gap).requests
    return RequestCodec(request)


def answer(items: list[tuple[int, bytes]], seq: int = 1, count: int | None = None) -> bytes:
    """An ack-data PDU carrying `items` as (return code, data), fill bytes between them."""
    body = b""
    for n, (code, data) in enumerate(items):
        if code != 0xFF:
            body += struct.pack(">BBH", code, 0, 0)
            continue
        body += struct.pack(">BBH", 0xFF, 0x04, len(data) * 8) + data
        if len(data) % 2 and n < len(items) - 1:
            body += b"\0"
    params = bytes([0x04, len(items) if count is None else count])
    return struct.pack(">BBHHHHBB", 0x32, 3, 0, seq, len(params), len(body), 0, 0) + params + body


def bcd(n: int) -> int:
    return (n // 10) << 4 | n % 10


def test_the_frame_is_a_readvar_job_with_one_spec_per_item() -> None:
    codec = codec_of("DB7.DBD4:REAL", "MW10", "T3")
    frame = codec.frame(0x1234)
    assert frame[:10] == bytes.fromhex("3201 0000 1234 0026 0000")
    assert frame[10:12] == bytes([0x04, 3])
    specs = [frame[12 + 12 * n : 24 + 12 * n] for n in range(3)]
    # timers first (area 1D), then markers (83), then DB (84); the address is in bits
    assert specs[0] == bytes.fromhex("120a10 1d 0001 0000 1d 000003")
    assert specs[1] == bytes.fromhex("120a10 02 0002 0000 83 000050")
    assert specs[2] == bytes.fromhex("120a10 02 0004 0007 84 000020")


def test_every_numeric_type_decodes_big_endian_with_scale() -> None:
    data = (
        struct.pack(">f", 21.5)
        + struct.pack(">h", -300)
        + bytes([0b1000_0001, ord("A")])
        + struct.pack(">I", 4_000_000_000)
        + struct.pack(">i", -123456)
        + struct.pack(">H", 65535)
        + struct.pack(">d", 1e300)
    )
    codec = codec_of(
        "DB1.DBD0:REAL",
        "DB1.DBW4:INT",
        "DB1.DBX6.0",
        "DB1.DBX6.7",
        "DB1.DBX6.1",
        "DB1.DBB7:CHAR",
        "DB1.DBD8:UDINT",
        "DB1.DBD12:DINT",
        "DB1.DBW16:UINT",
        "DB1.DBB18:LREAL",
    )
    values, failures = codec.decode(answer([(0xFF, data)]))
    assert failures == []
    by_tag = dict(zip(codec.tag_ids.tolist(), values.tolist(), strict=True))
    assert by_tag == {
        0: 21.5,
        1: -300.0,
        2: 1.0,
        3: 1.0,
        4: 0.0,
        5: 65.0,
        6: 4_000_000_000.0,
        7: -123456.0,
        8: 65535.0,
        9: 1e300,
    }


def test_scale_and_offset_apply_but_not_to_bools() -> None:
    tags = [
        PlanTag(0, parse_address("DB1.DBW0:INT"), scale=0.1, offset_value=-5),
        PlanTag(1, parse_address("DB1.DBX2.0"), scale=10.0, offset_value=3),
    ]
    codec = RequestCodec(plan_reads(tags).requests[0])
    values, _ = codec.decode(answer([(0xFF, struct.pack(">h", 250) + b"\x01")]))
    assert values.tolist() == pytest.approx([20.0, 1.0])


def test_timestamps_timers_and_counters() -> None:
    when = (2026, 3, 14, 15, 9, 26)
    unix = calendar.timegm((*when, 0, 0, 0))
    dt = bytes([bcd(26), bcd(3), bcd(14), bcd(15), bcd(9), bcd(26), bcd(12), (3 << 4) | 7])
    dtl = struct.pack(">HBBBBBBI", 2026, 3, 14, 6, 15, 9, 26, 250_000_000)
    codec = codec_of("DB1.DBB0:DT", "DB1.DBB8:DTL")
    values, _ = codec.decode(answer([(0xFF, dt + dtl)]))
    assert values.tolist() == [unix + 0.123, unix + 0.25]
    # S5TIME: time base 2 (1 s) and 3 digits 125; a counter of 042
    codec = codec_of("T1", "C1")
    timers, counters = (0x21, 0x25), (0x00, 0x42)
    values, _ = codec.decode(
        answer([(0xFF, bytes(counters)), (0xFF, bytes(timers))])  # counters (1C) come first
    )
    by_tag = dict(zip(codec.tag_ids.tolist(), values.tolist(), strict=True))
    assert by_tag == {0: 125.0, 1: 42.0}


def test_impossible_bcd_and_dates_read_nan() -> None:
    bad_dt = bytes([0x2A, 0x01, 0x01, 0, 0, 0, 0, 0])  # a nibble of 10
    bad_month = bytes([bcd(26), bcd(13), bcd(1), 0, 0, 0, 0, 0])
    codec = codec_of("DB1.DBB0:DT", "DB1.DBB8:DT")
    values, _ = codec.decode(answer([(0xFF, bad_dt + bad_month)]))
    assert all(math.isnan(v) for v in values)
    values, _ = codec_of("C0").decode(answer([(0xFF, bytes([0x0A, 0x00]))]))
    assert math.isnan(values[0])


def test_a_refused_item_reads_nan_and_the_others_read_through_the_slow_path() -> None:
    codec = codec_of("DB1.DBW0", "DB2.DBW0", "DB3.DBB0:BYTE", "DB4.DBW0")
    good = answer([(0xFF, b"\x00\x07"), (0x0A, b""), (0xFF, b"\x09"), (0xFF, b"\x00\x05")])
    values, failures = codec.decode(good)
    assert [(f.index, f.code) for f in failures] == [(1, 0x0A)]
    by_tag = dict(zip(codec.tag_ids.tolist(), values.tolist(), strict=True))
    assert by_tag[0] == 7 and by_tag[2] == 9 and by_tag[3] == 5 and math.isnan(by_tag[1])


def test_octet_string_lengths_in_bytes_are_understood() -> None:
    codec = codec_of("T0")
    pdu = bytearray(answer([(0xFF, bytes([0x10, 0x05]))]))
    pdu[15], pdu[16], pdu[17] = 0x09, 0, 2  # transport size 09: the length in bytes
    values, failures = codec.decode(bytes(pdu))
    assert failures == [] and values.tolist() == [0.5]


@pytest.mark.parametrize("kind", [2, 3], ids=["ack", "ack-data"])
def test_the_header_error_refuses_the_whole_request(kind: int) -> None:
    codec = codec_of("DB1.DBW0")
    refused = struct.pack(">BBHHHHBB", 0x32, kind, 0, 1, 0, 0, 0x81, 0x04)
    with pytest.raises(DeviceError) as caught:
        codec.decode(refused)
    assert caught.value.code == 0x8104
    assert str(caught.value) == "function not allowed in this context (8104)"


MALFORMED = {
    "shorter than a header": b"\x32\x03\x00",
    "not S7": b"\x33" + answer([(0xFF, b"\0\1")])[1:],
    "a job, not an answer": b"\x32\x01" + answer([(0xFF, b"\0\1")])[2:],
    "an ack without data": b"\x32\x02" + answer([(0xFF, b"\0\1")])[2:],
    "other item count": answer([(0xFF, b"\0\1")], count=2),
    "wrong item length": answer([(0xFF, b"\0\1\2\3")]),
    "cut in the data": answer([(0xFF, b"\0\1")])[:-1],
    "extra bytes": answer([(0xFF, b"\0\1")]) + b"\xff",
    "a zero byte the header does not count": answer([(0xFF, b"\0\1")]) + b"\0",
}


@pytest.mark.parametrize("pdu", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_answers_raise_and_never_decode(pdu: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec_of("DB1.DBW0").decode(pdu)


def test_lengths_that_agree_with_each_other_but_not_the_items_are_caught() -> None:
    # A well-formed answer for a 4-byte item when 2 were asked: the headers say so.
    pdu = answer([(0xFF, b"\0\1\2\3")])
    with pytest.raises(ProtocolError, match="carries 4 bytes, 2 were asked for"):
        codec_of("DB1.DBW0").decode(pdu)


def test_strings_come_from_their_own_path() -> None:
    codec = codec_of("DB1.DBB0:STRING[8]", "DB1.DBW10:INT")
    data = bytes([8, 5]) + b"hello\0\0\0" + struct.pack(">h", -2)
    pdu = answer([(0xFF, data)])
    values, _ = codec.decode(pdu)
    assert codec.tag_ids.tolist() == [1] and values.tolist() == [-2.0]
    assert codec.decode_strings(pdu) == {0: "hello"}


def test_setup_communication_round_trip() -> None:
    frame = setup_frame(1, 960)
    assert frame[10] == 0xF0 and struct.unpack_from(">H", frame, 16)[0] == 960
    granted = struct.pack(">BBHHHHBBBBHHH", 0x32, 3, 0, 1, 8, 0, 0, 0, 0xF0, 0, 1, 1, 240)
    assert parse_setup(granted) == 240
    with pytest.raises(ProtocolError):
        parse_setup(granted[:15])


def test_items_of_a_plan_carry_their_tags() -> None:
    codec = codec_of("DB1.DBW0", "DB1.DBW2", max_gap=4)
    (item,) = codec.request.items
    assert isinstance(item, ReadItem) and item.nbytes == 4
    assert np.array_equal(codec.tag_ids, [0, 1])

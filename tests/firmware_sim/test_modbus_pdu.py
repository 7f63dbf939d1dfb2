"""The pure Modbus request handler: table-driven cases, writes, exceptions, and random input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_sim.image import RegisterImage, Table
from firmware_sim.modbus_pdu import handle_pdu, request_length
from firmware_sim.modbus_rtu import crc16, with_crc


def _image() -> RegisterImage:
    image = RegisterImage(size=100)
    for i in range(100):
        image.set_registers(Table.HOLDING_REGISTERS, i, (1000 + i).to_bytes(2, "big"))
        image.set_registers(Table.INPUT_REGISTERS, i, (2000 + i).to_bytes(2, "big"))
        image.set_bit(Table.COILS, i, i % 3 == 0)
        image.set_bit(Table.DISCRETE_INPUTS, i, i % 2 == 1)
    return image


@pytest.mark.parametrize(
    ("request_hex", "response_hex"),
    [
        # FC03: two registers from 0 -> 1000, 1001
        ("03 0000 0002", "03 04 03E8 03E9"),
        # FC04: one input register at 99 (the last address)
        ("04 0063 0001", "04 02 0833"),
        # FC01: coils 0..9 are 1 at 0,3,6,9 -> 0b01001001, 0b10
        ("01 0000 000A", "01 02 49 02"),
        # FC02: discretes 0..7 are 1 at odd addresses -> 0b10101010
        ("02 0000 0008", "02 01 AA"),
        # limits: 125 registers and 2000 bits are legal sizes, 126 / 2001 are not
        ("03 0000 007E", "83 03"),
        ("01 0000 07D1", "81 03"),
        ("03 0000 0000", "83 03"),
        ("01 0000 0000", "81 03"),
        # past the table (size 100): illegal data address
        ("03 0063 0002", "83 02"),
        ("04 FFFF 0001", "84 02"),
        ("02 0060 0005", "82 02"),
        # unknown function codes
        ("07", "87 01"),
        ("2B 0E 01 00", "AB 01"),
        # truncated and over-long requests
        ("03 0000", "83 03"),
        ("03 0000 0001 00", "83 03"),
        ("05 0000 1234", "85 03"),
        ("10 0000 0002 03 0001 0002", "90 03"),
        ("0F 0000 000A 01 FF", "8F 03"),
        ("", "80 03"),
    ],
)
def test_requests_and_exceptions(request_hex: str, response_hex: str) -> None:
    assert handle_pdu(_image(), bytes.fromhex(request_hex)) == bytes.fromhex(response_hex)


def test_read_limits_accept_the_maximum() -> None:
    image = RegisterImage(size=2000)
    assert len(handle_pdu(image, bytes.fromhex("03 0000 007D"))) == 2 + 250
    assert handle_pdu(image, bytes.fromhex("01 0000 07D0"))[1] == 250


def test_write_single_coil_and_register() -> None:
    image = _image()
    assert handle_pdu(image, bytes.fromhex("05 0001 FF00")) == bytes.fromhex("05 0001 FF00")
    assert image.coils[1] == 1
    assert handle_pdu(image, bytes.fromhex("05 0000 0000")) == bytes.fromhex("05 0000 0000")
    assert image.coils[0] == 0
    assert handle_pdu(image, bytes.fromhex("05 0064 FF00")) == bytes.fromhex("85 02")
    assert handle_pdu(image, bytes.fromhex("06 0005 BEEF")) == bytes.fromhex("06 0005 BEEF")
    assert image.registers(Table.HOLDING_REGISTERS, 5, 1) == bytes.fromhex("BEEF")
    assert handle_pdu(image, bytes.fromhex("06 0064 0001")) == bytes.fromhex("86 02")


def test_write_multiple() -> None:
    image = _image()
    answer = handle_pdu(image, bytes.fromhex("10 0010 0002 04 0102 0304"))
    assert answer == bytes.fromhex("10 0010 0002")
    assert image.registers(Table.HOLDING_REGISTERS, 16, 2) == bytes.fromhex("0102 0304")
    answer = handle_pdu(image, bytes.fromhex("0F 0014 000A 02 CD 01"))
    assert answer == bytes.fromhex("0F 0014 000A")
    assert list(image.coils[20:30]) == [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    # a write past the end changes nothing
    before = bytes(image.holding)
    assert handle_pdu(image, bytes.fromhex("10 0063 0002 04 0000 0000")) == bytes.fromhex("90 02")
    assert bytes(image.holding) == before
    assert handle_pdu(image, bytes.fromhex("10 0000 007C F8") + bytes(248)) == bytes.fromhex(
        "90 03"
    )


def test_read_write_multiple_writes_first() -> None:
    image = _image()
    request = bytes.fromhex("17 0002 0002 0003 0001 02 ABCD")
    assert handle_pdu(image, request) == bytes.fromhex("17 04 03EA ABCD")
    assert handle_pdu(image, bytes.fromhex("17 0000 0001 0000 007A F4") + bytes(244)) == (
        bytes.fromhex("97 03")
    )


@pytest.mark.parametrize(
    ("frame_hex", "crc"),
    [
        ("01 05 00 00 FF 00", 0x3A8C),
        ("01 03 00 00 00 04", 0x0944),
        ("11 03 00 6B 00 03", 0x8776),
        ("01 03 00 00 00 0A", 0xCDC5),
    ],
)
def test_crc16_vectors(frame_hex: str, crc: int) -> None:
    frame = bytes.fromhex(frame_hex)
    assert crc16(frame) == crc
    assert with_crc(frame)[-2:] == crc.to_bytes(2, "little")
    assert crc16(frame[:-1] + bytes([frame[-1] ^ 1])) != crc


def test_request_length() -> None:
    assert request_length(b"") is None
    assert request_length(bytes.fromhex("03")) == 5
    assert request_length(bytes.fromhex("10 0000 0002")) is None
    assert request_length(bytes.fromhex("10 0000 0002 04")) == 10
    assert request_length(bytes.fromhex("17 0000 0001 0000 0001 02")) == 12
    assert request_length(bytes.fromhex("2B")) == -1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=260))
@pytest.mark.slow
def test_any_bytes_get_a_well_formed_answer(pdu: bytes) -> None:
    answer = handle_pdu(_image(), pdu)
    assert 2 <= len(answer) <= 253
    if answer[0] & 0x80:
        assert len(answer) == 2 and answer[1] in (1, 2, 3)
        assert not pdu or answer[0] == (pdu[0] | 0x80)
    else:
        assert answer[0] == pdu[0]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 23]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=20),
)
def test_structured_requests_never_raise(fc: int, a: int, b: int, tail: bytes) -> None:
    pdu = bytes([fc]) + a.to_bytes(2, "big") + b.to_bytes(2, "big") + tail
    answer = handle_pdu(_image(), pdu)
    assert answer[0] in (fc, fc | 0x80)

"""The pure Modbus wire code: PDUs (pdu.py) and their TCP and RTU frames (framing.py)."""

from __future__ import annotations

import pytest

from connectors.modbus.framing import (
    check_mbap_read,
    crc_ok,
    mbap_frame,
    mbap_length_fits,
    mbap_read,
    rtu_frame,
    rtu_stated_size,
    with_crc,
)
from connectors.modbus.pdu import (
    ExceptionResponse,
    MalformedPdu,
    read_answer,
    read_request,
    write_single_coil,
    write_single_register,
)


def test_pdus_of_reads_and_writes() -> None:
    assert read_request(3, 0x6B, 3) == bytes.fromhex("03 006B 0003")
    assert write_single_coil(0xAC, True) == bytes.fromhex("05 00AC FF00")
    assert write_single_coil(0xAC, False) == bytes.fromhex("05 00AC 0000")
    assert write_single_register(1, -1) == bytes.fromhex("06 0001 FFFF")
    for bad in [(5, 0, 1), (3, 0, 0), (3, 0, 126), (1, 0, 2001), (3, 65535, 2)]:
        with pytest.raises(ValueError):
            read_request(*bad)


def test_read_answers_data_exception_or_malformed() -> None:
    assert read_answer(bytes.fromhex("03 04 0001 0002"), 3, 2) == bytes.fromhex("0001 0002")
    assert read_answer(bytes.fromhex("01 02 FF 01"), 1, 9) == bytes.fromhex("FF 01")
    assert read_answer(bytes.fromhex("83 02"), 3, 2) == ExceptionResponse(3, 2)
    assert ExceptionResponse(3, 2).message == "exception 02 (illegal data address) to function 03"
    with pytest.raises(MalformedPdu, match="function code 4 in the answer to function 03"):
        read_answer(bytes.fromhex("04 04 0001 0002"), 3, 2)
    with pytest.raises(MalformedPdu, match="byte count 4 and 4 data bytes; 6 expected"):
        read_answer(bytes.fromhex("03 04 0001 0002"), 3, 3)
    with pytest.raises(MalformedPdu, match="exception response of 3 bytes"):
        read_answer(bytes.fromhex("83 02 00"), 3, 2)
    with pytest.raises(MalformedPdu, match="function code none"):
        read_answer(b"", 3, 2)


def test_mbap_frames() -> None:
    pdu = read_request(3, 0x6B, 3)
    assert mbap_frame(0x1234, 17, pdu) == bytes.fromhex("1234 0000 0006 11") + pdu
    assert mbap_read(0x1234, 17, 3, 0x6B, 3) == mbap_frame(0x1234, 17, pdu)
    assert mbap_length_fits(3, 3, 2) and mbap_length_fits(9, 3, 3)
    assert not mbap_length_fits(7, 3, 3) and not mbap_length_fits(1, 3, 1)
    with pytest.raises(ValueError, match="unit id"):
        check_mbap_read(256, 3, 0, 1)


def test_rtu_frames() -> None:
    frame = rtu_frame(0x11, read_request(3, 0x6B, 3))
    assert frame == bytes.fromhex("11 03 006B 0003 7687") and crc_ok(frame)
    assert not crc_ok(frame[:-1] + bytes([frame[-1] ^ 1])) and not crc_ok(b"\x01")
    assert rtu_stated_size(with_crc(bytes.fromhex("02 03 02 0063"))) == 7
    assert rtu_stated_size(bytes.fromhex("02 83 06")) == 5
    assert rtu_stated_size(bytes.fromhex("02 2B 0E")) is None
    assert rtu_stated_size(b"\x02\x03") is None

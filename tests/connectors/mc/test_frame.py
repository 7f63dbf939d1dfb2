"""MC framing: requests byte for byte, responses parsed, malformed ones refused."""

from __future__ import annotations

import pytest

from connectors.mc.address import parse_address
from connectors.mc.frame import (
    Code,
    FrameError,
    FrameType,
    Framing,
    Point,
    Series,
    end_code_reason,
)


def test_3e_binary_batch_read_is_the_documented_layout() -> None:
    framing = Framing(timer=0x10)
    request = framing.batch_read(Point("D", 100), 5)
    # subheader, network 0, PC FF, module I/O 03FF, station 0, length 12, timer, 0401, 0000,
    # device number 100 (3 bytes) and code A8, 5 points
    assert request.hex(" ") == "50 00 00 ff ff 03 00 0c 00 10 00 01 04 00 00 64 00 00 a8 05 00"


def test_iqr_widens_the_device_fields_and_uses_subcommand_0002() -> None:
    request = Framing(series=Series.IQR, timer=0).batch_read(Point("D", 100), 1)
    assert request[11:15] == bytes.fromhex("01040200")
    assert request[15:21] == bytes.fromhex("64000000a800")


def test_ascii_3e_and_4e_requests_are_hex_text() -> None:
    framing = Framing(code=Code.ASCII, timer=0x10)
    assert framing.batch_read(Point("X", 0x1F), 2) == b"500000FF03FF000018001004010000X*00001F0002"
    e4 = Framing(code=Code.ASCII, frame=FrameType.E4, timer=0x10)
    assert e4.with_serial(e4.batch_read(Point("D", 7), 1), 0x1234).startswith(b"540012340000")


def test_binary_response_and_error_end_code() -> None:
    framing = Framing()
    header = bytes.fromhex("d000 00 ff ff03 00 0600")
    assert framing.body_length(header) == (0, 6)
    assert framing.parse_body(0, bytes.fromhex("0000 3412 7856")).data == bytes.fromhex("34127856")
    error = framing.parse_body(0, bytes.fromhex("56c0") + bytes(9))
    assert (error.end_code, error.data) == (0xC056, b"")
    assert end_code_reason(0xC056) == "read past the last device number (C056)"


def test_ascii_data_comes_back_as_little_endian_words_and_double_words() -> None:
    framing = Framing(code=Code.ASCII)
    response = framing.parse_body(0, b"0000" + b"1234" + b"89ABCDEF", words=1)
    assert response.data == bytes.fromhex("3412 efcdab89")


@pytest.mark.parametrize(
    "header",
    [
        bytes.fromhex("d400 00 ff ff03 00 0600"),  # a 4E subheader on a 3E port
        bytes.fromhex("d000 00 fe ff03 00 0600"),  # another PC number
    ],
)
def test_a_header_that_answers_someone_else_is_malformed(header: bytes) -> None:
    with pytest.raises(FrameError):
        Framing().body_length(header)


def test_ascii_garbage_is_malformed() -> None:
    with pytest.raises(FrameError):
        Framing(code=Code.ASCII).parse_body(0, b"0000ZZZZ")


def test_x_is_octal_on_fx5_and_hex_on_q() -> None:
    address = parse_address("X17")
    assert address.number(Series.FX5) == 0o17
    assert address.number(Series.Q) == 0x17
    with pytest.raises(ValueError, match="octal"):
        parse_address("X1F").number(Series.FX5)
    assert parse_address("SD10").device == "SD"
    assert parse_address("zr2000").number(Series.Q) == 2000


def test_fx5_ascii_writes_x_in_octal() -> None:
    framing = Framing(series=Series.FX5, code=Code.ASCII)
    assert framing.batch_read(Point("X", 0o17), 1).endswith(b"X*0000170001")
    assert framing.batch_read(Point("W", 0x1F), 1).endswith(b"W*00001F0001")


def test_random_read_lists_words_then_double_words() -> None:
    request = Framing(timer=0).random_read([Point("D", 1)], [Point("M", 16), Point("D", 4)])
    assert request[11:15] == bytes.fromhex("03040000")
    assert request[15:17] == bytes([1, 2])  # one word, two double words
    assert request[17:] == bytes.fromhex("010000a8 100000 90 040000a8")


def test_4e_responses_carry_the_serial() -> None:
    framing = Framing(frame=FrameType.E4)
    header = bytes.fromhex("d400 3412 0000 00 ff ff03 00 0400")
    assert framing.header_size == len(header)
    assert framing.body_length(header) == (0x1234, 4)

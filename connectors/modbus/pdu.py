"""Modbus PDUs (standards.md §5.3): function codes, requests built and answers checked.

Pure: bytes in, bytes or a verdict out, no I/O and no framing (the MBAP header and the RTU
address and CRC are `framing.py`'s). The TCP client, the RTU link, vision's write-back and the
benchmarks' lean clients all build and check PDUs here, so the wire knowledge is written once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

READ_FUNCTIONS = (1, 2, 3, 4)
MAX_COUNT = {1: 2000, 2: 2000, 3: 125, 4: 125}
WRITE_SINGLE_COIL = 0x05
WRITE_SINGLE_REGISTER = 0x06
COIL_ON = 0xFF00

_REQUEST = struct.Struct(">BHH")  # function code, address, count or value

EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


class MalformedPdu(ValueError):
    """An answer that cannot be the answer to its request (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """A well-formed exception answer: the device refused `function` with `code`."""

    function: int
    code: int

    @property
    def message(self) -> str:
        return exception_message(self.function, self.code)


def exception_message(function: int, code: int) -> str:
    name = EXCEPTION_NAMES.get(code, "unknown exception code")
    return f"exception {code:02X} ({name}) to function {function:02d}"


def exception_reason(code: int) -> str:
    """The reason a reading is bad after exception `code`: "illegal data address (02)"."""
    return f"{EXCEPTION_NAMES.get(code, 'unknown exception code')} ({code:02X})"


def data_bytes(function: int, count: int) -> int:
    """Data bytes in the answer to a read: 2 per register, or the bits packed 8 per byte."""
    return (count + 7) // 8 if function in (1, 2) else 2 * count


def check_read(function: int, start: int, count: int) -> None:
    """ValueError unless (function, start, count) is a read a device can answer."""
    if function not in READ_FUNCTIONS:
        raise ValueError(f"not a read function code: {function}")
    if not 1 <= count <= MAX_COUNT[function] or not 0 <= start <= 65536 - count:
        raise ValueError(f"bad read: function {function:02d}, start {start}, count {count}")


def read_request(function: int, start: int, count: int) -> bytes:
    """The PDU of a read (FC 01-04)."""
    check_read(function, start, count)
    return _REQUEST.pack(function, start, count)


def write_single_coil(offset: int, on: bool) -> bytes:
    """The PDU of FC 05: FF00 sets the coil, 0000 clears it."""
    return _REQUEST.pack(WRITE_SINGLE_COIL, offset, COIL_ON if on else 0)


def write_single_register(offset: int, value: int) -> bytes:
    """The PDU of FC 06; the value is taken modulo 2^16."""
    return _REQUEST.pack(WRITE_SINGLE_REGISTER, offset, value & 0xFFFF)


def exception_in(pdu: bytes, function: int) -> ExceptionResponse | None:
    """The exception `pdu` holds if it answers `function` with one; MalformedPdu if its
    size is wrong; None if it is no exception answer."""
    if not pdu or pdu[0] != function | 0x80:
        return None
    if len(pdu) != 2:
        raise MalformedPdu(f"exception response of {len(pdu)} bytes")
    return ExceptionResponse(function, pdu[1])


def read_answer(pdu: bytes, function: int, count: int) -> bytes | ExceptionResponse:
    """The data bytes of the answer to a read of `count` items, or the device's exception.

    MalformedPdu when it answers another function or its byte count does not fit.
    """
    expected = data_bytes(function, count)
    if pdu and pdu[0] == function:  # the poll loop's case first: one test, one slice
        if len(pdu) == 2 + expected and pdu[1] == expected:
            return pdu[2:]
        given = pdu[1] if len(pdu) > 1 else "none"
        raise MalformedPdu(
            f"byte count {given} and {max(len(pdu) - 2, 0)} data bytes; "
            f"{expected} expected for {count} items"
        )
    refused = exception_in(pdu, function)
    if refused is None:
        code = pdu[0] if pdu else "none"
        raise MalformedPdu(f"function code {code} in the answer to function {function:02d}")
    return refused

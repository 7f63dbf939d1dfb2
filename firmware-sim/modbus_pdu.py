"""Modbus request PDU → response PDU against one `RegisterImage`, with no I/O.

Both servers (TCP and RTU) frame requests and call `handle_pdu`; it answers FC 01, 02, 03, 04,
05, 06, 15, 16 and 23 per standards.md §5.2 and turns every bad request into an exception PDU
(§5.3), so no input bytes can make it raise. Quantity limits are the spec's: reads of 1..2000
bits or 1..125 registers, writes of 1..1968 coils or 1..123 registers, FC23 read 1..125 and
write 1..121 (the write happens before the read).

A PDU longer than its function code calls for is answered with 03 (illegal data value) rather
than ignoring the tail: a request whose length disagrees with its own byte count is malformed.
An empty PDU has no function code to echo, so it is answered with `80 03`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage, Table

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04
GATEWAY_TARGET_FAILED = 0x0B

READ_COILS = 0x01
READ_DISCRETE_INPUTS = 0x02
READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_COIL = 0x05
WRITE_SINGLE_REGISTER = 0x06
WRITE_MULTIPLE_COILS = 0x0F
WRITE_MULTIPLE_REGISTERS = 0x10
READ_WRITE_MULTIPLE_REGISTERS = 0x17

# Function codes that change the image: the only ones a broadcast (RTU unit 0) may carry.
WRITE_FUNCTIONS = frozenset(
    {WRITE_SINGLE_COIL, WRITE_SINGLE_REGISTER, WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS}
)

MAX_READ_BITS = 2000
MAX_READ_REGISTERS = 125
MAX_WRITE_COILS = 1968
MAX_WRITE_REGISTERS = 123
MAX_RW_WRITE_REGISTERS = 121


@dataclass(slots=True)
class Unit:
    """One addressable Modbus device: the image it serves and the faults it shows."""

    image: RegisterImage
    faults: Faults = field(default_factory=Faults)


def exception_pdu(function: int, code: int) -> bytes:
    """The exception response for `function`: FC | 0x80 followed by the exception code."""
    return bytes(((function | 0x80) & 0xFF, code & 0xFF))


def _u16(pdu: bytes, offset: int) -> int:
    return (pdu[offset] << 8) | pdu[offset + 1]


def _read_bits(image: RegisterImage, table: Table, buf: bytearray, fc: int, pdu: bytes) -> bytes:
    if len(pdu) != 5:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    address, count = _u16(pdu, 1), _u16(pdu, 3)
    if not 1 <= count <= MAX_READ_BITS:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    if address + count > image.size or not image.mapped(table, address, count):
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    # One byte per bit in the image; the wire packs eight per byte, least significant first.
    packed = np.packbits(np.frombuffer(buf, np.uint8, count, address), bitorder="little")
    return bytes((fc, len(packed))) + packed.tobytes()


def _read_registers(
    image: RegisterImage, table: Table, buf: bytearray, fc: int, pdu: bytes
) -> bytes:
    if len(pdu) != 5:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    address, count = _u16(pdu, 1), _u16(pdu, 3)
    if not 1 <= count <= MAX_READ_REGISTERS:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    if address + count > image.size or not image.mapped(table, address, count):
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    # The image already holds wire-order bytes: the answer is one slice.
    return bytes((fc, count * 2)) + buf[address * 2 : (address + count) * 2]


def _read_coils(image: RegisterImage, pdu: bytes) -> bytes:
    return _read_bits(image, Table.COILS, image.coils, READ_COILS, pdu)


def _read_discrete(image: RegisterImage, pdu: bytes) -> bytes:
    return _read_bits(image, Table.DISCRETE_INPUTS, image.discrete, READ_DISCRETE_INPUTS, pdu)


def _read_holding(image: RegisterImage, pdu: bytes) -> bytes:
    return _read_registers(
        image, Table.HOLDING_REGISTERS, image.holding, READ_HOLDING_REGISTERS, pdu
    )


def _read_input(image: RegisterImage, pdu: bytes) -> bytes:
    return _read_registers(image, Table.INPUT_REGISTERS, image.input, READ_INPUT_REGISTERS, pdu)


def _write_single_coil(image: RegisterImage, pdu: bytes) -> bytes:
    fc = WRITE_SINGLE_COIL
    if len(pdu) != 5:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    address, value = _u16(pdu, 1), _u16(pdu, 3)
    if value not in (0xFF00, 0x0000):
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    if address >= image.size:
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    image.coils[address] = 1 if value else 0
    return bytes(pdu)


def _write_single_register(image: RegisterImage, pdu: bytes) -> bytes:
    fc = WRITE_SINGLE_REGISTER
    if len(pdu) != 5:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    address = _u16(pdu, 1)
    if address >= image.size:
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    image.holding[address * 2 : address * 2 + 2] = pdu[3:5]
    return bytes(pdu)


def _write_multiple_coils(image: RegisterImage, pdu: bytes) -> bytes:
    fc = WRITE_MULTIPLE_COILS
    if len(pdu) < 6:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    address, count, byte_count = _u16(pdu, 1), _u16(pdu, 3), pdu[5]
    if (
        not 1 <= count <= MAX_WRITE_COILS
        or byte_count != (count + 7) // 8
        or len(pdu) != 6 + byte_count
    ):
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    if address + count > image.size:
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    bits = np.unpackbits(np.frombuffer(pdu, np.uint8, byte_count, 6), bitorder="little")
    image.coils[address : address + count] = bits[:count].tobytes()
    return bytes(pdu[:5])


def _write_multiple_registers(image: RegisterImage, pdu: bytes) -> bytes:
    fc = WRITE_MULTIPLE_REGISTERS
    if len(pdu) < 6:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    address, count, byte_count = _u16(pdu, 1), _u16(pdu, 3), pdu[5]
    if (
        not 1 <= count <= MAX_WRITE_REGISTERS
        or byte_count != count * 2
        or len(pdu) != 6 + byte_count
    ):
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    if address + count > image.size:
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    image.holding[address * 2 : (address + count) * 2] = pdu[6:]
    return bytes(pdu[:5])


def _read_write_registers(image: RegisterImage, pdu: bytes) -> bytes:
    fc = READ_WRITE_MULTIPLE_REGISTERS
    if len(pdu) < 10:
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    read_address, read_count = _u16(pdu, 1), _u16(pdu, 3)
    write_address, write_count, byte_count = _u16(pdu, 5), _u16(pdu, 7), pdu[9]
    if (
        not 1 <= read_count <= MAX_READ_REGISTERS
        or not 1 <= write_count <= MAX_RW_WRITE_REGISTERS
        or byte_count != write_count * 2
        or len(pdu) != 10 + byte_count
    ):
        return exception_pdu(fc, ILLEGAL_DATA_VALUE)
    if read_address + read_count > image.size or write_address + write_count > image.size:
        return exception_pdu(fc, ILLEGAL_DATA_ADDRESS)
    # The spec performs the write before the read (standards.md §5.2).
    image.holding[write_address * 2 : (write_address + write_count) * 2] = pdu[10:]
    data = image.holding[read_address * 2 : (read_address + read_count) * 2]
    return bytes((fc, read_count * 2)) + data


_HANDLERS: dict[int, Callable[[RegisterImage, bytes], bytes]] = {
    READ_COILS: _read_coils,
    READ_DISCRETE_INPUTS: _read_discrete,
    READ_HOLDING_REGISTERS: _read_holding,
    READ_INPUT_REGISTERS: _read_input,
    WRITE_SINGLE_COIL: _write_single_coil,
    WRITE_SINGLE_REGISTER: _write_single_register,
    WRITE_MULTIPLE_COILS: _write_multiple_coils,
    WRITE_MULTIPLE_REGISTERS: _write_multiple_registers,
    READ_WRITE_MULTIPLE_REGISTERS: _read_write_registers,
}


def handle_pdu(image: RegisterImage, pdu: bytes) -> bytes:
    """Answer one request PDU (function code + data) from `image`; never raises."""
    if not pdu:
        return exception_pdu(0, ILLEGAL_DATA_VALUE)
    handler = _HANDLERS.get(pdu[0])
    if handler is None:
        return exception_pdu(pdu[0], ILLEGAL_FUNCTION)
    return handler(image, pdu)


def request_length(head: bytes) -> int | None:
    """Length of the request PDU that starts with `head`, or None if `head` cannot tell yet.

    Serial framing needs this: RTU has no length field, so the function code (and, for the
    multiple writes, the byte count) says where a request ends. Returns -1 for function codes
    this server does not know; their frames end by the silent interval alone.
    """
    if not head:
        return None
    fc = head[0]
    if fc in (1, 2, 3, 4, 5, 6):
        return 5
    if fc in (WRITE_MULTIPLE_COILS, WRITE_MULTIPLE_REGISTERS):
        return 6 + head[5] if len(head) >= 6 else None
    if fc == READ_WRITE_MULTIPLE_REGISTERS:
        return 10 + head[9] if len(head) >= 10 else None
    return -1

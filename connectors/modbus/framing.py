"""Modbus frames around a PDU: the MBAP header of TCP (standards.md §5.4) and the address and
CRC of RTU (§5.5).

Pure, like h11 or pymodbus's framer: bytes in, frames out, no I/O. The TCP client, the RTU
link, vision's write-back and the benchmarks' lean clients frame here; what a PDU holds is
`pdu.py`'s. The simulator in firmware-sim/ keeps its own copy on purpose, so that it stays an
independent check of this one (docs/decisions/0006-simulator-independence.md).
"""

from __future__ import annotations

import struct

from connectors.modbus.pdu import check_read, data_bytes, read_request

# -- TCP: MBAP header ------------------------------------------------------------------------

MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
MBAP_SIZE = MBAP.size
# The length field counts the unit id and the PDU, so a frame is MBAP_PREFIX + length bytes.
MBAP_PREFIX = 6
_MBAP_READ = struct.Struct(">HHHBBHH")  # MBAP + function code, start, count: one pack per read


def mbap_frame(tid: int, unit_id: int, pdu: bytes) -> bytes:
    """The TCP frame (ADU) of `pdu`."""
    return MBAP.pack(tid, 0, len(pdu) + 1, unit_id) + pdu


def mbap_read(tid: int, unit_id: int, function: int, start: int, count: int) -> bytes:
    """The TCP frame of a read (FC 01-04); ValueError for a bad read. The poll loop's hot
    path, so one check and one `pack`."""
    check_read(function, start, count)
    if not 0 <= unit_id <= 255:
        raise ValueError(f"unit id must be 0..255, not {unit_id}")
    return _MBAP_READ.pack(tid, 0, 6, unit_id, function, start, count)


def check_mbap_read(unit_id: int, function: int, start: int, count: int) -> None:
    """ValueError unless the read can be framed for TCP (unit ids 0-255)."""
    mbap_read(0, unit_id, function, start, count)


def mbap_length_fits(length: int, function: int, count: int) -> bool:
    """Whether an MBAP length can be the answer to a read: an exception or the data. Checked
    from the header alone, before the body comes, so a wrong length never stalls a stream."""
    return length == 3 or length == 3 + data_bytes(function, count)  # unit id + the PDU


# -- RTU: address + PDU + CRC-16/MODBUS --------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()
RTU_EXCEPTION_SIZE = 5  # address, function | 0x80, code, CRC


def crc16(frame: bytes | bytearray) -> int:
    """CRC-16/MODBUS: init 0xFFFF, reflected polynomial 0xA001; sent low byte first."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in frame:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """`frame` followed by its CRC, low byte first."""
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray) -> bool:
    """Whether the last two bytes of `frame` are the CRC of the rest."""
    return len(frame) >= 3 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    """The RTU frame (ADU) of `pdu`, CRC included."""
    return with_crc(bytes((unit_id,)) + pdu)


def rtu_read(unit_id: int, function: int, start: int, count: int) -> bytes:
    """The RTU frame of a read (FC 01-04), CRC included; ValueError for a bad read."""
    request = read_request(function, start, count)
    if not 1 <= unit_id <= 247:
        raise ValueError(f"RTU unit id must be 1..247, not {unit_id}")
    return rtu_frame(unit_id, request)


def rtu_answer_size(function: int, count: int, answered_function: int) -> int | None:
    """Bytes in the whole RTU answer to a read, given the function code it carries; None if
    that code fits no answer (RTU has no length field: the request says the length)."""
    if answered_function == function | 0x80:
        return RTU_EXCEPTION_SIZE
    if answered_function == function:
        return 5 + data_bytes(function, count)  # address, function, byte count, data, CRC
    return None


def rtu_stated_size(head: bytes | bytearray) -> int | None:
    """The size an RTU read answer or exception gives itself from its first three bytes
    (another unit's answer, whose request we did not make); None if it says none."""
    if len(head) < 3:
        return None
    if head[1] & 0x80:
        return RTU_EXCEPTION_SIZE
    if head[1] in (1, 2, 3, 4):
        return 5 + head[2]
    return None

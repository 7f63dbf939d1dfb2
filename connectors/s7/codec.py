"""S7 read frames out and answers in: one `RequestCodec` per planned request, pure, no I/O.

`frame(seq)` is the ReadVar job (S7 header, function 0x04, one 12-byte item spec per item),
built once but for its sequence number. `decode(pdu)` turns the answer into one float64 per
tag. The usual answer (every item read, nothing odd) takes the fast path: one `frombuffer`,
one comparison of every item header against the one expected, and one gather per dtype group
at offsets precomputed from the plan, so there is no Python loop over tags or items. Anything
else (an item refused, a length that does not match) takes the slow path, which walks the
items, keeps the good ones and names the refused ones by return code; a frame that cannot be
walked is a `ProtocolError` and every tag of the request reads bad.

Values: S7 is big-endian throughout. BOOL reads its byte and picks its bit. CHAR reads as
its character code. DATE_AND_TIME (8 BCD bytes) and DTL (12 bytes) read as Unix seconds
(UTC, as the CPU's clock says; sub-second kept). TIMER reads in seconds (S5TIME: 3 BCD digits
and a time base), COUNTER as its count (3 BCD digits). A BCD nibble above 9 or an impossible
date reads NaN, which the pipeline turns into bad quality. STRING values are not floats: they
are left out of `tag_ids` (as Modbus strings are) and served by `decode_strings`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import DeviceError, ProtocolError
from connectors.s7.planner import (
    ITEM_HEADER,
    PARAMETER,
    RESPONSE_HEADER,
    PlanTag,
    ReadItem,
    ReadRequest,
)

JOB = 0x01
ACK = 0x02
ACK_DATA = 0x03
READ_VAR = 0x04
SETUP_COMMUNICATION = 0xF0
ITEM_OK = 0xFF
_BYTE = 0x02  # transport size of a byte-wise item in a request
_DTYPES = {
    "BYTE": ">u1",
    "CHAR": ">u1",
    "USINT": ">u1",
    "SINT": ">i1",
    "WORD": ">u2",
    "UINT": ">u2",
    "INT": ">i2",
    "DWORD": ">u4",
    "UDINT": ">u4",
    "DINT": ">i4",
    "REAL": ">f4",
    "LREAL": ">f8",
}
_SPECIAL = ("BOOL", "DATE_AND_TIME", "DTL", "TIMER", "COUNTER")

# Item return codes (the answer's first byte per item), in the words an engineer acts on.
ITEM_CODES = {
    0x01: "hardware fault",
    0x03: "access denied",
    0x05: "address out of range",
    0x06: "data type not supported",
    0x07: "data type inconsistent",
    0x0A: "object does not exist",
}
# Errors in the answer's header (error class and code) that refuse the whole request.
HEADER_CODES = {
    0x8104: "function not allowed in this context",
    0x8500: "PDU too large for the CPU",
    0xD209: "block not found",
    0xD602: "protection level too low",
    0x8304: "resource not available",
}


def header_reason(code: int) -> str:
    return f"{HEADER_CODES.get(code, 'error')} ({code:04X})"


def item_reason(code: int) -> str:
    return f"{ITEM_CODES.get(code, 'error')} ({code:02X})"


def setup_frame(seq: int, pdu_size: int) -> bytes:
    """Setup Communication: one job at a time each way, asking for `pdu_size`."""
    return struct.pack(
        ">BBHHHHBBHHH", 0x32, JOB, 0, seq, 8, 0, SETUP_COMMUNICATION, 0, 1, 1, pdu_size
    )


def parse_setup(pdu: bytes) -> int:
    """The PDU size the CPU granted; DeviceError if it refused, ProtocolError if garbled."""
    if len(pdu) < 20 or pdu[0] != 0x32 or pdu[1] != ACK_DATA or pdu[12] != SETUP_COMMUNICATION:
        raise ProtocolError("malformed answer to Setup Communication")
    code = pdu[10] << 8 | pdu[11]
    if code:
        raise DeviceError(f"Setup Communication refused: {header_reason(code)}", code)
    granted: int = struct.unpack_from(">H", pdu, 18)[0]
    if granted < 64:
        raise ProtocolError(f"the CPU granted a PDU of {granted} bytes")
    return granted


def sequence(pdu: bytes) -> int:
    """The sequence number an answer echoes (its job's)."""
    if len(pdu) < 6:
        raise ProtocolError(f"answer of {len(pdu)} bytes, shorter than an S7 header")
    value: int = struct.unpack_from(">H", pdu, 4)[0]
    return value


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """An item the CPU refused: its index in the request and its return code."""

    index: int
    code: int


@dataclass(frozen=True, slots=True)
class _Group:
    dtype: np.dtype[np.generic]
    index: npt.NDArray[np.intp]  # (tags, bytes) gather into the answer
    rows: npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class _Special:
    """BOOL, DATE_AND_TIME, DTL, TIMER, COUNTER: a gather, then arithmetic per kind."""

    kind: str
    index: npt.NDArray[np.intp]
    rows: npt.NDArray[np.intp]
    bits: npt.NDArray[np.uint8]  # BOOL only


class RequestCodec:
    """Frames one planned request and decodes its answer into its tags' values."""

    __slots__ = (
        "_expected",
        "_groups",
        "_header_index",
        "_length",
        "_offset",
        "_params",
        "_positions",
        "_scale",
        "_scaled",
        "_specials",
        "_strings",
        "item_rows",
        "request",
        "tag_ids",
    )

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        items = request.items
        self._params = bytes([READ_VAR, len(items)]) + b"".join(_item_spec(i) for i in items)
        # Where each item's header sits in the answer, and what it says when all is well.
        positions: list[int] = []
        at = RESPONSE_HEADER + PARAMETER
        for n, item in enumerate(items):
            positions.append(at)
            at += ITEM_HEADER + item.nbytes + (item.nbytes & 1 if n < len(items) - 1 else 0)
        self._positions = tuple(positions)
        self._length = at
        self._header_index = np.array(
            [p + k for p in positions for k in range(ITEM_HEADER)], dtype=np.intp
        )
        self._expected = np.frombuffer(b"".join(_ok_header(i) for i in items), dtype=np.uint8)
        numeric: list[tuple[PlanTag, int]] = []  # (tag, absolute byte of its first byte)
        self._strings: list[tuple[PlanTag, int]] = []
        rows: list[tuple[int, int]] = []
        for item, pos in zip(items, positions, strict=True):
            first = len(numeric)
            for tag in item.tags:
                offset = (tag.start - item.start) * (2 if item.area.counted else 1)
                where = (tag, pos + ITEM_HEADER + offset)
                (self._strings if tag.address.type == "STRING" else numeric).append(where)
            rows.append((first, len(numeric)))
        self.item_rows = tuple(slice(a, b) for a, b in rows)
        self.tag_ids: npt.NDArray[np.int32] = np.array([t.tag_id for t, _ in numeric], np.int32)
        self._groups = _groups(numeric)
        self._specials = _specials(numeric)
        plain = [
            (t.scale, t.offset_value) if t.address.type != "BOOL" else (1.0, 0.0)
            for t, _ in numeric
        ]
        self._scale = np.array([s for s, _ in plain], dtype=np.float64)
        self._offset = np.array([o for _, o in plain], dtype=np.float64)
        self._scaled = bool(np.any(self._scale != 1.0) or np.any(self._offset != 0.0))

    @property
    def string_tags(self) -> int:
        return len(self._strings)

    @property
    def response_length(self) -> int:
        return self._length

    def frame(self, seq: int) -> bytes:
        """The job's S7 PDU with this sequence number."""
        return struct.pack(">BBHHHH", 0x32, JOB, 0, seq, len(self._params), 0) + self._params

    def decode(self, pdu: bytes) -> tuple[npt.NDArray[np.float64], list[ItemFailure]]:
        """Values by `tag_ids` row and the items the CPU refused (their rows hold NaN).

        Raises DeviceError when the answer's header refuses the whole request (PUT/GET off,
        for one) and ProtocolError when the answer is not a well-formed answer to this job.
        """
        _check_header(pdu, len(self.request.items))
        data = np.frombuffer(pdu, dtype=np.uint8)
        if len(pdu) == self._length and np.array_equal(data[self._header_index], self._expected):
            return self._values(data), []
        return self._slow(pdu)

    def decode_strings(self, pdu: bytes) -> dict[int, str]:
        """The STRING tags' values by tag id (slow path: strings are rare)."""
        out: dict[int, str] = {}
        for tag, at in self._strings:
            if at + 2 > len(pdu):
                continue
            used = min(pdu[at + 1], pdu[at], tag.address.length)
            out[tag.tag_id] = pdu[at + 2 : at + 2 + used].decode("latin-1")
        return out

    def _values(self, data: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
        out = np.empty(self.tag_ids.shape[0], dtype=np.float64)
        for group in self._groups:
            out[group.rows] = data[group.index].view(group.dtype)[:, 0]
        for special in self._specials:
            out[special.rows] = _decode_special(special, data)
        if self._scaled:
            with np.errstate(over="ignore"):
                out *= self._scale
                out += self._offset
        return out

    def _slow(self, pdu: bytes) -> tuple[npt.NDArray[np.float64], list[ItemFailure]]:
        """Walk the items; copy the good ones where the fast path expects them."""
        scratch = bytearray(max(self._length, len(pdu)))
        failures: list[ItemFailure] = []
        at = RESPONSE_HEADER + PARAMETER
        items = self.request.items
        for n, item in enumerate(items):
            if at + ITEM_HEADER > len(pdu):
                raise ProtocolError(f"answer ends inside item {n + 1} of {len(items)}")
            code, size, length = pdu[at], pdu[at + 1], pdu[at + 2] << 8 | pdu[at + 3]
            if code != ITEM_OK:
                failures.append(ItemFailure(n, code))
                at += ITEM_HEADER  # a refused item carries no data
                continue
            nbytes = length // 8 if size in (0x03, 0x04, 0x05) else length
            if nbytes != item.nbytes:
                raise ProtocolError(
                    f"item {n + 1} carries {nbytes} bytes, {item.nbytes} were asked for"
                )
            end = at + ITEM_HEADER + nbytes
            if end > len(pdu):
                raise ProtocolError(f"answer ends inside the data of item {n + 1}")
            target = self._positions[n] + ITEM_HEADER
            scratch[target : target + nbytes] = pdu[at + ITEM_HEADER : end]
            at = end + (nbytes & 1 if n < len(items) - 1 else 0)
        if at < len(pdu) and any(pdu[at:]):
            raise ProtocolError(f"{len(pdu) - at} stray bytes after the last item")
        values = self._values(np.frombuffer(bytes(scratch), dtype=np.uint8))
        for failure in failures:
            values[self.item_rows[failure.index]] = np.nan
        return values, failures


def _check_header(pdu: bytes, items: int) -> None:
    if len(pdu) < RESPONSE_HEADER:
        raise ProtocolError(f"answer of {len(pdu)} bytes, shorter than an S7 header")
    # A refusal may come as a plain ack (type 02) as well as an ack with data (03).
    if pdu[0] != 0x32 or pdu[1] not in (ACK, ACK_DATA):
        raise ProtocolError(f"not an S7 answer (protocol {pdu[0]:02X}, type {pdu[1]:02X})")
    code = pdu[10] << 8 | pdu[11]
    if code:
        raise DeviceError(header_reason(code), code)
    if pdu[1] != ACK_DATA:
        raise ProtocolError("an acknowledgement without data, where data was asked for")
    if len(pdu) < RESPONSE_HEADER + PARAMETER or pdu[12] != READ_VAR or pdu[13] != items:
        raise ProtocolError(f"answer is not for a read of {items} items")
    param_length, data_length = struct.unpack_from(">HH", pdu, 6)
    if RESPONSE_HEADER + param_length + data_length != len(pdu):
        raise ProtocolError("answer's lengths do not add up to its size")


def _item_spec(item: ReadItem) -> bytes:
    if item.area.counted:
        size, address = int(item.area), item.start
    else:
        size, address = _BYTE, item.start * 8
    return struct.pack(
        ">BBBBHHB", 0x12, 0x0A, 0x10, size, item.count, item.db, int(item.area)
    ) + address.to_bytes(3, "big")


def _ok_header(item: ReadItem) -> bytes:
    # A good item is answered with "byte/word/dword" and its length in bits. (Timers and
    # counters come back as an octet string on some CPUs: the slow path takes that too.)
    return struct.pack(">BBH", ITEM_OK, 0x04, item.nbytes * 8)


def _groups(numeric: list[tuple[PlanTag, int]]) -> tuple[_Group, ...]:
    by_type: dict[str, tuple[list[list[int]], list[int]]] = {}
    for row, (tag, at) in enumerate(numeric):
        kind = tag.address.type
        if kind in _SPECIAL:
            continue
        size = np.dtype(_DTYPES[kind]).itemsize
        index, rows = by_type.setdefault(kind, ([], []))
        index.append(list(range(at, at + size)))
        rows.append(row)
    return tuple(
        _Group(np.dtype(_DTYPES[k]), np.array(i, dtype=np.intp), np.array(r, dtype=np.intp))
        for k, (i, r) in by_type.items()
    )


def _specials(numeric: list[tuple[PlanTag, int]]) -> tuple[_Special, ...]:
    out = []
    for kind in _SPECIAL:
        chosen = [(row, t, at) for row, (t, at) in enumerate(numeric) if t.address.type == kind]
        if not chosen:
            continue
        size = (
            1
            if kind == "BOOL"
            else (2 if kind in ("TIMER", "COUNTER") else 8 if kind == "DATE_AND_TIME" else 12)
        )
        out.append(
            _Special(
                kind,
                np.array([list(range(at, at + size)) for _, _, at in chosen], dtype=np.intp),
                np.array([row for row, _, _ in chosen], dtype=np.intp),
                np.array([t.address.bit or 0 for _, t, _ in chosen], dtype=np.uint8),
            )
        )
    return tuple(out)


def _decode_special(special: _Special, data: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    raw = data[special.index]
    if special.kind == "BOOL":
        return ((raw[:, 0] >> special.bits) & 1).astype(np.float64)
    if special.kind == "COUNTER":
        return _bcd(raw[:, 0] & 0x0F, raw[:, 1] >> 4, raw[:, 1] & 0x0F)
    if special.kind == "TIMER":
        base = np.array([0.01, 0.1, 1.0, 10.0])[(raw[:, 0] >> 4) & 0x03]
        seconds: npt.NDArray[np.float64] = _bcd(raw[:, 0] & 0x0F, raw[:, 1] >> 4, raw[:, 1] & 0x0F)
        scaled: npt.NDArray[np.float64] = seconds * base
        return scaled
    if special.kind == "DTL":
        year = raw[:, 0].astype(np.int64) << 8 | raw[:, 1]
        month, day = raw[:, 2].astype(np.int64), raw[:, 3].astype(np.int64)
        hour, minute, second = (raw[:, k].astype(np.int64) for k in (5, 6, 7))
        nanos = (raw[:, 8:12].astype(np.int64) * np.array([1 << 24, 1 << 16, 1 << 8, 1])).sum(1)
        fine = (nanos < 1_000_000_000) & (year >= 1970)
        return _unix(year, month, day, hour, minute, second, nanos / 1e9, fine)
    # DATE_AND_TIME: BCD year (90..99 is 19xx), month, day, hour, minute, second, then
    # milliseconds in three digits and the weekday in the last nibble.
    digits = [(raw[:, k] >> 4, raw[:, k] & 0x0F) for k in range(8)]
    valid = np.ones(raw.shape[0], dtype=bool)
    for hi, lo in digits[:6]:
        valid &= (hi <= 9) & (lo <= 9)
    valid &= (digits[6][0] <= 9) & (digits[6][1] <= 9) & (digits[7][0] <= 9)
    two = [hi.astype(np.int64) * 10 + lo for hi, lo in digits[:6]]
    year = np.where(two[0] >= 90, 1900, 2000) + two[0]
    millis = digits[6][0].astype(np.int64) * 100 + digits[6][1] * 10 + digits[7][0]
    return _unix(year, two[1], two[2], two[3], two[4], two[5], millis / 1e3, valid)


def _bcd(*digits: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.float64]:
    value = np.zeros(digits[0].shape[0], dtype=np.float64)
    valid = np.ones(digits[0].shape[0], dtype=bool)
    for d in digits:
        value = value * 10 + d
        valid &= d <= 9
    return np.where(valid, value, np.nan)


def _unix(
    year: npt.NDArray[np.int64],
    month: npt.NDArray[np.int64],
    day: npt.NDArray[np.int64],
    hour: npt.NDArray[np.int64],
    minute: npt.NDArray[np.int64],
    second: npt.NDArray[np.int64],
    fraction: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
) -> npt.NDArray[np.float64]:
    """Seconds since 1970 of civil UTC dates (Hinnant's days-from-civil), NaN where invalid."""
    valid = (
        valid
        & (month >= 1)
        & (month <= 12)
        & (day >= 1)
        & (day <= 31)
        & (hour <= 23)
        & (minute <= 59)
        & (second <= 59)
    )
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    seconds = days * 86400 + hour * 3600 + minute * 60 + second + fraction
    return np.where(valid, seconds.astype(np.float64), np.nan)

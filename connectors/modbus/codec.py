"""Decode one Modbus read response into one float64 per tag, with a few numpy operations.

A `RequestDecoder` is built once per `ReadRequest` of a plan. It precomputes, for each dtype
group of the request's tags, a gather index into the response bytes that already applies each
tag's byte/word order, so decoding a response is: one `np.frombuffer`, one fancy-index and one
`.view(dtype)` per dtype group, then `raw * scale + offset` over the whole request. There is no
Python loop over tags on the hot path; the only loop runs over the (at most ten) dtype groups.
Two shortcuts: a request of a few values (at most 16), all big-endian and none overlapping
(scattered tags of mixed types, the usual case) decodes with one `struct` unpack, a fraction
of a numpy call per type on such small arrays; coils and discrete inputs with one
`np.unpackbits` and one gather.

Conventions (standards.md §5.6, and the simulator's encoder): registers travel big-endian;
with A the most significant byte of a value, ABCD is big-endian, CDAB reverses the order of
the words, BADC swaps the bytes inside each word and DCBA reverses all bytes. For 64-bit
values CDAB is the full word reversal (GHEFCDAB), BADC is BADCFEHG and DCBA is HGFEDCBA. A
16-bit value takes the same rule on its one word (BADC and DCBA swap its two bytes).

Bits: a coil or discrete-input payload is the packed bits of the response, the first
requested bit in the least significant bit of the first byte. `hr:5.3` is bit 3 (0 = least
significant) of register 5. A bool held in a whole register (no bit) reads 1.0 when the
register is not zero. Bools ignore scale and offset.

Limits worth knowing:
- int64 and uint64 values become float64, which represents integers exactly only up to 2^53
  (about 9.007e15); larger counts lose their low digits.
- Strings cannot be float64: they are left out of `decode()` and `tag_ids` and come from the
  slower `decode_strings()` (two characters per register, high byte first unless the order
  swaps bytes; the bytes, which `agent.texts.decode_text` turns into text). They are rare, so
  that path is plain Python, and the source calls it only for requests that hold a string.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from connectors.modbus.planner import ORDERS, PlanTag, ReadPlan, ReadRequest

# Big-endian numpy dtype of each numeric type; the gather index produces big-endian bytes.
_DTYPES: dict[str, str] = {
    "int16": ">i2",
    "uint16": ">u2",
    "int32": ">i4",
    "uint32": ">u4",
    "int64": ">i8",
    "uint64": ">u8",
    "float32": ">f4",
    "float64": ">f8",
}
_UNPACKED_MOST = 16  # values a request may have to be decoded by `struct`
# The same types as `struct` codes, for requests of a few values in big-endian order.
_STRUCT_CODES: dict[str, str] = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}


def register_permutation(order: str, nbytes: int) -> tuple[int, ...]:
    """Positions in the big-endian value bytes of each byte as the registers carry it.

    Register byte j holds value byte `perm[j]`. Every one of the four orders is its own
    inverse, so the same tuple also maps register bytes back to big-endian value bytes.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")
    words = [(i, i + 1) for i in range(0, nbytes, 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [(lo, hi) for hi, lo in words]
    return tuple(i for word in words for i in word)


@dataclass(frozen=True, slots=True)
class _Group:
    """Tags of one kind in one request: where their bytes are and where their values go."""

    dtype: np.dtype[np.generic]
    index: npt.NDArray[np.intp]  # (tags, bytes per value) gather into the payload
    positions: npt.NDArray[np.intp]  # rows of the output


@dataclass(frozen=True, slots=True)
class _RegisterBits:
    """Bools held in registers: a register each, then shift and mask."""

    index: npt.NDArray[np.intp]  # (tags, 2) gather of the register's two bytes
    shifts: npt.NDArray[np.uint16]
    masks: npt.NDArray[np.uint16]  # 1 for one bit, 0xFFFF for a whole-register bool
    positions: npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class _TableBits:
    """Coils or discrete inputs: bit i of the request is bit i % 8 of byte i // 8 (the
    little bit order of `np.unpackbits`)."""

    bits: npt.NDArray[np.intp]


class RequestDecoder:
    """Turns the payload of one `ReadRequest`'s response into its tags' values.

    `tag_ids` (int32) lists the request's numeric and bool tags in the request's order; the
    array `decode()` returns has one float64 per entry. `string_tag_ids` lists the string tags
    that `decode_strings()` serves.
    """

    __slots__ = (
        "_identity",
        "_may_overflow",
        "_offset",
        "_payload_bytes",
        "_register_bits",
        "_request",
        "_scale",
        "_scaled",
        "_strings",
        "_table_bits",
        "_unpack",
        "_values",
        "has_strings",
        "string_tag_ids",
        "tag_ids",
    )

    def __init__(self, request: ReadRequest) -> None:
        self._request = request
        self._payload_bytes = request.payload_bytes
        numeric = [t for t in request.tags if t.type != "string"]
        self._strings = tuple(t for t in request.tags if t.type == "string")
        self.has_strings = bool(self._strings)  # a plain attribute: tested per answered read
        self.tag_ids: npt.NDArray[np.int32] = np.array([t.tag_id for t in numeric], np.int32)
        self.string_tag_ids: npt.NDArray[np.int32] = np.array(
            [t.tag_id for t in self._strings], np.int32
        )
        # Bools read 0.0 or 1.0 whatever their scale says.
        self._scale = np.array([1.0 if t.type == "bool" else t.scale for t in numeric])
        self._offset = np.array([0.0 if t.type == "bool" else t.offset_value for t in numeric])
        self._scaled = bool(np.any(self._scale != 1.0) or np.any(self._offset != 0.0))
        # Integers stay below 2^64, so only a float times a scale above 1 can overflow; the
        # errstate that silences it costs as much as the scaling, so it is used only then.
        self._may_overflow = any(t.type.startswith("float") and abs(t.scale) > 1 for t in numeric)
        self._values: tuple[_Group, ...] = ()
        self._register_bits: _RegisterBits | None = None
        self._table_bits: _TableBits | None = None
        if request.table.is_bits:
            self._table_bits = _table_bits(request.start, numeric)
        else:
            self._values = _value_groups(request.start, numeric)
            self._register_bits = _register_bits(request.start, numeric)
        # A few values, scattered or of mixed types: one `struct` unpack costs a fraction of a
        # gather per type, when every value is big-endian and none overlaps (the usual case).
        # Many values of one type are cheaper as one numpy view.
        self._unpack: struct.Struct | None = None
        if len(numeric) <= _UNPACKED_MOST and not request.table.is_bits:
            self._unpack = _unpacker(request.start, self._payload_bytes, numeric)
        # Else the fast path: one type, big-endian, packed from the first register, nothing else.
        self._identity: np.dtype[np.generic] | None = None
        if (
            self._unpack is None
            and len(self._values) == 1
            and self._register_bits is None
            and not self._strings
        ):
            group = self._values[0]
            packed = np.arange(group.index.size).reshape(group.index.shape)
            if np.array_equal(group.index, packed) and group.index.size == self._payload_bytes:
                self._identity = group.dtype

    @property
    def request(self) -> ReadRequest:
        return self._request

    def decode(self, payload: bytes | bytearray | memoryview) -> npt.NDArray[np.float64]:
        """One float64 per entry of `tag_ids`; ValueError if the payload has the wrong size."""
        if len(payload) != self._payload_bytes:
            raise ValueError(
                f"{self._request}: expected {self._payload_bytes} payload bytes, got {len(payload)}"
            )
        if self._identity is not None:  # a plan's usual big block: one view
            out = np.frombuffer(payload, dtype=self._identity).astype(np.float64)
        elif self._unpack is not None:
            out = np.array(self._unpack.unpack(payload), dtype=np.float64)
        elif self._table_bits is not None:  # coils or discrete inputs, in the request's order
            data = np.frombuffer(payload, dtype=np.uint8)
            bits = np.unpackbits(data, bitorder="little")[self._table_bits.bits]
            out = bits.astype(np.float64)
        else:
            data = np.frombuffer(payload, dtype=np.uint8)
            out = np.empty(self.tag_ids.shape[0], dtype=np.float64)
            for group in self._values:
                out[group.positions] = data[group.index].view(group.dtype)[:, 0]
            rb = self._register_bits
            if rb is not None:
                words = data[rb.index].view(">u2")[:, 0]
                out[rb.positions] = ((words >> rb.shifts) & rb.masks) != 0
        if self._scaled:
            self._scale_in_place(out)
        return out

    def _scale_in_place(self, out: npt.NDArray[np.float64]) -> None:
        if self._may_overflow:
            # A huge float times the scale overflows: inf is then the honest reading.
            with np.errstate(over="ignore"):
                out *= self._scale
                out += self._offset
        else:
            out *= self._scale
            out += self._offset

    def decode_strings(self, payload: bytes | bytearray | memoryview) -> dict[int, bytes]:
        """The string tags' bytes by tag id, in text order (slow path: strings are rare).

        Registers carry two characters each, the first in the high byte; BADC and DCBA swap the
        bytes of each register (the low byte first). `agent.texts.decode_text` makes the text.
        """
        if len(payload) != self._payload_bytes:
            raise ValueError(
                f"{self._request}: expected {self._payload_bytes} payload bytes, got {len(payload)}"
            )
        raw = bytes(payload)
        out: dict[int, bytes] = {}
        for tag in self._strings:
            begin = 2 * (tag.offset - self._request.start)
            data = raw[begin : begin + 2 * ((tag.length + 1) // 2)]
            if tag.order in ("BADC", "DCBA"):
                swapped = bytearray(data)
                swapped[0::2], swapped[1::2] = data[1::2], data[0::2]
                data = bytes(swapped)
            out[tag.tag_id] = data[: tag.length]
        return out


def plan_decoders(plan: ReadPlan) -> tuple[RequestDecoder, ...]:
    """One decoder per request of a plan, in the plan's order; built once at start."""
    return tuple(RequestDecoder(r) for r in plan.requests)


def _value_groups(start: int, tags: list[PlanTag]) -> tuple[_Group, ...]:
    by_type: dict[str, tuple[list[list[int]], list[int]]] = {}
    for row, tag in enumerate(tags):
        if tag.type == "bool":
            continue
        dtype = np.dtype(_DTYPES[tag.type])
        first = 2 * (tag.offset - start)
        perm = register_permutation(tag.order, dtype.itemsize)
        rows, positions = by_type.setdefault(tag.type, ([], []))
        rows.append([first + p for p in perm])
        positions.append(row)
    return tuple(
        _Group(
            dtype=np.dtype(_DTYPES[name]),
            index=np.array(rows, dtype=np.intp),
            positions=np.array(positions, dtype=np.intp),
        )
        for name, (rows, positions) in by_type.items()
    )


def _register_bits(start: int, tags: list[PlanTag]) -> _RegisterBits | None:
    chosen = [(row, t) for row, t in enumerate(tags) if t.type == "bool"]
    if not chosen:
        return None
    firsts = [2 * (t.offset - start) for _, t in chosen]
    return _RegisterBits(
        index=np.array([[f, f + 1] for f in firsts], dtype=np.intp),
        shifts=np.array([t.bit or 0 for _, t in chosen], dtype=np.uint16),
        masks=np.array([0xFFFF if t.bit is None else 1 for _, t in chosen], dtype=np.uint16),
        positions=np.array([row for row, _ in chosen], dtype=np.intp),
    )


def _table_bits(start: int, tags: list[PlanTag]) -> _TableBits:
    # Unpacking every bit (at most 2000) and taking the wanted ones is two numpy calls; a
    # gather, a shift and a mask per poll cost more even for a few tags.
    return _TableBits(np.array([t.offset - start for t in tags], dtype=np.intp))


def _unpacker(start: int, payload_bytes: int, tags: list[PlanTag]) -> struct.Struct | None:
    """One `struct` for every value of a request, when they are all numbers whose bytes are
    in big-endian order, in address order and not overlapping; else None."""
    if not tags:
        return None
    fmt = [">"]
    at = 0  # payload bytes covered so far
    for tag in tags:
        code = _STRUCT_CODES.get(tag.type)
        if code is None:  # a bool (in a register)
            return None
        size = np.dtype(_DTYPES[tag.type]).itemsize
        if register_permutation(tag.order, size) != tuple(range(size)):
            return None
        first = 2 * (tag.offset - start)
        if first < at:
            return None
        fmt.append(f"{first - at}x{code}")
        at = first + size
    if at > payload_bytes:
        return None
    fmt.append(f"{payload_bytes - at}x")
    return struct.Struct("".join(fmt))

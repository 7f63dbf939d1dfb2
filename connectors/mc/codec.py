"""Decode one MC read response into one float64 per tag, with a few numpy operations.

A `RequestDecoder` is built once per `ReadRequest`. The response data is little-endian words
(`frame.parse_response` gives ASCII answers the same layout); for each tag the decoder
precomputes a gather index that picks its bytes out of the data, through the request's word
slots (a batch read's words are in order, a random read's wherever its points put them), into
big-endian value order with the tag's word order applied. Decoding is then one
`np.frombuffer`, one fancy-index and `.view(dtype)` per dtype group, and `raw * scale +
offset` over the request: no Python loop over tags.

Word order, A the most significant byte of the value: ABCD puts the high word at the lower
address, CDAB (the default: how a MELSEC CPU keeps a DINT, REAL or LREAL) the low word; BADC
and DCBA swap the bytes of each word as well. A bool is bit `bit` of its word, or the whole
word not being zero. int64/uint64 become float64, exact up to 2^53.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from connectors.mc.planner import ORDERS, PlanTag, ReadRequest

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


def word_permutation(order: str, words: int) -> tuple[int, ...]:
    """For each big-endian value byte, which byte of the words (each high byte first) it is."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")
    pairs = [(2 * i, 2 * i + 1) for i in range(words)]
    if order in ("CDAB", "DCBA"):
        pairs.reverse()
    if order in ("BADC", "DCBA"):
        pairs = [(lo, hi) for hi, lo in pairs]
    return tuple(i for pair in pairs for i in pair)


@dataclass(frozen=True, slots=True)
class _Group:
    dtype: np.dtype[np.generic]
    index: npt.NDArray[np.intp]
    positions: npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class _Bits:
    index: npt.NDArray[np.intp]  # (tags, 2): the word's high and low byte
    shifts: npt.NDArray[np.uint16]
    masks: npt.NDArray[np.uint16]
    positions: npt.NDArray[np.intp]


class RequestDecoder:
    """Turns the data of one `ReadRequest`'s response into its tags' values (`tag_ids` order)."""

    __slots__ = (
        "_bits",
        "_groups",
        "_offset",
        "_payload_bytes",
        "_request",
        "_scale",
        "_scaled",
        "tag_ids",
    )

    def __init__(self, request: ReadRequest) -> None:
        self._request = request
        self._payload_bytes = request.payload_bytes
        tags = request.tags
        self.tag_ids: npt.NDArray[np.int32] = np.array([t.tag_id for t in tags], np.int32)
        self._scale = np.array([1.0 if t.type == "bool" else t.scale for t in tags])
        self._offset = np.array([0.0 if t.type == "bool" else t.offset_value for t in tags])
        self._scaled = bool(np.any(self._scale != 1.0) or np.any(self._offset != 0.0))
        slots = request.slots

        def word_bytes(tag: PlanTag) -> list[int]:
            # Each word high byte first: the data holds it low byte first.
            out = []
            for w in tag.words:
                at = 2 * slots[(tag.device, w)]
                out += [at + 1, at]
            return out

        by_type: dict[str, tuple[list[list[int]], list[int]]] = {}
        bits: list[tuple[int, PlanTag]] = []
        for row, tag in enumerate(tags):
            if tag.type == "bool":
                bits.append((row, tag))
                continue
            raw = word_bytes(tag)
            perm = word_permutation(tag.order, tag.width)
            rows, positions = by_type.setdefault(tag.type, ([], []))
            rows.append([raw[p] for p in perm])
            positions.append(row)
        self._groups = tuple(
            _Group(np.dtype(_DTYPES[name]), np.array(r, np.intp), np.array(p, np.intp))
            for name, (r, p) in by_type.items()
        )
        self._bits = (
            _Bits(
                index=np.array([word_bytes(t) for _, t in bits], np.intp),
                shifts=np.array([t.bit or 0 for _, t in bits], np.uint16),
                masks=np.array([0xFFFF if t.bit is None else 1 for _, t in bits], np.uint16),
                positions=np.array([row for row, _ in bits], np.intp),
            )
            if bits
            else None
        )

    @property
    def request(self) -> ReadRequest:
        return self._request

    def decode(self, data: bytes | bytearray | memoryview) -> npt.NDArray[np.float64]:
        """One float64 per entry of `tag_ids`; ValueError if the data has the wrong size."""
        if len(data) != self._payload_bytes:
            raise ValueError(
                f"{self._request}: expected {self._payload_bytes} data bytes, got {len(data)}"
            )
        raw = np.frombuffer(data, dtype=np.uint8)
        out = np.empty(self.tag_ids.shape[0], dtype=np.float64)
        for group in self._groups:
            out[group.positions] = raw[group.index].view(group.dtype)[:, 0]
        b = self._bits
        if b is not None:
            words = raw[b.index].view(">u2")[:, 0]
            out[b.positions] = ((words >> b.shifts) & b.masks) != 0
        if self._scaled:
            with np.errstate(over="ignore"):
                out *= self._scale
                out += self._offset
        return out

"""Live telemetry messages: one per record and machine, its values shaped in their tags' types.

Everything that depends only on the tag table (topic strings, tag names, units, how each tag's
values are shaped) is worked out once, when the layout is built. A record of one timestamp and no
coded values (every poll of a plain PLC) is written straight as bytes: each value's text comes
from a few `orjson.dumps` of the record's values, one per kind of tag (float64, float32, whole,
boolean: `_texts`), and sits between its tag's JSON fragments, worked out once, so the message
is the very text `orjson.dumps` gives for its dict, without a dict or a Python call per value.
Any other record goes through one dict per value and one `orjson.dumps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from agent.model import Quality, ReadingBatch
from agent.sink import TelemetryRecord
from agent.values import Plain, is_float32, shaper
from connectors.mqtt.message import Message, PayloadError, ms

# Quality byte → name; a byte outside the enum is not good, so it reads "bad".
QUALITY_NAMES: tuple[str, ...] = tuple(
    Quality(q).name.lower() if q in Quality._value2member_map_ else "bad" for q in range(256)
)

# A quality code's JSON between a value and its unit: `,"quality":"good"`.
_QUALITY_JSON: tuple[bytes, ...] = tuple(b',"quality":' + orjson.dumps(n) for n in QUALITY_NAMES)
_GOOD_JSON = _QUALITY_JSON[Quality.GOOD]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True, slots=True)
class UnsTag:
    """A tag as its messages need it, worked out once per layout."""

    machine: int  # index into UnsLayout.machine_topics
    name: str
    unit: str
    last_topic: str  # where its retained last value goes
    shape: Callable[[float], Plain] | None = None  # its value in its type (None: as it is)
    codes: Mapping[int, str] | None = None  # the names of its codes (a state, a stop reason)
    kind: int = 0  # how its values are written a record at a time (`value_kind`)


# How a live message's values are written, per tag id (LiveTelemetry._kinds), each kind a
# whole record's values in a few C calls, as the text `agent/values.py` gives one value at a
# time: float64 as it is; float32 as its shortest decimal (orjson prints a float32 array in
# shortest round-trip form); an integer tag without scale as a whole number when it is one;
# a boolean as true or false. Anything else (scaled integers) one value at a time by its tag's
# shaper. A value that is not finite is null whatever its kind.
_KINDS = _AS_IS, _FLOAT32, _WHOLE, _BOOL, _ONE_BY_ONE = 0, 1, 2, 3, 4
_INT64_LIMIT = 2.0**63  # whole numbers beyond it are printed one at a time from Python ints


def value_kind(tag: object) -> int:
    """How `tag`'s values are written (`_AS_IS` ... `_ONE_BY_ONE`), from what `shaper` and
    `plain` read of it: its type, scale and offset."""
    if shaper(tag) is None:
        return _AS_IS
    if is_float32(tag):
        return _FLOAT32
    if str(getattr(tag, "type", None) or "").lower() == "bool":
        return _BOOL
    scale = float(getattr(tag, "scale", 1.0) or 1.0)
    offset = float(getattr(tag, "offset", 0.0) or 0.0)
    return _WHOLE if scale == 1.0 and offset == 0.0 else _ONE_BY_ONE


def value_entry(tag: UnsTag, value: float, quality: str) -> dict[str, Any]:
    """A value as a message carries it: in its tag's type, with its code's name if it has one."""
    out: dict[str, Any] = {
        "value": _finite(value) if tag.shape is None else tag.shape(value),
        "quality": quality,
        "unit": tag.unit,
    }
    if tag.codes is not None and math.isfinite(value) and value == int(value):
        name = tag.codes.get(int(value))
        if name is not None:
            out["name"] = name
    return out


def _name(entry: dict[str, Any], codes: Mapping[int, str], value: float) -> None:
    """Put the name of a coded value beside it (as `value_entry` does)."""
    if math.isfinite(value) and value == int(value):
        name = codes.get(int(value))
        if name is not None:
            entry["name"] = name


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class LiveTelemetry:
    """The live messages of telemetry records, for one agent's tags (by id) and the telemetry
    topic of each machine (by `UnsTag.machine`)."""

    def __init__(self, agent_id: str, tags: Mapping[int, UnsTag], topics: Sequence[str]) -> None:
        self.agent_id = agent_id
        self._tags = tags
        self._topics = topics
        # Per tag id, how its live values are shaped (an id beyond the table: one by one, where
        # the record's loop finds it unknown).
        size = max(tags, default=-1) + 1
        self._kinds = np.full(size, _ONE_BY_ONE, dtype=np.uint8)
        for tag_id, tag in tags.items():
            self._kinds[tag_id] = tag.kind
        # How the rows of each kind are rewritten over their float64 text (`_texts`).
        self._writers = (*_WRITTEN.items(), (_ONE_BY_ONE, _rows_one_by_one(tags)))
        self._any_codes = any(tag.codes is not None for tag in tags.values())
        # Every tag shaped the same way (the usual PLC of float32 registers): no masks per record.
        kinds = set(self._kinds[list(tags)].tolist())
        self._uniform = kinds.pop() if len(kinds) == 1 else None
        # Per tag id, for records written as bytes (`_written`): its machine (-1: no such tag)
        # and its entry as a `%`-template, its value a `%s` and its quality good
        # (`"name":{"value":%s,"quality":"good","unit":"°C"}`) or a second `%s`.
        self._machine_of = np.full(size, -1, dtype=np.int64)
        self._good_entry: list[bytes] = [b""] * size
        self._any_entry: list[bytes] = [b""] * size
        for tag_id, tag in tags.items():
            self._machine_of[tag_id] = tag.machine
            name = orjson.dumps(tag.name).replace(b"%", b"%%")
            unit = orjson.dumps(tag.unit).replace(b"%", b"%%")
            self._good_entry[tag_id] = b'%s:{"value":%%s%s,"unit":%s}' % (name, _GOOD_JSON, unit)
            self._any_entry[tag_id] = b'%s:{"value":%%s%%s,"unit":%s}' % (name, unit)

    def messages(self, index: int, record: TelemetryRecord) -> list[Message]:
        """The messages of `record`, the one at `index` in the batch sent: one per machine."""
        batch = record.batch
        n = len(batch)
        if n == 0:
            return []
        if not self._any_codes and batch.ts_ns.shape[0] == 1:
            written = self._written(record)
            if written is not None:
                return [Message(self._topics[m], payload, index) for m, payload in written]
        ids = batch.tag_ids.tolist()
        tags = self._tags
        rows = [tags.get(tag_id) for tag_id in ids]
        if None in rows:
            unknown = ids[rows.index(None)]
            raise PayloadError(f"tag id {unknown} is not in the tag table", index)
        known: list[UnsTag] = rows  # type: ignore[assignment]  # no None, checked above
        values = self._shaped(batch.tag_ids, batch.values)
        quality = batch.quality.tolist()
        names = QUALITY_NAMES
        machines = {tag.machine for tag in known}
        groups: dict[int, dict[str, dict[str, Any]]]
        if len(machines) == 1 and not self._any_codes and batch.ts_ns.shape[0] == 1:
            # One machine's poll, one timestamp, no coded values: the common case, one pass.
            groups = {
                machines.pop(): {
                    tag.name: {"value": value, "quality": names[q], "unit": tag.unit}
                    for tag, value, q in zip(known, values, quality, strict=True)
                }
            }
        else:
            groups = self._grouped(batch, known, values, quality)
        ts = ms(int(batch.ts_ns[0]))
        return [
            Message(
                self._topics[machine],
                orjson.dumps(
                    {
                        "agent_id": self.agent_id,
                        "stream": record.stream,
                        "seq": record.seq,
                        "ts": ts,
                        "historical": record.historical,
                        "values": group,
                    }
                ),
                index,
            )
            for machine, group in groups.items()
        ]

    def _written(self, record: TelemetryRecord) -> list[tuple[int, bytes]] | None:
        """The payloads of a record of one timestamp as bytes, one per machine in the order
        its tags first appear, each the text `orjson.dumps` gives for the same dict; None for a
        record with an unknown tag (`messages` names it), a tag twice (a dict keeps the first
        place and the last value) or a machine's tags apart (the dicts gather them)."""
        batch = record.batch
        ids = batch.tag_ids
        runs = self._runs(ids)
        if runs is None:
            return None
        texts = self._texts(ids, batch.values)
        head = orjson.dumps(
            {
                "agent_id": self.agent_id,
                "stream": record.stream,
                "seq": record.seq,
                "ts": ms(int(batch.ts_ns[0])),
                "historical": record.historical,
                "values": None,
            }
        )[: -len(b"null}")]
        rows = ids.tolist()
        if not batch.quality.any():  # every reading good (Quality.GOOD is 0): the usual poll
            entries, args = self._good_entry, texts
        else:
            args = [b""] * (2 * len(texts))
            args[0::2] = texts
            args[1::2] = map(_QUALITY_JSON.__getitem__, batch.quality.tolist())
            entries = self._any_entry
        width = len(args) // len(texts)  # the `%s` of one entry
        out = []
        for machine, start, end in runs:
            template = b",".join(map(entries.__getitem__, rows[start:end]))
            values = template % tuple(args[width * start : width * end])
            out.append((machine, b"".join((head, b"{", values, b"}}"))))
        return out

    def _runs(self, ids: npt.NDArray[Any]) -> list[tuple[int, int, int]] | None:
        """A record's rows `(machine, start, end)`, one run per machine, for `_written`; None
        when it cannot write them."""
        machine_of = self._machine_of
        if int(ids.min()) < 0 or int(ids.max()) >= machine_of.shape[0]:
            return None
        machines = machine_of[ids]
        if bool((machines < 0).any()) or int(np.bincount(ids).max()) > 1:
            return None
        starts = [0, *(np.flatnonzero(machines[1:] != machines[:-1]) + 1).tolist()]
        firsts = machines[starts].tolist()
        if len(set(firsts)) != len(firsts):
            return None
        return list(zip(firsts, starts, [*starts[1:], machines.shape[0]], strict=True))

    def _texts(self, ids: npt.NDArray[Any], values: npt.NDArray[np.float64]) -> list[bytes]:
        """Each value's JSON text in its tag's type, as `orjson.dumps` writes it in a dict: a
        few C calls per kind of tag in the record, whatever its size (every id is known)."""
        uniform = self._uniform
        if uniform == _FLOAT32:
            return _float32_texts(values)
        # The float64 text of every value (null when not finite): that of the float64 tags,
        # and of the values an integer tag holds that are not whole.
        texts = orjson.dumps(np.ascontiguousarray(values), option=_JSON_OPTIONS)[1:-1].split(b",")
        if uniform == _AS_IS:
            return texts
        kinds = self._kinds[ids]
        present = np.bincount(kinds, minlength=len(_KINDS)).tolist()
        for kind, written in self._writers:
            if present[kind]:
                rows = (kinds == kind).nonzero()[0]
                for row, text in written(rows, values[rows], ids[rows]):
                    texts[row] = text
        return texts

    def _grouped(
        self,
        batch: ReadingBatch,
        known: list[UnsTag],
        values: list[Plain],
        quality: list[int],
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """A record's entries by machine, with code names and per-reading times if any."""
        raw = batch.values.tolist()
        # One timestamp per batch is the common case: then values carry no `ts` of their own.
        stamps = (batch.ts_ns // 1_000_000).tolist() if batch.ts_ns.shape[0] > 1 else None
        groups: dict[int, dict[str, dict[str, Any]]] = {}
        for row, tag in enumerate(known):
            entry: dict[str, Any] = {
                "value": values[row],
                "quality": QUALITY_NAMES[quality[row]],
                "unit": tag.unit,
            }
            if tag.codes is not None:
                _name(entry, tag.codes, raw[row])
            if stamps is not None:
                entry["ts"] = stamps[row]
            groups.setdefault(tag.machine, {})[tag.name] = entry
        return groups

    def _shaped(self, ids: npt.NDArray[Any], values: npt.NDArray[np.float64]) -> list[Plain]:
        """A record's values in their tags' types, as `value_entry` gives them one at a time:
        their texts (`_texts`) read back in one C call."""
        return orjson.loads(b"[" + b",".join(self._texts(ids, values)) + b"]")  # type: ignore[no-any-return]


def _float32_shortest(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each value as the float64 of its shortest float32 decimal (806.864013671875 -> 806.864),
    NaN where float32 has no finite value: one C call each way."""
    with np.errstate(over="ignore", invalid="ignore"):  # too large: inf, sent as null
        narrow = values.astype(np.float32)
    finite = np.isfinite(narrow)
    shortest = orjson.loads(
        orjson.dumps(np.where(finite, narrow, np.float32(0)), option=_JSON_OPTIONS)
    )
    return np.where(finite, np.asarray(shortest, dtype=np.float64), np.nan)


# Binary exponents (a float32's bits 23-30) of the magnitudes where orjson prints a float32 in
# another style than the float64 of its shortest decimal (about 1e-6..1e-5: 6.3184107e-6 against
# 0.0000063184107; 9e12..2e16: 6843686000000000.0 against 6.843686e+15), with a margin of a few
# exponents each side; the rest agree byte for byte (checked exhaustively at the margins).
_STYLE_DIFFERS = ((104, 113), (166, 183))


def _float32_texts(values: npt.NDArray[np.float64]) -> list[bytes]:
    """Each value's JSON text as the float64 of its shortest float32 decimal, as orjson writes
    it in a dict (`_float32_shortest`): orjson's float32 text itself, about five times cheaper,
    except in the magnitudes where its style differs (`_STYLE_DIFFERS`)."""
    with np.errstate(over="ignore", invalid="ignore"):  # too large: inf, sent as null
        narrow = values.astype(np.float32)
    texts = orjson.dumps(narrow, option=_JSON_OPTIONS)[1:-1].split(b",")
    exponent = (narrow.view(np.uint32) >> 23) & 0xFF
    odd = np.zeros(exponent.shape[0], dtype=bool)
    for low, high in _STYLE_DIFFERS:
        odd |= (exponent >= low) & (exponent <= high)
    if odd.any():
        rows = np.flatnonzero(odd)
        fixed = orjson.dumps(_float32_shortest(values[rows]), option=_JSON_OPTIONS)
        for row, text in zip(rows.tolist(), fixed[1:-1].split(b","), strict=True):
            texts[row] = text
    return texts


Texts = Iterable[tuple[int, bytes]]  # (row, its text): the rows of one kind rewritten
Rows = npt.NDArray[np.intp]
Values = npt.NDArray[np.float64]


def _float32_rows(rows: Rows, values: Values, ids: npt.NDArray[Any]) -> Texts:
    return zip(rows.tolist(), _float32_texts(values), strict=True)


def _whole_rows(rows: Rows, values: Values, ids: npt.NDArray[Any]) -> Texts:
    """An integer tag's values that are whole, as integers (`plain`: `int(value)`); the others
    keep their float64 text (a fraction a config scaled, or null)."""
    whole = values == np.trunc(values)  # NaN is not whole; infinities fail the limit below
    small = np.abs(values) < _INT64_LIMIT
    fits = whole & small
    if fits.all():  # the usual record: every value a whole number of a register
        texts = orjson.dumps(values.astype(np.int64), option=_JSON_OPTIONS)[1:-1].split(b",")
        return zip(rows.tolist(), texts, strict=True)
    out: list[tuple[int, bytes]] = []
    if fits.any():
        shown = orjson.dumps(values[fits].astype(np.int64), option=_JSON_OPTIONS)
        out += zip(rows[fits].tolist(), shown[1:-1].split(b","), strict=True)
    large = whole & ~small & np.isfinite(values)
    if large.any():  # past int64: from the Python int it is (orjson refuses past 64 bits)
        for row, value in zip(rows[large].tolist(), values[large].tolist(), strict=True):
            out.append((row, orjson.dumps(int(value))))
    return out


def _bool_rows(rows: Rows, values: Values, ids: npt.NDArray[Any]) -> Texts:
    """A boolean tag's finite values as true or false (`plain`: `bool(value)`)."""
    finite = np.isfinite(values)
    if finite.all():  # the usual record
        texts = orjson.dumps(values != 0, option=_JSON_OPTIONS)[1:-1].split(b",")
        return zip(rows.tolist(), texts, strict=True)
    if not finite.any():
        return ()
    texts = orjson.dumps(values[finite] != 0, option=_JSON_OPTIONS)[1:-1].split(b",")
    return zip(rows[finite].tolist(), texts, strict=True)


def _rows_one_by_one(tags: Mapping[int, UnsTag]) -> Callable[[Rows, Values, Any], Texts]:
    """Values shaped one at a time by their tag's shaper (scaled integers)."""

    def written(rows: Rows, values: Values, ids: npt.NDArray[Any]) -> Texts:
        shaped = [
            shape(value) if (shape := tags[tag_id].shape) is not None else _finite(value)
            for tag_id, value in zip(ids.tolist(), values.tolist(), strict=True)
        ]
        texts = orjson.dumps(shaped)[1:-1].split(b",")  # numbers, true, false, null: no commas
        return zip(rows.tolist(), texts, strict=True)

    return written


# How the rows of float32, whole and boolean tags are rewritten (`LiveTelemetry._writers`).
_WRITTEN: dict[int, Callable[[Rows, Values, npt.NDArray[Any]], Texts]] = {
    _FLOAT32: _float32_rows,
    _WHOLE: _whole_rows,
    _BOOL: _bool_rows,
}

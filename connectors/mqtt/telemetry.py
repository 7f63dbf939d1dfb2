"""Live telemetry messages: one per record and machine, its values shaped in their tags' types.

Everything that depends only on the tag table (topic strings, tag names, units, how each tag's
values are shaped) is worked out once, when the layout is built, in compact forms: a byte per
tag for how its values are shaped, its machine and its place there in numpy arrays, and one
template per machine holding its tags' JSON fragments (no object per tag: 20,000 tags cost
~1.6 KB each in per-tag objects before). A record of one timestamp and no
coded values (every poll of a plain PLC) is written straight as bytes: each value's text comes
from a few `orjson.dumps` of the record's values, one per kind of tag (float64, float32, whole,
boolean: `_texts`), and sits between its tag's JSON fragments, worked out once, so the message
is the very text `orjson.dumps` gives for its dict, without a dict or a Python call per value.
Any other record goes through one dict per value and one `orjson.dumps`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from agent.model import Quality, ReadingBatch
from agent.sink import TagMeta, TelemetryRecord
from agent.values import Plain, as_bool, as_float32, as_whole, shaper
from connectors.mqtt.message import Message, PayloadError, ms

# Quality byte → name; a byte outside the enum is not good, so it reads "bad".
QUALITY_NAMES: tuple[str, ...] = tuple(
    Quality(q).name.lower() if q in Quality._value2member_map_ else "bad" for q in range(256)
)

# A quality code's JSON between a value and its unit: `,"quality":"good"`.
_QUALITY_JSON: tuple[bytes, ...] = tuple(b',"quality":' + orjson.dumps(n) for n in QUALITY_NAMES)
_GOOD_JSON = _QUALITY_JSON[Quality.GOOD]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


# How a live message's values are written, per tag id (LiveTelemetry._kinds), each kind a
# whole record's values in a few C calls, as the text `agent/values.py` gives one value at a
# time: float64 as it is; float32 as its shortest decimal (orjson prints a float32 array in
# shortest round-trip form); an integer tag without scale as a whole number when it is one;
# a boolean as true or false. Anything else (scaled integers) one value at a time by its tag's
# shaper. A value that is not finite is null whatever its kind.
_KINDS = _AS_IS, _FLOAT32, _WHOLE, _BOOL, _ONE_BY_ONE = 0, 1, 2, 3, 4
_KIND_OF_SHAPER: dict[Callable[[float], Plain], int] = {
    as_float32: _FLOAT32,
    as_whole: _WHOLE,
    as_bool: _BOOL,
}
_INT64_LIMIT = 2.0**63  # whole numbers beyond it are printed one at a time from Python ints


def value_kind(tag: object) -> int:
    """How `tag`'s values are written (`_AS_IS` ... `_ONE_BY_ONE`): by the shaper `shaper`
    gives it, which tags shaped alike share."""
    shape = shaper(tag)
    return _AS_IS if shape is None else _KIND_OF_SHAPER.get(shape, _ONE_BY_ONE)


def value_entry(
    tag: TagMeta, value: float, quality: str, codes: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """A value as a message carries it: in its tag's type, with its code's name if it has one."""
    shape = shaper(tag)
    out: dict[str, Any] = {
        "value": _finite(value) if shape is None else shape(value),
        "quality": quality,
        "unit": tag.unit,
    }
    if codes is not None:
        _name(out, codes, value)
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
    """The live messages of telemetry records, for one agent's tags (by id): the machine of
    each (`machine_of`, an index into `topics`; -1 for an id not in the table), the telemetry
    topic of each machine and the names of the coded tags' codes (by tag id)."""

    def __init__(
        self,
        agent_id: str,
        tags: Mapping[int, TagMeta],
        machine_of: npt.NDArray[np.int32],
        topics: Sequence[str],
        codes: Mapping[int, Mapping[int, str]],
    ) -> None:
        self.agent_id = agent_id
        self._tags = tags  # the sink's tag table itself: names and units are read from it
        self._topics = topics
        self._codes = codes
        self._any_codes = bool(codes)
        self._machine_of = machine_of
        # Per tag id, how its live values are shaped (an id beyond the table: one by one, where
        # the record's loop finds it unknown), and the shaper of each tag shaped one value at a
        # time (scaled integers: few if any; the others share a writer per kind).
        size = machine_of.shape[0]
        self._kinds = np.full(size, _ONE_BY_ONE, dtype=np.uint8)
        self._shapes: dict[int, Callable[[float], Plain]] = {}
        for tag_id, tag in tags.items():
            kind = self._kinds[tag_id] = value_kind(tag)
            shape = shaper(tag) if kind == _ONE_BY_ONE else None
            if shape is not None:
                self._shapes[tag_id] = shape
        # How the rows of each kind are rewritten over their float64 text (`_texts`).
        self._writers = (*_WRITTEN.items(), (_ONE_BY_ONE, self._one_by_one))
        # Every tag shaped the same way (the usual PLC of float32 registers): no masks per record.
        kinds = set(self._kinds[list(tags)].tolist())
        self._uniform = kinds.pop() if len(kinds) == 1 else None
        # For records written as bytes (`_written`): per machine, the entries of its tags in id
        # order as one `%`-template, their value a `%s` and their quality good, joined by commas
        # (`"name":{"value":%s,"quality":"good","unit":"°C"},...`), and where each entry starts
        # (`_starts`, one more for the end); per tag id, its place among its machine's tags.
        # A machine's entries are joined as soon as they are made: the 20,000 small objects
        # of all machines at once would leave pymalloc's arenas fragmented once freed.
        self._slot = np.full(size, -1, dtype=np.int32)
        ids: list[list[int]] = [[] for _ in topics]
        for tag_id in sorted(tags):
            self._slot[tag_id] = len(ids[machine_of[tag_id]])
            ids[machine_of[tag_id]].append(tag_id)
        self._templates: list[bytes] = []
        self._starts: list[npt.NDArray[np.int32]] = []
        for machine in ids:
            entries = [_good_entry(tags[tag_id]) for tag_id in machine]
            self._templates.append(b",".join(entries))
            ends = np.cumsum([len(entry) + 1 for entry in entries], dtype=np.int64)
            self._starts.append(np.concatenate(([0], ends)).astype(np.int32))
        del ids
        # A machine's entries apart, made the first time a record holds only some of its tags
        # or holds them in another order (`_split`): joining them then is 4x cheaper than
        # slicing the template each time, and machines always sent whole never pay for them.
        self._entries: list[list[bytes] | None] = [None] * len(topics)
        # The last record's tag ids (their dtype and bytes) and their pieces (`_pieces`).
        self._last_pieces: tuple[tuple[Any, bytes], Pieces | None] | None = None

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
        unknown = self._unknown(batch.tag_ids)
        if unknown is not None:
            raise PayloadError(f"tag id {unknown} is not in the tag table", index)
        ids = batch.tag_ids.tolist()
        machines = self._machine_of[batch.tag_ids].tolist()
        tags = self._tags
        known = [tags[tag_id] for tag_id in ids]
        values = self._shaped(batch.tag_ids, batch.values)
        quality = batch.quality.tolist()
        names = QUALITY_NAMES
        groups: dict[int, dict[str, dict[str, Any]]]
        if len(set(machines)) == 1 and not self._any_codes and batch.ts_ns.shape[0] == 1:
            # One machine's poll, one timestamp, no coded values: the common case, one pass.
            groups = {
                machines[0]: {
                    tag.name: {"value": value, "quality": names[q], "unit": tag.unit}
                    for tag, value, q in zip(known, values, quality, strict=True)
                }
            }
        else:
            groups = self._grouped(batch, ids, machines, known, values, quality)
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

    def entry(self, tag_id: int, value: float, quality: str) -> dict[str, Any]:
        """A value of a tag in the table as a message carries it (`value_entry`)."""
        return value_entry(self._tags[tag_id], value, quality, self._codes.get(tag_id))

    def _unknown(self, ids: npt.NDArray[Any]) -> int | None:
        """The first of `ids` not in the tag table, if any."""
        machine_of = self._machine_of
        inside = (ids >= 0) & (ids < machine_of.shape[0])
        missing = ~inside
        missing[inside] = machine_of[ids[inside]] < 0
        return int(ids[int(np.argmax(missing))]) if bool(missing.any()) else None

    def _written(self, record: TelemetryRecord) -> list[tuple[int, bytes]] | None:
        """The payloads of a record of one timestamp as bytes, one per machine in the order
        its tags first appear, each the text `orjson.dumps` gives for the same dict; None for a
        record with an unknown tag (`messages` names it), a tag twice (a dict keeps the first
        place and the last value) or a machine's tags apart (the dicts gather them)."""
        batch = record.batch
        ids = batch.tag_ids
        pieces = self._pieces(ids)
        if pieces is None:
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
        good = not batch.quality.any()  # every reading good (Quality.GOOD is 0): the usual poll
        if good:
            args = texts
        else:
            args = [b""] * (2 * len(texts))
            args[0::2] = texts
            args[1::2] = map(_QUALITY_JSON.__getitem__, batch.quality.tolist())
        width = len(args) // len(texts)  # the `%s` of one entry
        out = []
        for machine, start, end, template in pieces:
            if not good:  # each entry's quality a `%s` too (no JSON string holds a bare `"`)
                template = template.replace(_GOOD_JSON, b"%s")
            values = template % tuple(args[width * start : width * end])
            out.append((machine, b"".join((head, b"{", values, b"}}"))))
        return out

    def _pieces(self, ids: npt.NDArray[Any]) -> Pieces | None:
        """A record's rows by machine, `(machine, start, end, template)`, for `_written`; None
        when it cannot write them. A poll's records name the same tags in the same order
        record after record: the last record's answer is kept and reused for the same ids."""
        key = (ids.dtype, ids.tobytes())
        if self._last_pieces is not None and self._last_pieces[0] == key:
            return self._last_pieces[1]
        runs = self._runs(ids)
        pieces = None if runs is None else [(*run, self._template(ids, *run)) for run in runs]
        self._last_pieces = (key, pieces)
        return pieces

    def _template(self, ids: npt.NDArray[Any], machine: int, start: int, end: int) -> bytes:
        """The `%`-template of a machine's rows `start:end` of a record."""
        place = self._slot[ids[start:end]]  # each row's place among its machine's tags
        # As many distinct tags of the machine as it has, in increasing places: all of them
        # in the template's order, which is then the record's entries as they are.
        if end - start == len(self._starts[machine]) - 1 and (
            end - start < 2 or bool((place[1:] > place[:-1]).all())
        ):
            return self._templates[machine]
        # Some of its tags (a deadband held the others), or another order.
        entries = self._entries[machine] or self._split(machine)
        return b",".join(map(entries.__getitem__, place.tolist()))

    def _split(self, machine: int) -> list[bytes]:
        """`machine`'s entries apart, in its template's order (kept for its next records)."""
        template, starts = self._templates[machine], self._starts[machine].tolist()
        entries = [template[start : end - 1] for start, end in itertools.pairwise(starts)]
        self._entries[machine] = entries
        return entries

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
        ids: list[int],
        machines: list[int],
        known: list[TagMeta],
        values: list[Plain],
        quality: list[int],
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """A record's entries by machine, with code names and per-reading times if any."""
        raw = batch.values.tolist()
        codes = self._codes
        # One timestamp per batch is the common case: then values carry no `ts` of their own.
        stamps = (batch.ts_ns // 1_000_000).tolist() if batch.ts_ns.shape[0] > 1 else None
        groups: dict[int, dict[str, dict[str, Any]]] = {}
        for row, tag in enumerate(known):
            entry: dict[str, Any] = {
                "value": values[row],
                "quality": QUALITY_NAMES[quality[row]],
                "unit": tag.unit,
            }
            named = codes.get(ids[row]) if codes else None
            if named is not None:
                _name(entry, named, raw[row])
            if stamps is not None:
                entry["ts"] = stamps[row]
            groups.setdefault(machines[row], {})[tag.name] = entry
        return groups

    def _shaped(self, ids: npt.NDArray[Any], values: npt.NDArray[np.float64]) -> list[Plain]:
        """A record's values in their tags' types, as `value_entry` gives them one at a time:
        their texts (`_texts`) read back in one C call."""
        return orjson.loads(b"[" + b",".join(self._texts(ids, values)) + b"]")  # type: ignore[no-any-return]

    def _one_by_one(self, rows: Rows, values: Values, ids: npt.NDArray[Any]) -> Texts:
        """Values shaped one at a time by their tag's shaper (scaled integers)."""
        shapes = self._shapes
        shaped = [
            shape(value) if (shape := shapes.get(tag_id)) is not None else _finite(value)
            for tag_id, value in zip(ids.tolist(), values.tolist(), strict=True)
        ]
        texts = orjson.dumps(shaped)[1:-1].split(b",")  # numbers, true, false, null: no commas
        return zip(rows.tolist(), texts, strict=True)


def _good_entry(tag: TagMeta) -> bytes:
    """A tag's entry as a `%`-template, its value a `%s` and its quality good."""
    name = orjson.dumps(tag.name).replace(b"%", b"%%")
    unit = orjson.dumps(tag.unit).replace(b"%", b"%%")
    return b'%s:{"value":%%s%s,"unit":%s}' % (name, _GOOD_JSON, unit)


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
# Whether a binary exponent is one of those: one lookup per value instead of four comparisons.
_ODD_EXPONENT = np.zeros(256, dtype=bool)
for _low, _high in _STYLE_DIFFERS:
    _ODD_EXPONENT[_low : _high + 1] = True


def _float32_texts(values: npt.NDArray[np.float64]) -> list[bytes]:
    """Each value's JSON text as the float64 of its shortest float32 decimal, as orjson writes
    it in a dict (`_float32_shortest`): orjson's float32 text itself, about five times cheaper,
    except in the magnitudes where its style differs (`_STYLE_DIFFERS`)."""
    with np.errstate(over="ignore", invalid="ignore"):  # too large: inf, sent as null
        narrow = values.astype(np.float32)
    texts = orjson.dumps(narrow, option=_JSON_OPTIONS)[1:-1].split(b",")
    odd = _ODD_EXPONENT[(narrow.view(np.uint32) >> 23) & 0xFF]
    if odd.any():
        rows = np.flatnonzero(odd)
        fixed = orjson.dumps(_float32_shortest(values[rows]), option=_JSON_OPTIONS)
        for row, text in zip(rows.tolist(), fixed[1:-1].split(b","), strict=True):
            texts[row] = text
    return texts


Pieces = list[tuple[int, int, int, bytes]]  # (machine, start row, end row, its template)
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


# How the rows of float32, whole and boolean tags are rewritten (`LiveTelemetry._writers`).
_WRITTEN: dict[int, Callable[[Rows, Values, npt.NDArray[Any]], Texts]] = {
    _FLOAT32: _float32_rows,
    _WHOLE: _whole_rows,
    _BOOL: _bool_rows,
}

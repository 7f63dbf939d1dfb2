"""Unified-Namespace topics and JSON payloads: pure functions of sink records and tag metadata.

The topic tree (ISA-95 levels, see connectors/mqtt/README.md):

    <prefix>/<site>/<area>/<line>/<machine>/telemetry          one message per record and machine
    <prefix>/<site>/<area>/<line>/<machine>/telemetry/<tag>    retained last good value (optional)
    <prefix>/<site>/<area>/<line>/<machine>/event/<kind>       machine events
    (a text tag's string, a `text` event, goes to the machine's telemetry topic as a value)
    <prefix>/<site>/_agent/<agent_id>/event/<kind>             events of no (known) machine
    <prefix>/<site>/_agent/<agent_id>/gap                      records dropped before sending
    <prefix>/<site>/_agent/<agent_id>/telemetry/_batch         many records at once, columnar

Every payload carries `agent_id`, `stream` and `seq`, the key a consumer de-duplicates on
(delivery is at least once). Times are UTC milliseconds since the epoch. NaN and infinities
become `null`: JSON has no such numbers.

Everything that depends only on the tag table (topic strings, tag names, units) is worked out
once, when the layout is built; the per-message work is one dict per value and one
`orjson.dumps` per message. A batch message (`batch_messages`, a backlog being replayed) has no
per-value work at all: its columns are the store's arrays, written by orjson straight from
numpy, and a reading names its tag by its index in the message's `tags` list.
"""

from __future__ import annotations

import binascii
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from agent.codenames import CodeNames
from agent.model import EventKind, Quality, ReadingBatch
from agent.sink import (
    EventRecord,
    GapRecord,
    Record,
    TagMeta,
    TelemetryRecord,
    TelemetryRecords,
    known_ids,
    tag_columns,
)
from agent.values import Plain, is_float32, shaper

# Quality byte → name; a byte outside the enum is not good, so it reads "bad".
QUALITY_NAMES: tuple[str, ...] = tuple(
    Quality(q).name.lower() if q in Quality._value2member_map_ else "bad" for q in range(256)
)

AGENT_LEVEL = "_agent"  # the area-level name under which agent-wide topics live
BATCH_LEVEL = "_batch"  # telemetry/_batch: many records in one columnar message
BATCH_QUALITIES = ("good", "uncertain", "bad")  # what a batch's quality codes 0, 1, 2 mean
NO_SITE = "_"  # the site used when the agent has no tags at all

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

# How a batch message carries its `value` column (README: "Binary values"). Printing 25,000
# floats in shortest round-trip form is most of the cost of a batch and makes it 1.8x larger
# than the 8 bytes a float64 takes: the binary forms are the raw little-endian column in base64.
ValueEncoding = Literal["json", "f32le-base64", "f64le-base64"]
VALUE_ENCODINGS: tuple[ValueEncoding, ...] = ("json", "f32le-base64", "f64le-base64")
_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")
# With binary values the two small integer columns go binary too (README: "Binary values"):
# printed as JSON they were a quarter of the batch's encoding. `tag` takes the narrowest
# unsigned little-endian width that holds the message's tag count, `quality` one byte a code.
TAG_ENCODINGS: tuple[tuple[int, str, np.dtype[Any]], ...] = (
    (1 << 8, "u8-base64", np.dtype("u1")),
    (1 << 16, "u16le-base64", np.dtype("<u2")),
    (1 << 32, "u32le-base64", np.dtype("<u4")),
)
QUALITY_ENCODING = "u8-base64"


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish: `index` is the position, in the batch sent, of the record it carries."""

    topic: str
    payload: bytes
    index: int
    retain: bool = False


class PayloadError(ValueError):
    """A record that cannot be put in the topic tree or encoded (the record at `index`)."""

    def __init__(self, message: str, index: int) -> None:
        self.index = index
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class _Tag:
    machine: int  # index into UnsLayout.machine_topics
    name: str
    unit: str
    last_topic: str  # where its retained last value goes
    shape: Callable[[float], Plain] | None = None  # its value in its type (None: as it is)
    codes: Mapping[int, str] | None = None  # the names of its codes (a state, a stop reason)
    float32: bool = False  # shaped as the shortest float32 decimal, a whole record at once


# How a live message's values are shaped, per tag id (UnsLayout._kinds): float64 as it is and
# float32 as its shortest decimal, both a whole record in one C call (orjson prints a float32
# array in shortest round-trip form: the text `agent/values.py` gives one value at a time);
# anything else (integers, booleans, scaled values) one value at a time by its tag's shaper.
_AS_IS, _FLOAT32, _ONE_BY_ONE = 0, 1, 2


def _entry(tag: _Tag, value: float, quality: str) -> dict[str, Any]:
    """A value as a message carries it: in its tag's type, with its code's name if it has one."""
    entry: dict[str, Any] = {
        "value": _finite(value) if tag.shape is None else tag.shape(value),
        "quality": quality,
        "unit": tag.unit,
    }
    if tag.codes is not None and math.isfinite(value) and value == int(value):
        name = tag.codes.get(int(value))
        if name is not None:
            entry["name"] = name
    return entry


def _name(entry: dict[str, Any], codes: Mapping[int, str], value: float) -> None:
    """Put the name of a coded value beside it (as `_entry` does)."""
    if math.isfinite(value) and value == int(value):
        name = codes.get(int(value))
        if name is not None:
            entry["name"] = name


def _ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def binary_values(
    values: npt.NDArray[np.float64], encoding: ValueEncoding
) -> tuple[ValueEncoding, str]:
    """`values` as base64 of little-endian floats, and the encoding actually used.

    "f32le-base64" halves the column only when no value changes on the way: a value float32
    cannot hold exactly (most float64 readings, an int32 above 2**24) sends the whole column as
    "f64le-base64" instead, which the message says. NaN and infinities keep their IEEE form.
    """
    if encoding == "json":
        raise ValueError("binary_values writes a binary encoding, not json")
    if encoding == "f32le-base64":
        with np.errstate(over="ignore"):  # a value too large for float32 is caught below
            narrow = values.astype(_F32)
        same = narrow.astype(np.float64) == values
        if bool(same.all()) or bool((same | (np.isnan(narrow) & np.isnan(values))).all()):
            return encoding, _base64(narrow)
    column = np.ascontiguousarray(values, dtype=_F64)
    return "f64le-base64", _base64(column)


def binary_tags(index: npt.NDArray[np.int64], tags: int) -> tuple[str, str]:
    """A batch's `tag` column (each reading's index into its `tags` list of `tags` names) as
    base64 of the narrowest unsigned little-endian integers that hold `tags - 1`."""
    for limit, name, dtype in TAG_ENCODINGS:
        if tags <= limit:
            return name, _base64(index.astype(dtype))
    raise ValueError(f"{tags} tags do not fit one batch")


def _base64(column: npt.NDArray[Any]) -> str:
    return binascii.b2a_base64(np.ascontiguousarray(column).data, newline=False).decode("ascii")


class UnsLayout:
    """Builds the messages of a batch of records under `prefix`, for one agent's tags."""

    def __init__(
        self,
        prefix: str,
        agent_id: str,
        tags: Mapping[int, TagMeta],
        *,
        names: CodeNames | None = None,
    ) -> None:
        self.prefix = prefix
        self.agent_id = agent_id
        # A config has one plant site; a store that outlived a config change may hold more,
        # and then the site most tags use names the agent.
        sites = Counter(meta.site for meta in tags.values())
        self.site = min(sites, key=lambda s: (-sites[s], s)) if sites else NO_SITE
        self.agent_topic = f"{prefix}/{self.site}/{AGENT_LEVEL}/{agent_id}"
        machines: dict[tuple[str, str, str, str], int] = {}
        self.machine_topics: list[str] = []  # <prefix>/<site>/<area>/<line>/<machine>
        self._machine_of_name: dict[str, str] = {}
        self._tags: dict[int, _Tag] = {}
        for tag_id in sorted(tags):
            meta = tags[tag_id]
            key = (meta.site, meta.area, meta.line, meta.machine)
            if key not in machines:
                machines[key] = len(self.machine_topics)
                base = f"{prefix}/{meta.site}/{meta.area}/{meta.line}/{meta.machine}"
                self.machine_topics.append(base)
                self._machine_of_name.setdefault(meta.machine, base)
            machine = machines[key]
            base = self.machine_topics[machine]
            self._tags[tag_id] = _Tag(
                machine,
                meta.name,
                meta.unit,
                f"{base}/telemetry/{meta.name}",
                shaper(meta),
                (names or CodeNames()).tables.get(meta.path),
                is_float32(meta),
            )
        self._telemetry_topics = [f"{base}/telemetry" for base in self.machine_topics]
        # For batch messages: which ids are in the tag table (dense by id), and their paths.
        self._known = known_ids(tags)
        self._paths = {tag_id: meta.path for tag_id, meta in tags.items()}
        # Per tag id, how its live values are shaped (an id beyond the table: one by one, where
        # the record's loop finds it unknown).
        size = max(tags, default=-1) + 1
        self._kinds = np.full(size, _ONE_BY_ONE, dtype=np.uint8)
        for tag_id, tag in self._tags.items():
            if tag.float32:
                self._kinds[tag_id] = _FLOAT32
            elif tag.shape is None:
                self._kinds[tag_id] = _AS_IS
        self._any_codes = any(tag.codes is not None for tag in self._tags.values())
        # Every tag shaped the same way (the usual PLC of float32 registers): no masks per record.
        kinds = set(self._kinds[list(self._tags)].tolist())
        self._uniform = kinds.pop() if len(kinds) == 1 else None

    # -----------------------------------------------------------------------------------------
    # Topics

    def event_topic(self, machine: str | None, kind: str) -> str:
        """Machine events under the machine; the rest (or an unknown machine) under the agent."""
        base = self._machine_of_name.get(machine, self.agent_topic) if machine else self.agent_topic
        return f"{base}/event/{kind}"

    @property
    def gap_topic(self) -> str:
        return f"{self.agent_topic}/gap"

    # -----------------------------------------------------------------------------------------
    # Messages

    def messages(self, records: Sequence[Record], *, retain_last: bool = False) -> list[Message]:
        """The messages of `records` in order; with `retain_last`, then the last-value ones."""
        out: list[Message] = []
        for index, record in enumerate(records):
            if isinstance(record, TelemetryRecord):
                out.extend(self._telemetry(index, record))
            elif isinstance(record, EventRecord):
                if record.event.kind is EventKind.TEXT:  # a text tag's string: a value
                    out.extend(self._text(index, record, retain_last))
                else:
                    out.append(self._event(index, record))
            else:
                out.append(self._gap(index, record))
        if retain_last:
            out.extend(self.last_values(records))
        return out

    def _telemetry(self, index: int, record: TelemetryRecord) -> list[Message]:
        batch = record.batch
        n = len(batch)
        if n == 0:
            return []
        ids = batch.tag_ids.tolist()
        values = self._shaped(batch.tag_ids, batch.values)
        quality = batch.quality.tolist()
        tags = self._tags
        rows = [tags.get(tag_id) for tag_id in ids]
        if None in rows:
            unknown = ids[rows.index(None)]
            raise PayloadError(f"tag id {unknown} is not in the tag table", index)
        known: list[_Tag] = rows  # type: ignore[assignment]  # no None, checked above
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
        ts = _ms(int(batch.ts_ns[0]))
        return [
            Message(
                self._telemetry_topics[machine],
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

    def _grouped(
        self,
        batch: ReadingBatch,
        known: list[_Tag],
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
        """A record's values in their tags' types, as `_entry` gives them one at a time: float64
        and float32 tags in one C call each (non-finite: None), the others one by one."""
        uniform = self._uniform
        if uniform == _AS_IS:  # an id not in the table is refused by the caller
            return orjson.loads(orjson.dumps(values, option=_JSON_OPTIONS))  # type: ignore[no-any-return]
        if uniform == _FLOAT32:
            kinds = np.full(ids.shape[0], _FLOAT32, dtype=np.uint8)
        else:
            known = ids < self._kinds.shape[0]
            kinds = np.full(ids.shape[0], _ONE_BY_ONE, dtype=np.uint8)
            kinds[known] = self._kinds[ids[known]]
        f32 = kinds == _FLOAT32
        if f32.any():
            with np.errstate(over="ignore", invalid="ignore"):  # too large: inf, sent as null
                narrow = values[f32].astype(np.float32)
            finite = np.isfinite(narrow)
            # The shortest float32 decimals, read back as float64: still one C call each way.
            shortest = orjson.loads(
                orjson.dumps(np.where(finite, narrow, np.float32(0)), option=_JSON_OPTIONS)
            )
            values = values.copy()
            values[f32] = np.where(finite, np.asarray(shortest, dtype=np.float64), np.nan)
        shaped: list[Plain] = orjson.loads(orjson.dumps(values, option=_JSON_OPTIONS))
        others = np.flatnonzero(kinds == _ONE_BY_ONE) if uniform != _FLOAT32 else ()
        if len(others):
            tags = self._tags
            for row in np.asarray(others).tolist():
                tag = tags.get(int(ids[row]))
                if tag is not None and tag.shape is not None:
                    shaped[row] = tag.shape(float(values[row]))
        return shaped

    @property
    def batch_topic(self) -> str:
        return f"{self.agent_topic}/telemetry/{BATCH_LEVEL}"

    def batch_messages(
        self, records: Sequence[Record], value_encoding: ValueEncoding = "json"
    ) -> list[Message]:
        """Telemetry `records` as one columnar message (README: "Batches"); none when empty.

        One message per send, under the agent rather than per machine: a batch is a slice of
        the stream, so its records stay in seq order whatever machines they come from.
        Raises `PayloadError` for a record that is not telemetry or names a tag not in the
        tag table.
        """
        if not isinstance(records, TelemetryRecords):
            for index, record in enumerate(records):
                if not isinstance(record, TelemetryRecord):
                    raise PayloadError(
                        f"only telemetry goes in batches, not {record.stream}", index
                    )
        columns = TelemetryRecords.of(records)  # type: ignore[arg-type]
        run, historical = columns.run, columns.historical
        if not run.tag_ids.shape[0]:
            return []
        tags = tag_columns(run, self._known)
        if tags.unknown_record is not None:
            raise PayloadError(
                f"tag id {tags.unknown_id} is not in the tag table", tags.unknown_record
            )
        counts = np.diff(run.offsets)
        present = counts > 0  # a record with no readings carries nothing to send
        body: dict[str, Any] = {
            "agent_id": self.agent_id,
            "stream": "telemetry",
            "seq": run.seqs[present],
            "ts": run.ts_ns[present] // 1_000_000,
            "historical": historical[present],
            "n": counts[present],
            "tags": [self._paths[i] for i in tags.used],
            "units": [self._tags[i].unit for i in tags.used],
            "tag": tags.index,
            "value": run.values,  # NaN and infinities: orjson writes null
            "quality": np.minimum(run.quality, len(BATCH_QUALITIES) - 1),  # unknown codes: bad
        }
        if value_encoding != "json":
            body["value_encoding"], body["value"] = binary_values(run.values, value_encoding)
            body["tag_encoding"], body["tag"] = binary_tags(tags.index, len(tags.used))
            body["quality_encoding"] = QUALITY_ENCODING
            body["quality"] = _base64(body["quality"].astype(np.uint8))
        if run.reading_ts_ns is not None:
            body["reading_ts"] = run.reading_ts_ns // 1_000_000
        index = int(np.argmax(present))
        return [Message(self.batch_topic, orjson.dumps(body, option=_JSON_OPTIONS), index)]

    def _event(self, index: int, record: EventRecord) -> Message:
        event = record.event
        kind = str(event.kind)
        body = {
            "agent_id": self.agent_id,
            "stream": record.stream,
            "seq": record.seq,
            "ts": _ms(event.ts_ns),
            "historical": record.historical,
            "kind": kind,
            "machine": event.machine,
            "data": event.data,
        }
        try:
            payload = orjson.dumps(body, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise PayloadError(f"event data cannot be encoded as JSON: {exc}", index) from exc
        return Message(self.event_topic(event.machine, kind), payload, index)

    def _text(self, index: int, record: EventRecord, retain_last: bool) -> list[Message]:
        """A text tag's string (a `text` event, agent/texts.py) as its tag's value, on its
        machine's telemetry topic: `"values": {"die_id": {"value": "DIE-42", ...}}`; a good
        one also retained on the tag's topic with `retain_last`."""
        event = record.event
        tag = self._tags.get(int(event.data.get("tag_id", -1)))
        if tag is None:
            return [self._event(index, record)]  # a tag this config lost: as the event it is
        entry: dict[str, Any] = {
            "value": event.data.get("value"),
            "quality": str(event.data.get("quality", "bad")),
            "unit": tag.unit,
        }
        if event.data.get("reason"):
            entry["reason"] = str(event.data["reason"])
        head = {
            "agent_id": self.agent_id,
            "stream": record.stream,
            "seq": record.seq,
            "ts": _ms(event.ts_ns),
            "historical": record.historical,
        }
        topic = self._telemetry_topics[tag.machine]
        out = [Message(topic, orjson.dumps({**head, "values": {tag.name: entry}}), index)]
        if retain_last and entry["quality"] == "good":
            out.append(Message(tag.last_topic, orjson.dumps({**head, **entry}), index, True))
        return out

    def _gap(self, index: int, record: GapRecord) -> Message:
        body = {
            "agent_id": self.agent_id,
            "stream": record.stream,
            "seq": record.seq,
            "ts": _ms(record.ts_ns),
            "historical": record.historical,
            **record.describe(),
        }
        return Message(self.gap_topic, orjson.dumps(body), index)

    def last_values(self, records: Sequence[Record]) -> list[Message]:
        """One retained message per tag: its latest good, finite value among `records`."""
        good = Quality.GOOD.value
        latest: dict[int, tuple[int, TelemetryRecord, float, int]] = {}
        for index, record in enumerate(records):
            if not isinstance(record, TelemetryRecord) or not len(record.batch):
                continue
            batch = record.batch
            stamps = batch.timestamps().tolist()
            for tag_id, value, quality, ts_ns in zip(
                batch.tag_ids.tolist(),
                batch.values.tolist(),
                batch.quality.tolist(),
                stamps,
                strict=True,
            ):
                if quality == good and math.isfinite(value) and tag_id in self._tags:
                    latest[tag_id] = (index, record, value, ts_ns)
        out = []
        for tag_id in sorted(latest):
            index, record, value, ts_ns = latest[tag_id]
            tag = self._tags[tag_id]
            body = {
                "agent_id": self.agent_id,
                "stream": record.stream,
                "seq": record.seq,
                "ts": _ms(ts_ns),
                "historical": record.historical,
                **_entry(tag, value, "good"),
            }
            out.append(Message(tag.last_topic, orjson.dumps(body), index, retain=True))
        return out

"""The JSON body and the idempotency key of one POST to an MES: pure functions, no I/O.

One body carries records of one stream, in seq order. Telemetry is columnar (one array per
field, a reading naming its tag by its index in `tags`), built from the store's arrays with no
Python object per reading; events and gap records, which are few, are a list of objects:

    {"schema": "lineside.mes/2", "agent_id": "edge-1", "stream": "telemetry",
     "seq": [41], "ts": ["2024-05-01T08:00:00.125Z"], "historical": [false],
     "source": ["plc1"], "n": [1],
     "tags": ["suzhou/stamping/line-1/press1/speed"], "units": ["spm"],
     "tag": [0], "value": [42.5], "quality": [0]}

    {"schema": "lineside.mes/2", "agent_id": "edge-1", "stream": "events",
     "records": [{"stream": "events", "seq": 7, "ts": "...", "historical": false,
                  "kind": "state", "machine": "press1", "data": {...}}]}

A text tag's string is an event of kind `text` that also carries the reading at its top:
`"tag": "<path>", "value": "DIE-42", "quality": "good", "unit": ""` (README: "Text tags").

Timestamps are RFC 3339 in UTC with millisecond precision: the finest that every common MES
stack (JavaScript, .NET, Java, SQL DATETIME(3)) parses without loss or error. A value that is
not a number (NaN, which bad-quality readings may carry) is sent as JSON null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from agent.errors import SinkRejected
from agent.model import EventKind
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

SCHEMA = "lineside.mes/2"
# Telemetry quality codes 0, 1, 2 as the MES reads them (agent.model.Quality); a code the
# agent does not know is sent as 2, bad: never reported as good.
QUALITIES = ("good", "uncertain", "bad")


# NaN → null is orjson's behaviour; numpy scalars in event data are serialised natively.
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def rfc3339_ms(ts_ns: npt.NDArray[np.int64]) -> list[str]:
    """Nanosecond epoch timestamps as RFC 3339 UTC strings, floored to the millisecond."""
    stamps = np.datetime_as_string(ts_ns.astype("datetime64[ns]"), unit="ms", timezone="UTC")
    return [str(s) for s in stamps.tolist()]


def idempotency_key(agent_id: str, records: Sequence[Record]) -> str:
    """`<agent_id>:<stream>:<first_seq>-<last_seq>`: the same batch always gets the same key."""
    if not records:
        raise ValueError("an empty batch has no idempotency key")
    return f"{agent_id}:{records[0].stream}:{records[0].seq}-{records[-1].seq}"


def telemetry_columns(
    records: Sequence[TelemetryRecord], tags: Mapping[int, TagMeta]
) -> dict[str, Any]:
    """The columns of a telemetry body (README: "Telemetry"). Raises `SinkRejected(index)`
    for the first record naming a tag the agent no longer knows: that record cannot be sent
    meaningfully, so it alone is quarantined rather than blocking the stream."""
    columns = TelemetryRecords.of(records)
    run = columns.run
    named = tag_columns(run, known_ids(tags))  # O(tag ids): microseconds per body
    if named.unknown_record is not None:
        seq = int(run.seqs[named.unknown_record])
        raise SinkRejected(
            f"telemetry seq {seq}: tag id {named.unknown_id} is not in the tag table",
            named.unknown_record,
        )
    body: dict[str, Any] = {
        "seq": run.seqs,
        "ts": rfc3339_ms(run.ts_ns),
        "historical": columns.historical,
        "source": list(run.sources),
        "n": np.diff(run.offsets),
        "tags": [tags[i].path for i in named.used],
        "units": [tags[i].unit for i in named.used],
        "tag": named.index,
        "value": run.values,  # NaN: null
        "quality": np.minimum(run.quality, len(QUALITIES) - 1),
    }
    if run.reading_ts_ns is not None:
        body["reading_ts"] = rfc3339_ms(run.reading_ts_ns)
    return body


def _event(record: EventRecord) -> dict[str, Any]:
    event = record.event
    return {
        "stream": record.stream,
        "seq": record.seq,
        "ts": rfc3339_ms(np.array([event.ts_ns], dtype=np.int64))[0],
        "historical": record.historical,
        "kind": event.kind.value,
        "machine": event.machine,
        "data": event.data,
    }


def _gap(record: GapRecord) -> dict[str, Any]:
    return {
        "stream": record.stream,
        "seq": record.seq,
        "ts": rfc3339_ms(np.array([record.ts_ns], dtype=np.int64))[0],
        "historical": record.historical,
        **record.describe(),
    }


def _text(record: EventRecord, tags: Mapping[int, TagMeta]) -> dict[str, Any]:
    """A text tag's string (a `text` event, agent/texts.py): the event, plus the tag's path,
    its value as text (null when bad), quality and unit at the top, as a reading reads."""
    out = _event(record)
    data = record.event.data
    meta = tags.get(int(data.get("tag_id", -1)))
    out["tag"] = meta.path if meta is not None else data.get("tag")
    out["value"] = data.get("value")
    out["quality"] = data.get("quality")
    out["unit"] = meta.unit if meta is not None else ""
    return out


def record_json(
    record: EventRecord | GapRecord, tags: Mapping[int, TagMeta] | None = None
) -> dict[str, Any]:
    """One event or gap record as the MES receives it."""
    if isinstance(record, EventRecord):
        if record.event.kind is EventKind.TEXT:
            return _text(record, tags or {})
        return _event(record)
    return _gap(record)


def body(agent_id: str, records: Sequence[Record], tags: Mapping[int, TagMeta]) -> bytes:
    """The JSON body of one POST. Raises `SinkRejected(index)` for a record that cannot be sent
    (unknown tag id, event data that is not JSON) and `ValueError` for a batch that breaks the
    sink contract (empty, or more than one stream)."""
    if not records:
        raise ValueError("an empty batch is not sent")
    stream = records[0].stream
    if not isinstance(records, TelemetryRecords):
        for record in records:
            if record.stream != stream:
                raise ValueError(f"one batch, one stream: got {stream!r} and {record.stream!r}")
    head = {"schema": SCHEMA, "agent_id": agent_id, "stream": stream}
    if stream == "telemetry":
        # Columns as read from the store stay columns: no record object is made.
        telemetry = (
            records
            if isinstance(records, TelemetryRecords)
            else [r for r in records if isinstance(r, TelemetryRecord)]
        )
        return orjson.dumps({**head, **telemetry_columns(telemetry, tags)}, option=_JSON_OPTIONS)
    items = [record_json(r, tags) for r in records if not isinstance(r, TelemetryRecord)]
    document = {**head, "records": items}
    try:
        return orjson.dumps(document, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        pass
    # Rare path: find the record whose event data will not encode, so only it is quarantined.
    for i, item in enumerate(items):
        try:
            orjson.dumps(item, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise SinkRejected(
                f"{stream} seq {records[i].seq}: data is not JSON-serialisable: {exc}", i
            ) from None
    raise AssertionError("the batch failed to encode but every record encodes alone")

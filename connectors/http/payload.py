"""The JSON body and the idempotency key of one POST to an MES: pure functions, no I/O.

One body carries records of one stream, in seq order:

    {"schema": "lineside.mes/1", "agent_id": "edge-1", "stream": "telemetry",
     "records": [{"stream": "telemetry", "seq": 41, "ts": "2024-05-01T08:00:00.125Z",
                  "historical": false, "source": "plc1",
                  "readings": [{"path": "suzhou/stamping/line-1/press1/speed",
                                "value": 42.5, "quality": "good", "unit": "spm",
                                "ts": "2024-05-01T08:00:00.125Z"}]}]}

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
from agent.model import Quality
from agent.sink import EventRecord, GapRecord, Record, TagMeta, TelemetryRecord

SCHEMA = "lineside.mes/1"

# Quality codes as the MES reads them; indexed by the uint8 stored in ReadingBatch.quality.
_QUALITY_NAMES: tuple[str, ...] = tuple(q.name.lower() for q in sorted(Quality))

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


def _quality_name(code: int) -> str:
    return _QUALITY_NAMES[code] if code < len(_QUALITY_NAMES) else f"code-{code}"


def _telemetry(index: int, record: TelemetryRecord, tags: Mapping[int, TagMeta]) -> dict[str, Any]:
    batch = record.batch
    stamps = rfc3339_ms(batch.timestamps())
    readings: list[dict[str, Any]] = []
    for tag_id, value, quality, ts in zip(
        batch.tag_ids.tolist(), batch.values.tolist(), batch.quality.tolist(), stamps, strict=True
    ):
        meta = tags.get(tag_id)
        if meta is None:
            # A record naming a tag the agent no longer knows cannot be sent meaningfully:
            # quarantine that one record rather than block the stream.
            raise SinkRejected(
                f"telemetry seq {record.seq}: tag id {tag_id} is not in the tag table", index
            )
        readings.append(
            {
                "path": meta.path,
                "value": value,
                "quality": _quality_name(quality),
                "unit": meta.unit,
                "ts": ts,
            }
        )
    return {
        "stream": record.stream,
        "seq": record.seq,
        "ts": rfc3339_ms(batch.ts_ns[:1])[0] if batch.ts_ns.shape[0] else None,
        "historical": record.historical,
        "source": batch.source,
        "readings": readings,
    }


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


def record_json(index: int, record: Record, tags: Mapping[int, TagMeta]) -> dict[str, Any]:
    """One record as the MES receives it; `index` is its place in the batch (for errors)."""
    if isinstance(record, TelemetryRecord):
        return _telemetry(index, record, tags)
    if isinstance(record, EventRecord):
        return _event(record)
    return _gap(record)


def body(agent_id: str, records: Sequence[Record], tags: Mapping[int, TagMeta]) -> bytes:
    """The JSON body of one POST. Raises `SinkRejected(index)` for a record that cannot be sent
    (unknown tag id, event data that is not JSON) and `ValueError` for a batch that breaks the
    sink contract (empty, or more than one stream)."""
    if not records:
        raise ValueError("an empty batch is not sent")
    stream = records[0].stream
    for record in records:
        if record.stream != stream:
            raise ValueError(f"one batch, one stream: got {stream!r} and {record.stream!r}")
    items = [record_json(i, r, tags) for i, r in enumerate(records)]
    document = {"schema": SCHEMA, "agent_id": agent_id, "stream": stream, "records": items}
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

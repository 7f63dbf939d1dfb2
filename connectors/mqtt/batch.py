"""The columnar batch message: many telemetry records in one message (README: "Batches").

A batch message (a backlog being replayed) has no per-value work at all: its columns are the
store's arrays, written by orjson straight from numpy, and a reading names its tag by its index
in the message's `tags` list. With a binary value encoding (README: "Binary values") the
columns are little-endian arrays in base64 instead.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from agent.sink import Record, TagMeta, TelemetryRecord, TelemetryRecords, known_ids, tag_columns
from connectors.mqtt.message import Message, PayloadError

BATCH_QUALITIES = ("good", "uncertain", "bad")  # what a batch's quality codes 0, 1, 2 mean

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


class BatchLayout:
    """Builds the batch message of telemetry records on `topic`, for one agent's tags."""

    def __init__(self, agent_id: str, topic: str, tags: Mapping[int, TagMeta]) -> None:
        self.agent_id = agent_id
        self.topic = topic
        # Which ids are in the tag table (dense by id); their paths and units are read from the
        # table itself (no copy per tag).
        self._known = known_ids(tags)
        self._tags = tags

    def messages(
        self, records: Sequence[Record], value_encoding: ValueEncoding = "json"
    ) -> list[Message]:
        """Telemetry `records` as one columnar message; none when empty (`UnsLayout`)."""
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
            "tags": [self._tags[i].path for i in tags.used],
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
        return [Message(self.topic, orjson.dumps(body, option=_JSON_OPTIONS), index)]

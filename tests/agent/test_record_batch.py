"""Every stream's batch has the same methods (`RecordBatch`), so the forwarder never asks which
shape it holds."""

import numpy as np

from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, GapRecord, Records, TelemetryRecord, TelemetryRecords


def events(*seqs: int) -> Records:
    return Records(
        "events", [EventRecord(s, Event(EventKind.ALARM, s, "m", {"code": s})) for s in seqs]
    )


def test_event_records_select_mark_and_count_like_telemetry() -> None:
    batch = events(3, 4, 5)
    assert batch.stream == "events"
    assert batch.seqs.tolist() == [3, 4, 5]
    kept = batch.select(np.array([True, False, True]))
    assert [r.seq for r in kept] == [3, 5]
    marked = batch.marked(batch.seqs < 5)
    assert [r.historical for r in marked] == [True, True, False]
    assert marked.historical_count() == 2
    assert batch.marked(True).historical_count() == 3
    assert [r.seq for r in batch[1:]] == [4, 5] and batch[1:].stream == "events"


def test_gap_records_keep_their_stream_name() -> None:
    gap = GapRecord(1, "telemetry", 4, 9, 6, 60, 10, "size bound")
    batch = Records("gaps", [gap])
    assert batch.marked(True)[0] == GapRecord(1, "telemetry", 4, 9, 6, 60, 10, "size bound", True)


def test_telemetry_records_answer_the_same_questions() -> None:
    one = ReadingBatch.from_columns("plc", [1, 2], [1.0, 2.0], Quality.GOOD, 10)
    batch = TelemetryRecords.of([TelemetryRecord(7, one), TelemetryRecord(8, one)])
    assert batch.stream == "telemetry"
    assert batch.seqs.tolist() == [7, 8]
    assert batch.marked(batch.seqs < 8).historical_count() == 1
    assert len(batch.select(np.array([False, True]))) == 1

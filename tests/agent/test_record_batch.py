"""Every stream's batch has the same methods (`RecordBatch`), so the forwarder never asks which
shape it holds."""

import numpy as np

from agent.lane import mark_historical
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


def test_telemetry_marked_alike_answers_as_marked_one_by_one() -> None:
    # All live or all historical is kept as one mark: every question gets the answer the
    # same marks given one per record get.
    one = ReadingBatch.from_columns("plc", [1, 2], [1.0, 2.0], Quality.GOOD, 10)
    batch = TelemetryRecords.of([TelemetryRecord(s, one) for s in (7, 8, 9)])
    for mark in (False, True):
        alike, each = batch.marked(mark), batch.marked(np.full(3, mark))
        assert alike.historical.tolist() == each.historical.tolist() == [mark] * 3
        assert alike.historical_count() == each.historical_count() == 3 * mark
        assert [r.historical for r in alike] == [r.historical for r in each] == [mark] * 3
        assert alike[1:].historical.tolist() == each[1:].historical.tolist() == [mark] * 2
        keep = np.array([True, False, True])
        assert alike.select(keep).historical_count() == each.select(keep).historical_count()
        assert alike.select(keep).historical.tolist() == [mark] * 2


def test_mark_historical_marks_what_was_stored_before_the_live_window() -> None:
    one = ReadingBatch.from_columns("plc", [1], [1.0], Quality.GOOD, 10)
    telemetry = TelemetryRecords.of([TelemetryRecord(s, one) for s in (7, 8, 9)])
    for batch in (telemetry, events(7, 8, 9)):
        for live_from, marks in [
            (5, [False] * 3),  # all live
            (7, [False] * 3),
            (8, [True, False, False]),
            (9, [True, True, False]),
            (10, [True] * 3),  # all stored before the window
        ]:
            assert [r.historical for r in mark_historical(batch, live_from)] == marks
    assert len(mark_historical(TelemetryRecords.of([]), 3)) == 0

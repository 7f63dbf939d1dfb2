import numpy as np
import pytest

from agent.model import Event, EventKind, Quality, ReadingBatch


def test_from_columns_converts_dtypes_and_fills_scalar_quality() -> None:
    batch = ReadingBatch.from_columns("plc1", [3, 1, 2], [1, 2.5, -3], Quality.GOOD, 1_000)
    assert batch.tag_ids.dtype == np.int32
    assert batch.values.dtype == np.float64
    assert batch.quality.tolist() == [0, 0, 0]
    assert batch.timestamps().tolist() == [1_000, 1_000, 1_000]
    assert len(batch) == 3


def test_per_row_timestamps_are_kept() -> None:
    batch = ReadingBatch.from_columns("plc1", [1, 2], [0.0, 1.0], [0, 2], [10, 20])
    assert batch.timestamps().tolist() == [10, 20]


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        ({"tag_ids": np.array([1], np.int64)}, TypeError),
        ({"values": np.array([1.0, 2.0])}, ValueError),
        ({"quality": np.array([0], np.int8)}, TypeError),
        ({"ts_ns": np.array([1, 2, 3], np.int64)}, ValueError),
        ({"values": np.array([[1.0]])}, ValueError),
        ({"quality": np.array([0, 0], np.uint8)}, ValueError),
        ({"ts_ns": np.array([[5]], np.int64)}, ValueError),
        ({"values": np.array([1.0], ">f8")}, TypeError),
    ],
)
def test_bad_columns_are_refused(columns: dict[str, np.ndarray], error: type[Exception]) -> None:
    good = {
        "tag_ids": np.array([1], np.int32),
        "values": np.array([1.0]),
        "quality": np.array([0], np.uint8),
        "ts_ns": np.array([5], np.int64),
    }
    good.update(columns)
    with pytest.raises(error):
        ReadingBatch(source="s", **good)


def test_select_keeps_rows_and_shared_timestamp() -> None:
    batch = ReadingBatch.from_columns("s", [1, 2, 3], [1.0, 2.0, 3.0], Quality.GOOD, 7)
    picked = batch.select(np.array([True, False, True]))
    assert picked.tag_ids.tolist() == [1, 3]
    assert picked.values.tolist() == [1.0, 3.0]
    assert picked.timestamps().tolist() == [7, 7]
    none = batch.select(np.zeros(3, dtype=bool))
    assert len(none) == 0
    assert none.timestamps().tolist() == []


def test_select_with_per_row_timestamps() -> None:
    batch = ReadingBatch.from_columns("s", [1, 2], [1.0, 2.0], Quality.BAD, [10, 20])
    picked = batch.select(np.array([False, True]))
    assert picked.timestamps().tolist() == [20]
    assert picked.quality.tolist() == [Quality.BAD]


def test_event_defaults() -> None:
    event = Event(EventKind.STATE, ts_ns=1, machine="press1", data={"state": "running"})
    assert event.seq is None
    assert event.kind == "state"

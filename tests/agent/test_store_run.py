"""The forwarder's columnar read path: many telemetry records as one `TelemetryRun`."""

from pathlib import Path

import numpy as np
import pytest

from agent.errors import StoreError
from agent.model import Quality, ReadingBatch
from agent.sink import TelemetryRecords
from agent.store import Store, StoreWriter, decode_run, encode_batch
from agent.store.blob import StoredRow
from agent.tags import Tag

T0 = 1_700_000_000_000_000_000

BATCHES = [
    ReadingBatch.from_columns("a", [1, 2], [1.0, 2.0], Quality.GOOD, T0),
    ReadingBatch.from_columns("b", [2], [3.0], [2], [T0 + 5]),
    ReadingBatch.from_columns("a", [1, 2, 3], [4.0, np.nan, 6.0], [0, 1, 0], [T0, T0 + 1, T0 + 2]),
]


def rows(batches: list[ReadingBatch]) -> list[StoredRow]:
    """As `Store.read_telemetry_run` selects them, with no reference: every column given."""
    out: list[StoredRow] = []
    for seq, batch in enumerate(batches, start=10):
        e = encode_batch(batch)
        ts = None if len(e.ts) == 8 else e.ts
        out.append((seq, e.source, e.ts_first_ns, e.tag_ids, e.vals, e.quality, ts))
    return out


def same_batch(a: ReadingBatch, b: ReadingBatch) -> bool:
    return (
        a.source == b.source
        and np.array_equal(a.tag_ids, b.tag_ids)
        and np.array_equal(a.values, b.values, equal_nan=True)
        and np.array_equal(a.quality, b.quality)
        and np.array_equal(a.ts_ns, b.ts_ns)
    )


def test_a_run_gives_back_every_record_as_stored() -> None:
    run = decode_run(rows(BATCHES))
    assert run.seqs.tolist() == [10, 11, 12] and run.offsets.tolist() == [0, 2, 3, 6]
    assert run.ts_ns.tolist() == [T0, T0 + 5, T0]
    assert run.reading_ts_ns is not None
    assert run.reading_ts_ns.tolist() == [T0, T0, T0 + 5, T0, T0 + 1, T0 + 2]
    assert all(same_batch(run.batch(i), b) for i, b in enumerate(BATCHES))
    tail = run.slice(1, 3)
    assert tail.seqs.tolist() == [11, 12] and same_batch(tail.batch(1), BATCHES[2])
    picked = run.select(np.array([True, False, True]))
    assert picked.seqs.tolist() == [10, 12] and same_batch(picked.batch(1), BATCHES[2])
    single = decode_run(rows(BATCHES[:2]))
    assert single.reading_ts_ns is None  # one stamp per record: no per-reading column


def test_telemetry_records_index_slice_and_select_as_a_sequence() -> None:
    records = TelemetryRecords(decode_run(rows(BATCHES)), np.array([True, False, True]))
    assert [r.seq for r in records] == [10, 11, 12]
    assert [r.historical for r in records] == [True, False, True]
    assert records[-1].seq == 12 and len(records[1:]) == 2 and records[1:][0].seq == 11
    assert [r.seq for r in records.select(np.array([False, True, True]))] == [11, 12]
    with pytest.raises(IndexError):
        records[3]
    with pytest.raises(ValueError, match="step 1"):
        records[::2]
    with pytest.raises(ValueError, match="one historical mark per record"):
        TelemetryRecords(records.run, np.array([True]))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ((1, "a", T0, b"\0" * 8, b"\0" * 16, b"\0", None), "wrong length"),  # quality short
        ((1, "a", T0, b"\0" * 9, b"\0" * 8, b"\0\0", None), "wrong length"),  # tags long
        ((1, "a", T0, b"\0" * 8, b"\0" * 17, b"\0\0", None), "wrong length"),  # values long
        ((1, "a", T0, b"\0" * 8, b"\0" * 16, b"\0\0", b"\0" * 12), "timestamp blob"),
        ((1, "a", T0, b"", b"", b"", b""), "timestamp blob"),  # no readings, no stamp
        ((1, None, T0, None, b"\0" * 8, b"\0", None), "reference"),  # repeats, none given
    ],
)
def test_blobs_that_do_not_fit_are_a_store_error(row: StoredRow, problem: str) -> None:
    with pytest.raises(StoreError, match=problem):
        decode_run([row])


def test_a_column_left_as_null_is_the_reference_records() -> None:
    """What the store's query leaves NULL (equal to the first record's) comes back whole."""
    batches = [BATCHES[0], BATCHES[1], BATCHES[0], BATCHES[2], BATCHES[0]]
    full = rows(batches)
    e = encode_batch(BATCHES[0])
    same = (e.source, e.tag_ids, e.quality)
    thin: list[StoredRow] = [
        (
            seq,
            None if s == same[0] else s,
            t0,
            None if t == same[1] else t,
            v,
            None if q == same[2] else q,
            ts,
        )
        for seq, s, t0, t, v, q, ts in full
    ]
    assert [r[3] for r in thin].count(None) == 3 and thin[1][1] == "b"
    run = decode_run(thin, same)
    assert all(same_batch(run.batch(i), b) for i, b in enumerate(batches))
    repeated = decode_run([thin[0], thin[2], thin[4]], same)  # every column the reference's
    assert repeated.sources == ("a", "a", "a") and repeated.offsets.tolist() == [0, 2, 4, 6]
    assert all(same_batch(repeated.batch(i), BATCHES[0]) for i in range(3))
    assert len(decode_run([], same)) == 0


def test_read_telemetry_run_matches_read_telemetry(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_tags(Tag.from_path(f"s/a/l/m/t{i}") for i in range(3))
    writer = StoreWriter(tmp_path)
    # Records repeating the first one read (source, tags, qualities) and records that do not.
    for batch in [*BATCHES, BATCHES[0], BATCHES[1], BATCHES[0]]:
        assert writer.submit_readings(batch)
    assert writer.flush_blocking(10)
    writer.close()
    with Store(tmp_path) as store:
        for after, limit, seqs in [(1, 2, [2, 3]), (0, 10, [1, 2, 3, 4, 5, 6]), (1, 10, None)]:
            run = store.read_telemetry_run(after, limit)
            one_by_one = store.read_telemetry(after, limit)
            assert run.seqs.tolist() == [b.seq for b in one_by_one]
            assert seqs is None or run.seqs.tolist() == seqs
            assert all(same_batch(run.batch(i), b.batch) for i, b in enumerate(one_by_one))
        assert len(store.read_telemetry_run(6, 10)) == 0


def test_a_record_stored_with_a_stamp_per_reading_keeps_them_even_when_equal() -> None:
    equal = ReadingBatch.from_columns("a", [1, 2], [1.0, 2.0], Quality.GOOD, [T0, T0])
    run = decode_run(rows([BATCHES[0], equal]))
    assert run.batch(0).ts_ns.tolist() == [T0]
    assert run.batch(1).ts_ns.tolist() == [T0, T0]
    assert run.slice(1, 2).batch(0).ts_ns.tolist() == [T0, T0]
    assert run.select(np.array([False, True])).batch(0).ts_ns.tolist() == [T0, T0]

"""The writer's memory of its last commits (agent/store/recent.py): the lane's live reads of
telemetry come from it, with no SQL, and give what the file gives; anything it cannot answer
exactly goes to the file. Real SQLite files, the real writer thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.lane import read_records
from agent.model import ReadingBatch
from agent.pipeline import merge
from agent.sink import TelemetryRecords
from agent.store import Store, StoreWriter, TelemetryRun, db_path
from agent.store.recent import RECENT_COMMITS

NOW = 1_700_000_000_000_000_000
GOOD, BAD, UNCERTAIN = 0, 1, 2  # `Quality` values; any byte is stored as it is


def poll(rng: np.random.Generator, source: str, tags: np.ndarray, stamped: bool) -> ReadingBatch:
    """A poll of `tags`: one stamp for the batch, or one per reading."""
    n = tags.shape[0]
    ts = NOW + rng.integers(0, 10**9, n if stamped else 1)
    return ReadingBatch.from_columns(source, tags, rng.normal(size=n), np.zeros(n), ts)


def random_batch(rng: np.random.Generator) -> ReadingBatch:
    """One batch of a shape the agent stores: a plant's poll, several sources' polls merged,
    a stamp per reading (OPC UA), NaN read as bad, another tag set, a single reading."""
    shape = int(rng.integers(0, 6))
    all_tags = np.arange(100)
    if shape == 0:
        return poll(rng, "plc1", all_tags, stamped=False)
    if shape == 1:
        parts = [poll(rng, f"plc{i}", all_tags[i * 25 : i * 25 + 25], False) for i in range(4)]
        if rng.random() < 0.5:  # one of them stamped per reading: the merged batch is too
            parts[1] = poll(rng, "opc", all_tags[25:50], stamped=True)
        return merge(parts)
    if shape == 2:
        tags = np.sort(rng.choice(all_tags, int(rng.integers(2, 60)), replace=False))
        return poll(rng, "opc", tags, stamped=True)
    if shape == 3:
        batch = poll(rng, "plc1", all_tags, stamped=False)
        nan = rng.random(100) < 0.2
        values = np.where(nan, np.nan, batch.values)
        quality = np.where(nan, BAD, np.where(rng.random(100) < 0.1, UNCERTAIN, GOOD))
        return ReadingBatch.from_columns("plc1", all_tags, values, quality, batch.ts_ns)
    if shape == 4:
        tags = np.sort(rng.choice(all_tags, int(rng.integers(1, 10)), replace=False))
        return poll(rng, "plc2", tags, stamped=False)
    return poll(rng, "plc3", all_tags[:1], stamped=bool(rng.random() < 0.5))


def assert_same_run(got: TelemetryRun, want: TelemetryRun) -> None:
    """Every column equal, of the same dtype, the optional ones present alike."""
    assert got.sources == want.sources
    for name in ("seqs", "offsets", "tag_ids", "values", "quality", "ts_ns"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b, equal_nan=True), name
    for name in ("reading_ts_ns", "stamped"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b), name


def statements(store: Store) -> list[str]:
    """Every statement the store's read connection runs from now on (SQLite's trace)."""
    seen: list[str] = []
    store._read.set_trace_callback(seen.append)
    return seen


def live_read(store: Store, writer: StoreWriter, after: int, limit: int) -> TelemetryRun:
    """The lane's read (`read_records`), as the forwarder makes it."""
    records = read_records(store, "telemetry", after, limit, writer.recent)
    assert isinstance(records, TelemetryRecords)
    return records.run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path)
    yield s
    s.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_live_read_after_a_commit_needs_no_sql_and_equals_the_files(
    store: Store, tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    writer = StoreWriter(tmp_path)
    try:
        last = 0
        for _ in range(30):
            batches = [random_batch(rng) for _ in range(int(rng.integers(1, 5)))]
            for batch in batches:
                writer.submit_readings(batch)
            assert writer.flush_blocking(10)
            # The lane after what it read last (a short limit too), and one further back.
            for after, limit in ((last, 200), (last, 1), (max(0, last - 3), 200)):
                seen = statements(store)
                got = live_read(store, writer, after, limit)
                assert seen == [], seen
                store._read.set_trace_callback(None)
                assert len(got) == min(limit, last + len(batches) - after)
                assert_same_run(got, store.read_telemetry_run(after, limit))
            last += len(batches)
    finally:
        writer.close()


def test_reads_while_the_writer_commits_get_what_the_file_holds(
    store: Store, tmp_path: Path
) -> None:
    # The writer thread appends while this thread reads: every answer from memory is the
    # file's, whatever the moment.
    rng = np.random.default_rng(7)
    batches = [random_batch(rng) for _ in range(300)]
    writer = StoreWriter(tmp_path, flush_interval=0.001)
    done = threading.Event()

    def submit() -> None:
        for batch in batches:
            writer.submit_readings(batch)
        writer.flush_blocking(30)
        done.set()

    thread = threading.Thread(target=submit)
    thread.start()
    try:
        answered = 0
        while not done.is_set() or answered == 0:
            committed = writer.committed_seq("telemetry")
            after = max(0, committed - int(rng.integers(0, 4)))
            limit = int(rng.integers(1, 8))
            run = writer.recent.run(after, limit)
            if run is not None:
                answered += 1
                assert_same_run(run, store.read_telemetry_run(after, limit))
    finally:
        thread.join()
        writer.close()
    assert answered


def test_a_lane_behind_the_window_reads_the_file(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    # Room for about three records of 100 readings (the row's blobs, the batch's columns and
    # the objects around them): older ones leave the memory.
    writer = StoreWriter(tmp_path, recent_bytes=3 * (2 * (13 * 100 + 8) + 400))
    try:
        for _ in range(10):
            writer.submit_readings(poll(rng, "plc1", np.arange(100), stamped=False))
            assert writer.flush_blocking(10)
        assert writer.recent.run(0, 200) is None
        assert writer.recent.run(6, 200) is None
        in_memory = writer.recent.run(7, 200)
        assert in_memory is not None and in_memory.seqs.tolist() == [8, 9, 10]
        seen = statements(store)
        behind = live_read(store, writer, 0, 200)
        assert seen  # read from the file
        assert behind.seqs.tolist() == list(range(1, 11))
    finally:
        writer.close()


def test_the_memory_holds_the_last_commits_only(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    writer = StoreWriter(tmp_path)
    try:
        for _ in range(RECENT_COMMITS + 4):  # one small record a commit
            writer.submit_readings(poll(rng, "plc1", np.arange(10), stamped=False))
            assert writer.flush_blocking(10)
        assert writer.recent.run(3, 200) is None
        kept = writer.recent.run(4, 200)
        assert kept is not None and kept.seqs.tolist() == list(range(5, RECENT_COMMITS + 5))
        assert live_read(store, writer, 3, 200).seqs.tolist() == list(range(4, RECENT_COMMITS + 5))
    finally:
        writer.close()


def test_a_record_written_behind_the_writers_back_is_read_from_the_file(
    store: Store, tmp_path: Path
) -> None:
    # Seq 2 taken by someone else: the writer's insert fails once, its retry takes seq 3. The
    # memory holds 1 and 3 but not 2: a read after 1 must come from the file.
    rng = np.random.default_rng(5)
    writer = StoreWriter(tmp_path, retry_initial=0.01, retry_max=0.05)
    try:
        writer.submit_readings(poll(rng, "plc1", np.arange(10), stamped=False))
        assert writer.flush_blocking(10)
        other = sqlite3.connect(db_path(tmp_path), isolation_level=None)
        other.execute(
            "INSERT INTO telemetry (source, n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, "
            "ts) SELECT 'other', n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, ts "
            "FROM telemetry"
        )
        other.close()
        writer.submit_readings(poll(rng, "plc1", np.arange(10), stamped=False))
        assert writer.flush_blocking(10)
        assert writer.statistics().errors == 1
        assert writer.recent.run(1, 200) is None
        run = live_read(store, writer, 1, 200)
        assert run.seqs.tolist() == [2, 3] and run.sources == ("other", "plc1")
        assert_same_run(run, store.read_telemetry_run(1, 200))
        from_memory = writer.recent.run(2, 200)
        assert from_memory is not None
        assert_same_run(from_memory, store.read_telemetry_run(2, 200))
    finally:
        writer.close()


def each_read_matches(store: Store, writer: StoreWriter, last: int) -> Callable[[], int]:
    """Check every read the memory answers after any seq up to `last` against the file's;
    how many it answered."""

    def check() -> int:
        answered = 0
        for after in range(last + 1):
            run = writer.recent.run(after, 200)
            if run is not None:
                answered += 1
                assert_same_run(run, store.read_telemetry_run(after, 200))
        return answered

    return check


def test_rows_the_size_bound_drops_are_not_served_from_memory(store: Store, tmp_path: Path) -> None:
    # The bound on every commit, and room for about a dozen records of 1,000 readings: from
    # then on the oldest unsent ones are dropped, records the memory (1 MiB) could hold.
    rng = np.random.default_rng(6)
    writer = StoreWriter(tmp_path, max_bytes=240_000, housekeeping_interval=0)
    try:
        answered = 0
        for i in range(1, 31):
            writer.submit_readings(poll(rng, "plc1", np.arange(1000), stamped=False))
            assert writer.flush_blocking(10)
            answered += each_read_matches(store, writer, i)()
        assert writer.statistics().dropped_batches > 0 and answered > 0
        first_held = int(store.read_telemetry_run(0, 1).seqs[0])
        assert first_held > 1 and writer.recent.run(first_held - 2, 200) is None
    finally:
        writer.close()


def test_a_commit_whose_own_records_the_size_bound_drops_leaves_none_in_memory(
    store: Store, tmp_path: Path
) -> None:
    rng = np.random.default_rng(8)
    store.register_sinks(["mes"])
    writer = StoreWriter(tmp_path, max_bytes=200_000, housekeeping_interval=0)
    try:
        for _ in range(3):
            writer.submit_readings(poll(rng, "plc1", np.arange(10), stamped=False))
        writer.submit_ack("mes", "telemetry", 3)  # delivered: the bound deletes them first
        assert writer.flush_blocking(10)
        # A record bigger than the bound: dropped in the commit that stored it (a gap record).
        writer.submit_readings(poll(rng, "plc1", np.arange(20_000), stamped=False))
        assert writer.flush_blocking(10)
        assert writer.statistics().dropped_batches == 1
        assert len(store.read_telemetry_run(3, 200)) == 0
        assert writer.recent.run(3, 200) is None
    finally:
        writer.close()

"""The SQLite log: opening, schema, tags, sequence numbers, cursors, readers (real files)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from agent.errors import StoreError
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.store import (
    MIGRATIONS,
    Store,
    StoreWriter,
    db_path,
    decode_batch,
    encode_batch,
    migrate,
)
from agent.tags import Tag


def batch(first_tag: int, n: int, ts: int, per_row: bool = False) -> ReadingBatch:
    stamps = np.arange(ts, ts + n, dtype=np.int64) if per_row else ts
    return ReadingBatch.from_columns(
        "plc1",
        np.arange(first_tag, first_tag + n),
        np.linspace(0.5, n, n),
        np.arange(n) % 3,
        stamps,
    )


def same(a: ReadingBatch, b: ReadingBatch) -> bool:
    return (
        a.source == b.source
        and np.array_equal(a.tag_ids, b.tag_ids)
        and np.array_equal(a.values, b.values)
        and np.array_equal(a.quality, b.quality)
        and np.array_equal(a.ts_ns, b.ts_ns)
    )


# -- encoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("per_row", [False, True])
def test_batch_round_trips_through_its_blobs(per_row: bool) -> None:
    original = batch(7, 50, 1_700_000_000_000_000_000, per_row)
    e = encode_batch(original)
    assert (e.n, e.ts_first_ns) == (50, 1_700_000_000_000_000_000)
    assert e.ts_last_ns == 1_700_000_000_000_000_000 + (49 if per_row else 0)
    assert len(e.tag_ids) + len(e.vals) + len(e.quality) == 50 * 13
    assert same(decode_batch(e.source, e.n, e.tag_ids, e.vals, e.quality, e.ts), original)


def test_nan_and_extremes_survive_the_blob() -> None:
    b = ReadingBatch.from_columns("s", [0, 1, 2], [np.nan, -np.inf, 1e308], Quality.BAD, 5)
    e = encode_batch(b)
    back = decode_batch(e.source, e.n, e.tag_ids, e.vals, e.quality, e.ts)
    assert np.isnan(back.values[0]) and back.values[1] == -np.inf and back.values[2] == 1e308


def test_blobs_of_the_wrong_length_are_refused() -> None:
    e = encode_batch(batch(0, 4, 1))
    with pytest.raises(StoreError, match="wrong length"):
        decode_batch(e.source, 5, e.tag_ids, e.vals, e.quality, e.ts)
    with pytest.raises(StoreError, match="wrong length"):
        decode_batch(e.source, 4, e.tag_ids, e.vals, e.quality, e.ts + b"x")


# -- opening, schema, corruption --------------------------------------------------------------


def test_new_store_is_wal_and_at_the_latest_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "data") as store:
        assert store.path == tmp_path / "data" / "lineside.db"
    conn = sqlite3.connect(db_path(tmp_path / "data"))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == len(MIGRATIONS)
    conn.close()


def test_an_older_schema_is_migrated_and_keeps_its_records(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, MIGRATIONS[:1]) == 1
    db.execute("INSERT INTO events (ts_ns, kind, machine, data) VALUES (5, 'alarm', 'press', '{}')")
    assert "telemetry_ts" not in indexes(db, "telemetry")
    db.close()

    with Store(tmp_path) as store:
        assert [e.seq for e in store.read_events(0, 10)] == [1]
    db = sqlite3.connect(path)
    assert "telemetry_ts" in indexes(db, "telemetry")
    assert "events_ts" in indexes(db, "events")
    db.close()


def indexes(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA index_list({table})")}


async def test_a_store_from_before_stored_times_opens_and_its_records_are_backlog(
    tmp_path: Path,
) -> None:
    # Schema 3 knew no stored time: its records count as stored before any live window and
    # are aged by their own stamp; new records get one.
    path = db_path(tmp_path)
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, MIGRATIONS[:3]) == 3
    old = encode_batch(batch(0, 3, 1_000_000_000))
    db.execute(
        "INSERT INTO telemetry (source, n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            *(old.source, old.n, old.ts_first_ns, old.ts_last_ns),
            *(old.tag_ids, old.vals, old.quality, old.ts),
        ],
    )
    db.close()

    now = 1_000_000_000 + 3600 * 10**9
    with Store(tmp_path, clock=lambda: now) as store:
        store.register_sinks(["mqtt"])
        assert store.live_boundary("telemetry", 0) == (2, False)  # not live, at any time
        assert store.stats().oldest_unsent_age_s["mqtt"]["telemetry"] == pytest.approx(3600.0)
        writer = StoreWriter(tmp_path, clock=lambda: now)
        writer.submit_readings(batch(0, 3, 5))  # a device stamp from 1970: stored now
        await writer.flush()
        writer.close()
        assert [b.seq for b in store.read_telemetry(0, 10)] == [1, 2]
        assert store.live_boundary("telemetry", now) == (2, True)
        assert store.live_boundary("telemetry", now + 1) == (3, False)


def test_a_schema_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    conn = sqlite3.connect(db_path(tmp_path))
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(
        StoreError,
        match=rf"written by a newer lineside \(schema 99\); this is schema {len(MIGRATIONS)}",
    ):
        Store(tmp_path)


def test_a_file_that_is_not_a_database_gives_a_one_line_store_error(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    path.write_bytes(b"this is not sqlite at all" * 200)
    with pytest.raises(StoreError) as info:
        Store(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "damaged" in message and "move the file" in message
    assert path.exists()  # never deleted by us


def test_a_damaged_page_is_found_at_open(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        ids = store.register_tags(Tag.from_path(f"s/a/l/m/t{i}") for i in range(2000))
        assert len(ids) == 2000
    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    assert pages > 6
    raw = bytearray(db_path(tmp_path).read_bytes())
    # Scribble over the middle of the file: b-tree pages of the tags table and its index.
    start = page_size * (pages // 2)
    raw[start : start + page_size * 2] = b"\xa5" * (page_size * 2)
    db_path(tmp_path).write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="damaged"):
        Store(tmp_path)


def test_bad_synchronous_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        Store(tmp_path, synchronous="OFF")  # type: ignore[arg-type]


# -- tags ------------------------------------------------------------------------------------


def test_tag_ids_are_stable_across_restarts_and_new_tags_get_new_ids(tmp_path: Path) -> None:
    tags = [
        Tag(path="site/a/l1/press/speed", machine="press", name="speed", unit="spm", source="plc1")
    ]
    tags.append(
        Tag(path="site/a/l1/press/count", machine="press", name="count", unit="", source="plc1")
    )
    with Store(tmp_path) as store:
        first = store.register_tags(tags)
    assert len(set(first.values())) == 2
    with Store(tmp_path) as store:
        more = [
            Tag(
                path="site/a/l1/press/temp",
                machine="press",
                name="temp",
                unit="degC",
                source="plc1",
            ),
            *tags[::-1],
        ]
        again = store.register_tags(more)
        assert {k: again[k] for k in first} == first
        assert again["site/a/l1/press/temp"] not in first.values()
        assert store.tags()[first["site/a/l1/press/speed"]].unit == "spm"


def test_meta_values_survive_a_restart_and_the_schema_version_is_not_theirs(
    tmp_path: Path,
) -> None:
    with Store(tmp_path) as store:
        assert store.get_meta("sink.scada.bd_seq") is None
        store.set_meta("sink.scada.bd_seq", "7")
        store.set_meta("sink.scada.bd_seq", "8")
        with pytest.raises(ValueError, match="migrations"):
            store.set_meta("schema_version", "99")
    with Store(tmp_path) as store:
        assert store.get_meta("sink.scada.bd_seq") == "8"


# -- sequence numbers and readers -------------------------------------------------------------


async def test_sequences_are_monotonic_gap_free_and_never_reused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    writer = StoreWriter(tmp_path, flush_interval=10)
    for i in range(5):
        writer.submit_readings(batch(0, 3, 100 + i))
        writer.submit_event(Event(EventKind.STATE, 100 + i, "press", {"state": i}))
    last = await writer.flush()
    assert last["telemetry"] == 5 and last["events"] == 5
    writer.close()

    with Store(tmp_path) as store:
        assert [b.seq for b in store.read_telemetry(0, 100)] == [1, 2, 3, 4, 5]
        assert [b.seq for b in store.read_telemetry(2, 2)] == [3, 4]
        events = store.read_events(0, 100)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[3].data == {"state": 3} and events[3].kind is EventKind.STATE

    # Delete every record, then reopen: numbering carries on, never restarts.
    conn = sqlite3.connect(db_path(tmp_path))
    with conn:
        conn.execute("DELETE FROM telemetry")
        conn.execute("DELETE FROM events")
    conn.close()
    writer = StoreWriter(tmp_path, flush_interval=10)
    writer.submit_readings(batch(0, 3, 200))
    writer.submit_event(Event(EventKind.ALARM, 200, None, {}))
    last = await writer.flush()
    writer.close()
    assert last["telemetry"] == 6 and last["events"] == 6
    with Store(tmp_path) as store:
        assert [b.seq for b in store.read_telemetry(0, 100)] == [6]
        assert [e.seq for e in store.read_events(0, 100)] == [6]


async def test_read_telemetry_returns_the_batches_as_submitted(tmp_path: Path) -> None:
    submitted = [batch(i * 10, 10, 1000 + i, per_row=i % 2 == 1) for i in range(4)]
    Store(tmp_path).close()
    writer = StoreWriter(tmp_path)
    for b in submitted:
        writer.submit_readings(b)
    await writer.flush()
    writer.close()
    with Store(tmp_path) as store:
        back = store.read_telemetry(0, 10)
    assert all(same(s.batch, b) for s, b in zip(back, submitted, strict=True))


# -- cursors ---------------------------------------------------------------------------------


async def test_cursors_only_move_forwards_and_never_past_the_last_seq(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        writer = StoreWriter(tmp_path)
        for i in range(4):
            writer.submit_readings(batch(0, 2, i))
        await writer.flush()
        writer.close()
        assert store.cursor("mqtt", "telemetry") == 0
        assert store.advance_cursor("mqtt", "telemetry", 3) == 3
        assert store.advance_cursor("mqtt", "telemetry", 1) == 3  # a stale ack changes nothing
        assert store.cursor("mqtt", "telemetry") == 3
        with pytest.raises(StoreError, match="last is 4"):
            store.advance_cursor("mqtt", "telemetry", 5)
        with pytest.raises(ValueError, match="unknown stream"):
            store.advance_cursor("mqtt", "readings", 1)
        assert store.cursor("http", "telemetry") == 0
    with Store(tmp_path) as store:
        assert store.cursor("mqtt", "telemetry") == 3


async def test_acks_through_the_writer_land_with_the_next_commit(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_sinks(["mqtt", "http"])
        writer = StoreWriter(tmp_path)
        writer.submit_event(Event(EventKind.KPI, 1, "press", {"oee": 0.5}))
        writer.submit_event(Event(EventKind.KPI, 2, "press", {"oee": 0.6}))
        await writer.flush()
        writer.submit_ack("mqtt", "events", 2)
        writer.submit_ack("mqtt", "events", 1)
        await writer.flush()
        writer.close()
        assert store.cursor("mqtt", "events") == 2
        assert store.cursor("http", "events") == 0
        assert store.sinks() == ["http", "mqtt"]
        store.register_sinks(["mqtt"])
        assert store.sinks() == ["mqtt"]


def test_events_with_data_that_is_not_json_are_refused_at_submit(tmp_path: Path) -> None:
    Store(tmp_path).close()
    writer = StoreWriter(tmp_path)
    try:
        with pytest.raises(TypeError):
            writer.submit_event(Event(EventKind.ALARM, 1, None, {"x": object()}))
        with pytest.raises(ValueError):
            writer.submit_event(Event(EventKind.ALARM, 1, None, {"x": float("nan")}))
        assert writer.statistics().pending_events == 0
    finally:
        writer.close()


async def test_stats_report_depth_and_oldest_unsent_age_per_sink(tmp_path: Path) -> None:
    now = 10_000_000_000_000
    with Store(tmp_path, clock=lambda: now) as store:
        store.register_sinks(["mqtt"])
        # Aged by when the agent stored a record, not by the device's (much older) stamp.
        stored = [now - 3_000_000_000]
        writer = StoreWriter(tmp_path, clock=lambda: stored[0])
        writer.submit_readings(batch(0, 5, now - 1000_000_000_000))
        await writer.flush()
        stored[0] = now - 1_000_000_000
        writer.submit_readings(batch(0, 5, now - 1000_000_000_000))
        await writer.flush()
        writer.close()
        stats = store.stats()
        assert stats.streams["telemetry"].depth == 2
        assert stats.streams["telemetry"].last_seq == 2
        assert stats.streams["events"].depth == 0
        assert stats.oldest_unsent_age_s["mqtt"]["telemetry"] == pytest.approx(3.0)
        assert stats.oldest_unsent_age_s["mqtt"]["events"] is None
        assert stats.bytes > 0
        store.advance_cursor("mqtt", "telemetry", 1)
        assert store.stats().oldest_unsent_age_s["mqtt"]["telemetry"] == pytest.approx(1.0)


def test_a_store_is_created_and_opened_without_sqlite_utils(tmp_path: Path) -> None:
    # sqlite-utils brings click, pluggy and dateutil (~2.5 MB of the agent's RSS): the
    # migrations are plain SQL, so neither a new store nor an existing one loads them.
    from tests.agent.test_cli import imported_after

    StoreWriter(tmp_path, flush_interval=30).close()  # created and migrated here
    loaded = imported_after(
        "from agent.store import Store, StoreWriter\n"
        f"w = StoreWriter({str(tmp_path)!r}, flush_interval=30)\n"
        f"s = Store({str(tmp_path)!r})\n"
        "s.close()\nw.close()"
    )
    assert not loaded & {"sqlite_utils", "click", "pluggy", "dateutil"}, loaded
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    loaded = imported_after(
        f"from agent.store import StoreWriter\nStoreWriter({str(fresh)!r}).close()"
    )
    assert not loaded & {"sqlite_utils", "click", "pluggy", "dateutil"}, loaded
    with Store(fresh) as store:  # and the new file has the whole schema
        assert store.path.exists()
    conn = sqlite3.connect(db_path(fresh))
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == len(MIGRATIONS)
    assert "events_kind_ts" in indexes(conn, "events")
    conn.close()

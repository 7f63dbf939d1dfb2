"""`Store`: open and check the file, tags, sinks and cursors, and the readers."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import StoreError
from agent.model import Event, EventKind, ReadingBatch
from agent.secrets import redact
from agent.store.blob import TelemetryRun, decode_batch, decode_run
from agent.store.schema import (
    DB_NAME,
    MIGRATIONS,
    STREAMS,
    Clock,
    Migration,
    Synchronous,
    advance_cursor_sql,
    check_file,
    check_path,
    check_stream,
    connect,
    corrupt,
    db_path,
    last_seqs,
    migrate_connection,
    transaction,
)

# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class TagInfo:
    """A tag as registered in the store: `path` is `site/area/line/machine/tag`."""

    path: str
    machine: str = ""
    name: str = ""
    unit: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A telemetry record read back: one batch with the sequence number the store gave it."""

    seq: int
    batch: ReadingBatch


@dataclass(frozen=True, slots=True)
class Gap:
    """Records dropped before every sink had them.

    `first_seq`..`last_seq` name the dropped range of `stream`; both are None when the records
    were dropped in memory before they ever got a sequence number (the store was full).
    `count` is the number of records, `readings` the readings they held (telemetry).
    """

    seq: int
    stream: str
    first_seq: int | None
    last_seq: int | None
    count: int
    readings: int
    ts_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A record a sink's far side refused, with the reason it gave."""

    id: int
    sink: str
    stream: str
    seq: int
    ts_ns: int  # when it was quarantined
    reason: str
    retry: bool  # `lineside quarantine retry` asked for it to be sent again


@dataclass(frozen=True, slots=True)
class StreamStats:
    depth: int  # records held
    first_seq: int | None
    last_seq: int  # the last sequence number ever assigned (0 for none)


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What `lineside status` shows about the store."""

    path: str
    bytes: int  # database file plus WAL
    streams: Mapping[str, StreamStats]
    # sink -> stream -> age in seconds of the oldest record the sink has not acknowledged
    oldest_unsent_age_s: Mapping[str, Mapping[str, float | None]]


# ---------------------------------------------------------------------------------------------
# The store: open, register, cursors, readers


class Store:
    """The SQLite log of one agent. Not thread-safe beyond its own lock; cheap calls only."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        synchronous: Synchronous = "FULL",
        clock: Clock = time.time_ns,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = db_path(data_dir)
        self.synchronous = synchronous
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.path.parent}: cannot create the data directory: {exc}"
            ) from exc
        check_path(self.path)  # damage SQLite would not see, or see only as a traceback
        self._conn = connect(self.path, synchronous)
        self._lock = threading.Lock()
        try:
            check_file(self._conn, self.path)
            migrate_connection(self._conn, migrations)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise corrupt(self.path, str(exc)) from exc
        except BaseException:
            self._conn.close()
            raise
        try:
            self._read = connect(self.path, synchronous)
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._read.close()
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tags and sinks --------------------------------------------------------------------

    def register_tags(self, tags: Iterable[TagInfo]) -> dict[str, int]:
        """Ids for these tag paths; a path seen before keeps its id across restarts.

        A tag registered again as it was writes no page (SQLite leaves an identical row
        alone), so the agent starts on a full disk too.
        """
        tags = list(tags)
        try:
            with self._lock, transaction(self._conn):
                self._conn.executemany(
                    "INSERT INTO tags (path, machine, name, unit, source) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (path) DO UPDATE SET machine = excluded.machine, "
                    "name = excluded.name, unit = excluded.unit, source = excluded.source",
                    [(t.path, t.machine, t.name, t.unit, t.source) for t in tags],
                )
                ids = {
                    str(path): int(tag_id)
                    for tag_id, path in self._conn.execute("SELECT id, path FROM tags")
                }
        except sqlite3.Error as exc:  # a full disk, mostly: one line, no traceback
            raise StoreError(f"{self.path}: cannot register the tags: {exc}") from exc
        return {t.path: ids[t.path] for t in tags}

    def tags(self) -> dict[int, TagInfo]:
        with self._lock:
            rows = self._read.execute("SELECT id, path, machine, name, unit, source FROM tags")
            return {int(r[0]): TagInfo(*r[1:]) for r in rows}

    def register_sinks(self, sinks: Iterable[str]) -> None:
        """Declare the configured sinks: a new one starts at seq 0 on every stream (it gets
        everything still held); a sink no longer configured loses its cursors, so it no longer
        holds records back."""
        names = sorted(set(sinks))
        try:
            with self._lock, transaction(self._conn):
                self._conn.executemany(
                    "INSERT OR IGNORE INTO cursors (sink, stream, seq) VALUES (?, ?, 0)",
                    [(s, st) for s in names for st in STREAMS],
                )
                marks = ",".join("?" * len(names))
                self._conn.execute(f"DELETE FROM cursors WHERE sink NOT IN ({marks})", names)
        except sqlite3.Error as exc:  # a full disk, mostly: one line, no traceback
            raise StoreError(f"{self.path}: cannot register the sinks: {exc}") from exc

    def sinks(self) -> list[str]:
        with self._lock:
            rows = self._read.execute("SELECT DISTINCT sink FROM cursors ORDER BY sink")
            return [str(r[0]) for r in rows]

    def get_meta(self, key: str) -> str | None:
        """A value kept in the file's `meta` table (e.g. a sink's session number), or None.
        StoreError when the file cannot be read."""
        try:
            with self._lock:
                query = "SELECT value FROM meta WHERE key = ?"
                row = self._read.execute(query, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read {key}: {exc}") from None
        return str(row[0]) if row else None

    def set_meta(self, key: str, value: str) -> None:
        """Keep `value` under `key` in the `meta` table, committed before returning.
        StoreError when the file cannot be written (full disk, locked)."""
        if key == "schema_version":
            raise ValueError("schema_version belongs to the migrations")
        try:
            with self._lock, transaction(self._conn):
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write {key}: {exc}") from None

    def cursor(self, sink: str, stream: str) -> int:
        """The last seq of `stream` that `sink` acknowledged (0: none yet)."""
        check_stream(stream)
        with self._lock:
            row = self._read.execute(
                "SELECT seq FROM cursors WHERE sink = ? AND stream = ?", (sink, stream)
            ).fetchone()
        return int(row[0]) if row else 0

    def advance_cursor(self, sink: str, stream: str, seq: int) -> int:
        """Record that `sink` has everything of `stream` up to `seq`; returns the cursor.

        Only forwards: an older seq leaves the cursor where it is. A seq that was never
        assigned is refused (StoreError). From the event loop prefer
        `StoreWriter.submit_ack`, which never waits for a disk flush.
        """
        check_stream(stream)
        with self._lock, transaction(self._conn):
            last = last_seqs(self._conn)[stream]
            if seq > last:
                raise StoreError(f"cannot acknowledge {stream} seq {seq}: the last is {last}")
            return advance_cursor_sql(self._conn, sink, stream, seq)

    # -- quarantine ------------------------------------------------------------------------

    def quarantine(self, sink: str, stream: str, seq: int, reason: str) -> None:
        check_stream(stream)
        with self._lock, transaction(self._conn):
            self._conn.execute(
                "INSERT INTO quarantine (sink, stream, seq, ts_ns, reason) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (sink, stream, seq) DO UPDATE SET reason = excluded.reason, "
                "ts_ns = excluded.ts_ns, retry = 0",
                # The reason is the far side's text, which may echo our credentials.
                (sink, stream, seq, self._clock(), redact(reason)),
            )

    def quarantined(
        self, sink: str | None = None, *, retry_only: bool = False
    ) -> list[Quarantined]:
        query = "SELECT id, sink, stream, seq, ts_ns, reason, retry FROM quarantine WHERE 1"
        args: list[object] = []
        if sink is not None:
            query += " AND sink = ?"
            args.append(sink)
        if retry_only:
            query += " AND retry = 1"
        with self._lock:
            rows = self._read.execute(query + " ORDER BY id", args).fetchall()
        return [
            Quarantined(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], bool(r[6])) for r in rows
        ]

    def request_retry(self, sink: str | None = None) -> int:
        """Mark quarantined records to be sent again; returns how many."""
        with self._lock, transaction(self._conn):
            cursor = self._conn.execute(
                "UPDATE quarantine SET retry = 1 WHERE retry = 0 AND (? IS NULL OR sink = ?)",
                (sink, sink),
            )
            return int(cursor.rowcount)

    def release(self, entry_id: int) -> None:
        """A quarantined record was delivered after all: forget it."""
        with self._lock, transaction(self._conn):
            self._conn.execute("DELETE FROM quarantine WHERE id = ?", (entry_id,))

    # -- readers ---------------------------------------------------------------------------

    def read_telemetry(self, after_seq: int, limit: int) -> list[StoredBatch]:
        with self._lock:
            rows = self._read.execute(
                "SELECT seq, source, n, tag_ids, vals, quality, ts FROM telemetry "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [StoredBatch(int(r[0]), decode_batch(r[1], int(r[2]), *r[3:])) for r in rows]

    def read_telemetry_run(self, after_seq: int, limit: int) -> TelemetryRun:
        """`read_telemetry` as one columnar run: what the forwarder reads (no object per record)."""
        with self._lock:
            first = self._read.execute(
                "SELECT source, tag_ids, quality FROM telemetry WHERE seq > ? ORDER BY seq LIMIT 1",
                (after_seq,),
            ).fetchone()
            if first is None:
                return decode_run([])
            # Columns equal to the first record's come back as NULL and one stamp as the
            # integer column (`StoredRow`): SQLite compares the blobs in C, Python makes no
            # object for them. Per row that is about 0.3 us of the drain's 5.
            rows = self._read.execute(
                "SELECT seq, nullif(source, ?3), ts_first_ns, nullif(tag_ids, ?4), vals, "
                "nullif(quality, ?5), CASE WHEN length(ts) = 8 THEN NULL ELSE ts END "
                "FROM telemetry WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                (after_seq, limit, *first),
            ).fetchall()
        return decode_run(rows, first)

    def read_events(self, after_seq: int, limit: int) -> list[Event]:
        with self._lock:
            rows = self._read.execute(
                "SELECT seq, ts_ns, kind, machine, data FROM events "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [
            Event(EventKind(r[2]), int(r[1]), r[3], json.loads(r[4]), seq=int(r[0])) for r in rows
        ]

    def live_boundary(self, stream: str, since_ns: int) -> tuple[int, bool]:
        """Where the records the store took in at or after `since_ns` begin: `(seq, held)`.

        `seq` is the first such record's seq, or one past the last record held when there is
        none (`held` False). The time is when the agent stored a record (its writer's clock),
        never the device's timestamp, so it grows with the seq: the forwarder's live/backlog
        split is one seq.
        """
        check_stream(stream)
        column = "ts_ns" if stream == "gaps" else "stored_ns"  # a gap is stamped when stored
        # Left to itself SQLite answers min(seq) by walking the table in seq order, reading
        # every old row of a backlog (milliseconds per call); the index finds the few recent
        # rows directly. Gap records are few and have no index.
        index = {"telemetry": " INDEXED BY telemetry_stored", "events": " INDEXED BY events_stored"}
        with self._lock:
            first, last = self._read.execute(
                f"SELECT (SELECT min(seq) FROM {stream}{index.get(stream, '')} "
                f"WHERE {column} >= ?), (SELECT max(seq) FROM {stream})",
                (since_ns,),
            ).fetchone()
        if first is not None:
            return int(first), True
        return (0 if last is None else int(last)) + 1, False

    def read_gaps(self, after_seq: int, limit: int) -> list[Gap]:
        with self._lock:
            rows = self._read.execute(
                "SELECT seq, stream, first_seq, last_seq, count, readings, ts_ns, reason "
                "FROM gaps WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Gap(*r) for r in rows]

    def stats(self) -> StoreStats:
        now = self._clock()
        with self._lock:
            conn = self._read
            last = last_seqs(conn)
            streams: dict[str, StreamStats] = {}
            for stream in STREAMS:
                depth, first = conn.execute(f"SELECT count(*), min(seq) FROM {stream}").fetchone()
                streams[stream] = StreamStats(int(depth), first, last[stream])
            ages: dict[str, dict[str, float | None]] = {}
            for sink, stream, seq in conn.execute("SELECT sink, stream, seq FROM cursors"):
                # Aged by when the agent stored the record, not by the device's timestamp
                # (records stored before that was kept fall back to the latter).
                ts_col = {
                    "telemetry": "coalesce(stored_ns, ts_first_ns)",
                    "events": "coalesce(stored_ns, ts_ns)",
                }.get(stream, "ts_ns")
                row = conn.execute(
                    f"SELECT {ts_col} FROM {stream} WHERE seq > ? ORDER BY seq LIMIT 1", (seq,)
                ).fetchone()
                age = None if row is None else max(0.0, (now - int(row[0])) / 1e9)
                ages.setdefault(sink, {})[stream] = age
        size = sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(DB_NAME + "-wal"))
            if p.exists()
        )
        return StoreStats(str(self.path), size, streams, ages)

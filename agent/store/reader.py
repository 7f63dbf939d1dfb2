"""`StoreReader`: every read of the store, on a connection of its own; the records it returns.

The store owns its SQL: the forwarder, `lineside status`, `export`, `oee` and `report`, the
KPI engine's resume and the status page read through this class and never name a table or an
index. `StoreReader.open(data_dir)` opens the file read-only (reading never changes or creates
a store, and works while the agent writes); `Store` is a `StoreReader` over its own read
connection, beside the connection that sets the file up.

`find_store` is the one "is there a store here" check: every command says the same.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.model import Event, EventKind, ReadingBatch
from agent.store.blob import TelemetryRun, decode_batch, decode_run
from agent.store.schema import (
    DB_NAME,
    STREAMS,
    Clock,
    check_file,
    check_path,
    check_stream,
    corrupt,
    db_path,
    last_seqs,
    read_failed,
)
from agent.tags import Tag

FETCH = 500  # rows per fetch for the long reads: bounded memory for a long range

# ---------------------------------------------------------------------------------------------
# Records


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


class NoStore(StoreError):
    """There is no store in the directory asked for."""


def find_store(data_dir: Path | str, *, whole: bool = False) -> Path:
    """The store file of `data_dir` (or the file itself). NoStore when there is none;
    StoreError ("damaged ... move it aside") when what is there cannot be used. `whole`:
    SQLite's quick_check reads all of it now, for commands with no other check before their
    output. The one "is there a store here" check of every command."""
    path = Path(data_dir)
    if path.name != DB_NAME:
        path = db_path(path)
    if not check_path(path):
        raise NoStore(f"{path.parent}: no store here (has the agent run with this data_dir?)")
    if whole:
        with StoreReader.open(path, whole=True):
            pass
    return path


# ---------------------------------------------------------------------------------------------
# The reader


class StoreReader:
    """Reads of one store file. Thread-safe through its lock; every call is short except the
    iterators for KPI replay and export, which fetch `FETCH` rows at a time."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock = time.time_ns) -> None:
        self.path = path
        self._read = conn
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path | str, *, whole: bool = False) -> StoreReader:
        """The store of `data_dir` read-only (NoStore: none there; StoreError: damaged or
        unreadable). `whole`: quick_check it first."""
        path = find_store(data_dir)
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise read_failed(path, exc) from exc
        try:
            if whole:
                check_file(conn, path)
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._read.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        if isinstance(exc, sqlite3.Error):  # any failed read: the one-line StoreError
            raise read_failed(self.path, exc) from exc

    def _rows(self, query: str, args: Sequence[object]) -> Iterator[Any]:
        """The rows of a long read, `FETCH` at a time; a failed read is a StoreError."""
        try:
            with self._lock:
                cursor = self._read.execute(query, args)
            while True:
                with self._lock:
                    chunk = cursor.fetchmany(FETCH)
                if not chunk:
                    return
                yield from chunk
        except sqlite3.Error as exc:
            raise read_failed(self.path, exc) from exc

    # -- tags, sinks, cursors, meta ----------------------------------------------------------

    def tags(self) -> dict[int, Tag]:
        """Every tag the store knows, by id, as known from its path (the one place a path is
        split: the running agent's own tags come from its config, `agent/tags.py`)."""
        with self._lock:
            rows = self._read.execute("SELECT id, path, unit, source FROM tags").fetchall()
        return {int(i): Tag.from_path(p, id=int(i), unit=u, source=s) for i, p, u, s in rows}

    def tag_ids(self) -> dict[str, int]:
        """Every registered tag path and its id."""
        with self._lock:
            return {str(p): int(i) for i, p in self._read.execute("SELECT id, path FROM tags")}

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

    def cursor(self, sink: str, stream: str) -> int:
        """The last seq of `stream` that `sink` acknowledged (0: none yet)."""
        check_stream(stream)
        with self._lock:
            row = self._read.execute(
                "SELECT seq FROM cursors WHERE sink = ? AND stream = ?", (sink, stream)
            ).fetchone()
        return int(row[0]) if row else 0

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

    # -- the forwarder's reads ---------------------------------------------------------------

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

    def read_gaps(self, after_seq: int, limit: int) -> list[Gap]:
        with self._lock:
            rows = self._read.execute(
                "SELECT seq, stream, first_seq, last_seq, count, readings, ts_ns, reason "
                "FROM gaps WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Gap(*r) for r in rows]

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

    def stored_ns_at(self, stream: str, seq: int) -> int | None:
        """When the agent stored the last record of `stream` at or before `seq` (None: none
        held, or stored before the store kept that time): how long `live_boundary` keeps
        answering at or before `seq` (agent/lane.py)."""
        check_stream(stream)
        column = "ts_ns" if stream == "gaps" else "stored_ns"
        with self._lock:
            row = self._read.execute(
                f"SELECT {column} FROM {stream} WHERE seq <= ? ORDER BY seq DESC LIMIT 1", (seq,)
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- status --------------------------------------------------------------------------------

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

    # -- KPI replay and export -----------------------------------------------------------------

    def telemetry_from(
        self, start_ns: int, end_ns: int
    ) -> tuple[int, Iterator[tuple[int, ReadingBatch]]]:
        """How many telemetry records begin in [start, end), and those records in storage
        order as `(first timestamp, batch)`."""
        where = "FROM telemetry INDEXED BY telemetry_ts WHERE ts_first_ns >= ? AND ts_first_ns < ?"
        try:
            with self._lock:
                (count,) = self._read.execute(
                    f"SELECT count(*) {where}", (start_ns, end_ns)
                ).fetchone()
        except sqlite3.Error as exc:
            raise read_failed(self.path, exc) from exc
        rows = self._rows(
            f"SELECT source, n, tag_ids, vals, quality, ts, ts_first_ns {where} ORDER BY seq",
            (start_ns, end_ns),
        )
        return int(count), ((int(r[6]), decode_batch(r[0], int(r[1]), *r[2:6])) for r in rows)

    def last_reading_ns(self, start_ns: int, end_ns: int) -> int | None:
        """The last timestamp of the records that begin in [start, end], None for none."""
        with self._lock:
            (last,) = self._read.execute(
                "SELECT max(ts_last_ns) FROM telemetry INDEXED BY telemetry_ts "
                "WHERE ts_first_ns >= ? AND ts_first_ns <= ?",
                (start_ns, end_ns),
            ).fetchone()
        return None if last is None else int(last)

    def verdicts(
        self, inspections: Sequence[str], start_ns: int, end_ns: int
    ) -> Iterator[tuple[int, str | None, str, Any]]:
        """The stored verdicts of `inspections` in [start, end), by time (then storage order),
        as `(ts_ns, machine, inspection, verdict)`. Only those fields are taken out of the
        JSON, by SQLite: a verdict's boxes and classes stay in the store. Audits that older
        stores hold as inspection events (`"audit"` in the data) repeat a verdict: left out."""
        if not inspections:
            return iter(())
        marks = ", ".join("?" * len(inspections))
        return self._rows(
            "SELECT ts_ns, machine, json_extract(data, '$.inspection'), "
            "json_extract(data, '$.verdict') FROM events INDEXED BY events_ts "
            "WHERE ts_ns >= ? AND ts_ns < ? AND kind = ? "
            f"AND json_extract(data, '$.inspection') IN ({marks}) "
            "AND json_extract(data, '$.audit') IS NULL ORDER BY ts_ns, seq",
            (start_ns, end_ns, EventKind.INSPECTION.value, *inspections),
        )

    def connection_events(
        self, source: str, state: str, start_ns: int, end_ns: int
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """The stored connection events of `source` in `state` in [start, end), by time, as
        `(ts_ns, data)`."""
        rows = self._rows(
            "SELECT ts_ns, data FROM events INDEXED BY events_ts "
            "WHERE ts_ns >= ? AND ts_ns < ? AND kind = ? "
            "AND json_extract(data, '$.source') = ? "
            "AND json_extract(data, '$.state') = ? ORDER BY ts_ns, seq",
            (start_ns, end_ns, EventKind.CONNECTION.value, source, state),
        )
        return ((int(ts), json.loads(text)) for ts, text in rows)

    def event_texts(self, kind: EventKind, *, before_ns: int) -> Iterator[tuple[int, str]]:
        """`(ts_ns, data as stored)` of every event of `kind` stamped before `before_ns`, in
        time order (export joins the `reasons` events to its rows)."""
        rows = self._rows(
            "SELECT ts_ns, data FROM events WHERE kind = ? AND ts_ns < ? ORDER BY ts_ns, seq",
            (kind.value, before_ns),
        )
        return ((int(ts), str(text)) for ts, text in rows)

    def events_of(self, kind: EventKind, after_ns: int) -> Iterator[dict[str, Any]]:
        """The data of every stored event of `kind` stamped after `after_ns`."""
        rows = self._rows(
            "SELECT data FROM events INDEXED BY events_ts WHERE ts_ns > ? AND kind = ?",
            (after_ns, kind.value),
        )
        return (json.loads(text) for (text,) in rows)

    def batches_overlapping(
        self, start_ns: int, end_ns: int
    ) -> Iterator[tuple[int, int, ReadingBatch]]:
        """The telemetry records with a reading in [start, end), by first timestamp then seq,
        as `(seq, first timestamp, batch)`; a record that does not decode is a StoreError."""
        rows = self._rows(
            "SELECT seq, ts_first_ns, source, n, tag_ids, vals, quality, ts FROM telemetry "
            "WHERE ts_first_ns < ? AND ts_last_ns >= ? ORDER BY ts_first_ns, seq",
            (end_ns, start_ns),
        )
        for seq, first_ns, *record in rows:
            try:
                batch = decode_batch(*record)
            except (StoreError, ValueError) as exc:  # blobs that do not decode
                raise corrupt(self.path, str(exc)) from exc
            yield int(seq), int(first_ns), batch

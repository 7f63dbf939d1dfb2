"""`Store`: open and check the file, register tags and sinks, cursors; reads via `StoreReader`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.errors import StoreError
from agent.store.reader import (
    Gap,
    NoStore,
    Quarantined,
    StoredBatch,
    StoreReader,
    StoreStats,
    StreamStats,
)
from agent.store.schema import (
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
from agent.tags import Tag

__all__ = [
    "Gap",
    "NoStore",
    "Quarantined",
    "Store",
    "StoreStats",
    "StoredBatch",
    "StreamStats",
]

# ---------------------------------------------------------------------------------------------
# The store: open, register, cursors, readers


class Store(StoreReader):
    """The SQLite log of one agent: sets the file up (checks, migrations), registers tags and
    sinks, and reads it (`StoreReader`). Not thread-safe beyond its own lock; cheap calls only."""

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.path.parent}: cannot create the data directory: {exc}"
            ) from exc
        check_path(self.path)  # damage SQLite would not see, or see only as a traceback
        self._conn = connect(self.path, synchronous)
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
            read = connect(self.path, synchronous)
        except BaseException:
            self._conn.close()
            raise
        super().__init__(read, self.path, clock)

    def close(self) -> None:
        with self._lock:
            self._read.close()
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tags and sinks --------------------------------------------------------------------

    def register_tags(self, tags: Iterable[Tag]) -> dict[str, int]:
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

    # -- quarantine: the agent writes it through `StoreWriter.submit_quarantine` -------------

    def request_retry(self, sink: str | None = None) -> int:
        """Mark quarantined records to be sent again; returns how many."""
        with self._lock, transaction(self._conn):
            cursor = self._conn.execute(
                "UPDATE quarantine SET retry = 1 WHERE retry = 0 AND (? IS NULL OR sink = ?)",
                (sink, sink),
            )
            return int(cursor.rowcount)

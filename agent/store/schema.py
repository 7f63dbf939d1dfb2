"""The file: its schema and migrations, connections, the start-up check, sequence numbers."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from agent.errors import StoreError, StoreTooNew

DB_NAME = "lineside.db"
STREAMS: tuple[str, ...] = ("telemetry", "events", "gaps")
Synchronous = Literal["NORMAL", "FULL"]
Clock = Callable[[], int]  # wall-clock nanoseconds since the epoch


# ---------------------------------------------------------------------------------------------
# Schema and migrations (applied in order; `meta.schema_version` says how many ran)


def _schema_1(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE tags (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, "
        "machine TEXT NOT NULL, name TEXT NOT NULL, unit TEXT NOT NULL, source TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE telemetry (seq INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, "
        "n INTEGER NOT NULL, ts_first_ns INTEGER NOT NULL, ts_last_ns INTEGER NOT NULL, "
        "tag_ids BLOB NOT NULL, vals BLOB NOT NULL, quality BLOB NOT NULL, ts BLOB NOT NULL)"
    )
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL, "
        "kind TEXT NOT NULL, machine TEXT, data TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE gaps (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, "
        "first_seq INTEGER, last_seq INTEGER, count INTEGER NOT NULL, "
        "readings INTEGER NOT NULL, ts_ns INTEGER NOT NULL, reason TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TABLE cursors (sink TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL, "
        "PRIMARY KEY (sink, stream))"
    )


def _schema_2(db: sqlite3.Connection) -> None:
    # Export filters by time and age bounds delete by time: index the batch time range.
    db.execute("CREATE INDEX telemetry_ts ON telemetry (ts_first_ns)")
    db.execute("CREATE INDEX events_ts ON events (ts_ns)")


def _schema_3(db: sqlite3.Connection) -> None:
    # Records a sink's far side refused as invalid: kept out of the way of the queue, listed by
    # `lineside quarantine list`, sent again on `lineside quarantine retry`.
    db.execute(
        "CREATE TABLE quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, "
        "stream TEXT NOT NULL, seq INTEGER NOT NULL, ts_ns INTEGER NOT NULL, "
        "reason TEXT NOT NULL, retry INTEGER NOT NULL DEFAULT 0, UNIQUE (sink, stream, seq))"
    )


def _schema_4(db: sqlite3.Connection) -> None:
    # When the agent stored each record (its clock, at the commit): the forwarder splits live
    # from backlog by it, never by the device's timestamp, and `status` ages unsent records by
    # it. Records stored before this migration have none (NULL): they count as backlog.
    db.execute("ALTER TABLE telemetry ADD COLUMN stored_ns INTEGER")
    db.execute("ALTER TABLE events ADD COLUMN stored_ns INTEGER")
    db.execute("CREATE INDEX telemetry_stored ON telemetry (stored_ns)")
    db.execute("CREATE INDEX events_stored ON events (stored_ns)")


def _schema_5(db: sqlite3.Connection) -> None:
    # Text tags are stored as `text` events on change, so the string in force at the start of a
    # period (the product a replay starts with) may lie anywhere before it: find it by kind and
    # time without scanning every verdict and KPI event. The step also marks the store as holding
    # an event kind an older lineside cannot read, so that one refuses the file in one line.
    db.execute("CREATE INDEX events_kind_ts ON events (kind, ts_ns)")


# A step runs plain SQL on the connection: sqlite-utils would bring click, pluggy and dateutil,
# 2.5 MB of the RSS of an agent that creates its store (benchmarks/README.md, "Memory").
Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: tuple[Migration, ...] = (_schema_1, _schema_2, _schema_3, _schema_4, _schema_5)


def schema_version(db: sqlite3.Connection) -> int:
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate_connection(
    conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """`migrate`, with no write at all when the file is current (the usual start)."""
    if schema_version(conn) == len(migrations):
        return len(migrations)
    return migrate(conn, migrations)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction (a savepoint inside an open one): committed, or rolled back on error."""
    if conn.in_transaction:
        conn.execute("SAVEPOINT nested")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO SAVEPOINT nested")
                conn.execute("RELEASE SAVEPOINT nested")
            raise
        conn.execute("RELEASE SAVEPOINT nested")
        return
    conn.execute("BEGIN")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the migrations the file has not seen yet, each in its own transaction."""
    with transaction(db):
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    version = schema_version(db)
    if version > len(migrations):
        # A downgrade: the older code cannot know what the newer schema means, so it touches
        # nothing (the file stays as the newer lineside left it, ready for it again).
        path = db.execute("PRAGMA database_list").fetchone()[2]
        raise StoreTooNew(
            f"{path}: written by a newer lineside (schema {version}); this is schema "
            f"{len(migrations)}: upgrade lineside or restore a backup"
        )
    for number, step in enumerate(migrations[version:], start=version + 1):
        with transaction(db):
            step(db)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(number)],
            )
    return len(migrations)


# ---------------------------------------------------------------------------------------------
# Connections


def db_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / DB_NAME


# The page cache of each connection, in KiB. SQLite's default (2,000 KiB) fills with pages the
# agent never reads again: the writer appends (its blobs' overflow pages stay cached after the
# commit) and the forwarder reads what was just committed, whose pages a commit of another
# connection drops anyway. At W1 the agent's three connections grew by ~1.8 MB over their first
# 15 s to ~2.6 MB; with 256 KiB each they stay at ~0.85 MB, with no change in the store's write
# or drain rates (benchmarks/README.md, "Memory").
CACHE_KIB = 256


def connect(path: Path, synchronous: Synchronous = "FULL") -> sqlite3.Connection:
    """A connection in WAL mode with a small page cache (`CACHE_KIB`); transactions are
    explicit (BEGIN/COMMIT), never implicit."""
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise open_failed(path, exc) from exc
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # Keep an idle WAL small once checkpointed (it is not truncated otherwise).
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")  # negative: KiB, not pages
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise open_failed(path, exc) from exc
    return conn


def open_failed(path: Path, exc: sqlite3.Error) -> StoreError:
    """Why a store could not be opened: a full disk (SQLite cannot create its -wal and -shm
    files; it says "disk I/O error") is not damage, whatever SQLite calls it."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code in (SQLITE_FULL, SQLITE_IOERR) and no_room(path.parent):
        return StoreError(
            f"{path}: cannot open the store: the disk is full ({exc}); free space on it and "
            "start again"
        )
    return corrupt(path, str(exc))


def no_room(directory: Path) -> bool:
    """Whether the filesystem of `directory` has less room than SQLite's -shm file needs."""
    try:
        fs = os.statvfs(directory)
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < 65536


def corrupt(path: Path, detail: str) -> StoreError:
    return StoreError(
        f"{path}: the store is damaged ({detail}); stop lineside, move the file and its -wal "
        "aside (keep them for analysis) and start again to create a new store"
    )


SQLITE_IOERR = 10
SQLITE_FULL = 13
# SQLite's primary result codes that say the file cannot be used as it is (CANTOPEN: a
# directory, no permission; NOTADB: not SQLite; CORRUPT: damaged pages; IOERR: cannot read).
DAMAGE_CODES = frozenset({SQLITE_IOERR, 11, 14, 26})


def check_path(path: Path) -> bool:
    """What can be seen of the store's file before SQLite opens it, the same for every command:
    False when there is none; StoreError ("damaged ... move aside") when what is there cannot
    be a store: not a regular file (a directory, a FIFO), unreadable, or a -wal left over without
    its database (SQLite would replay it into a new, empty file).

    stat() only: opening the file here and closing it would drop every POSIX lock this process
    holds on it, a running writer's too, and let another process delete its -wal under it
    (tests/agent/test_store_locks.py). What is inside is for SQLite to judge.
    """
    wal = path.with_name(path.name + "-wal")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if wal.is_file() and wal.stat().st_size > 0:
            raise corrupt(path, f"{wal.name} is left over without {path.name}") from None
        return False
    except OSError as exc:  # a link that loops, a directory we may not enter
        raise corrupt(path, f"cannot read it: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise corrupt(path, f"{path.name} is {kind}")
    if not os.access(path, os.R_OK):
        raise corrupt(path, "cannot read it: permission denied")
    return True


def check_store(path: Path) -> bool:
    """`check_path`, then SQLite's quick_check on a read-only connection (it reads the whole
    file once): False when there is no store, StoreError when it is damaged."""
    if not check_path(path):
        return False
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise read_failed(path, exc) from exc
    try:
        check_file(conn, path)
    finally:
        conn.close()
    return True


def read_failed(path: Path, exc: sqlite3.Error) -> StoreError:
    """The StoreError for a failed read: damaged, or (busy, locked ...) cannot read now."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in DAMAGE_CODES:
        return open_failed(path, exc)
    return StoreError(f"{path}: cannot read the store: {exc}")


def check_file(conn: sqlite3.Connection, path: Path) -> None:
    # quick_check, not integrity_check: it finds damaged pages and records in O(N) but skips
    # cross-checking index contents, which on a large store on an SD card would delay every
    # start by minutes; our indexes are rebuildable, the records are what must be sound.
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise corrupt(path, str(exc)) from exc
    if [r[0] for r in rows] != ["ok"]:
        raise corrupt(path, "; ".join(str(r[0]) for r in rows[:3]))


def last_seqs(conn: sqlite3.Connection) -> dict[str, int]:
    seqs = dict.fromkeys(STREAMS, 0)
    for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence"):
        if name in seqs:
            seqs[name] = int(seq)
    return seqs


def check_stream(stream: str) -> None:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; streams are {', '.join(STREAMS)}")


# Moves a cursor forwards only (a stale or repeated acknowledgement changes nothing).
ADVANCE_CURSOR = (
    "INSERT INTO cursors (sink, stream, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (sink, stream) DO UPDATE SET seq = max(seq, excluded.seq)"
)


def advance_cursor_sql(conn: sqlite3.Connection, sink: str, stream: str, seq: int) -> int:
    """Move a cursor forwards only (`ADVANCE_CURSOR`); returns where it is now."""
    conn.execute(ADVANCE_CURSOR, (sink, stream, seq))
    row = conn.execute(
        "SELECT seq FROM cursors WHERE sink = ? AND stream = ?", (sink, stream)
    ).fetchone()
    return int(row[0])

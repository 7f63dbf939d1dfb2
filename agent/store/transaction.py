"""The SQL of one writer commit: what `StoreWriter` took from its queue, written in one
transaction (records, acknowledgements, quarantine rows, the bounds). Runs on the writer
thread only: the store has one writer."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.model import ReadingBatch
from agent.store.blob import EncodedBatch, encode_batch
from agent.store.bounds import Housework, housekeep, insert_gap, telemetry_cursors, unsent_dropped
from agent.store.recent import TelemetryRow
from agent.store.schema import ADVANCE_CURSOR, SQLITE_FULL, Clock

EventRow = tuple[int, str, str | None, str]  # ts_ns, kind, machine, data (JSON)
QuarantineRow = tuple[str, str, int, int, str]  # sink, stream, seq, ts_ns, reason (redacted)


@dataclass(frozen=True, slots=True)
class Work:
    """A snapshot of the writer's queue: written in one transaction, or not at all."""

    telemetry: list[ReadingBatch]
    events: list[EventRow]
    acks: dict[tuple[str, str], int]
    unstored_drops: tuple[int, int]
    submitted: int
    held: bool  # the store was full: pending records were held back, not written
    page_count: int | None
    quarantine: list[QuarantineRow] = field(default_factory=list)
    releases: list[int] = field(default_factory=list)  # quarantine entries delivered after all


@dataclass(frozen=True, slots=True)
class Written:
    gaps: int  # gap records written
    lost: Mapping[str, int]  # telemetry records each sink lost to a bound
    housework: Housework
    telemetry: list[TelemetryRow] = field(default_factory=list)  # the rows inserted, in order


@dataclass(frozen=True, slots=True)
class Bounds:
    max_age: float | None
    max_bytes: int | None


_INSERT_TELEMETRY = (
    "INSERT INTO telemetry (seq, source, n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, ts, "
    "stored_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_EVENT = (
    "INSERT INTO events (seq, ts_ns, kind, machine, data, stored_ns) VALUES (?, ?, ?, ?, ?, ?)"
)
_UPSERT_QUARANTINE = (
    "INSERT INTO quarantine (sink, stream, seq, ts_ns, reason) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (sink, stream, seq) DO UPDATE SET reason = excluded.reason, "
    "ts_ns = excluded.ts_ns, retry = 0"
)


def commit(
    conn: sqlite3.Connection,
    work: Work,
    clock: Clock,
    bounds: Bounds | None,
    store_full: bool,
    seqs: Mapping[str, int],
) -> Written:
    """`work` in a transaction of its own: committed, or rolled back and the error raised.

    `seqs` are the last seqs of the streams in the file: the writer's own count (it is the
    only one that inserts records, docs/decisions/0001), so a commit asks SQLite for nothing
    it already knows. Records get the seqs after them; a seq in use would fail the insert
    (the seq is the table's primary key), never be reused.
    """
    try:
        # Encoded here, before the transaction, so it stays as short as the inserts.
        encoded = [encode_batch(b) for b in work.telemetry]
        if work.page_count is not None:
            conn.execute(f"PRAGMA max_page_count = {int(work.page_count)}")
        conn.execute("BEGIN IMMEDIATE")
        written = write(conn, work, encoded, clock(), bounds, store_full, seqs)
        conn.execute("COMMIT")
    except Exception:
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        raise
    return written


def write(
    conn: sqlite3.Connection,
    work: Work,
    encoded: list[EncodedBatch],
    now: int,
    bounds: Bounds | None,
    store_full: bool,
    seqs: Mapping[str, int],
) -> Written:
    """Everything in `work`, inside the caller's open transaction; `bounds` when housekeeping
    is due this time. Statements only for what there is: at plant rates a commit is one
    record and one acknowledgement, and each statement costs more than its row."""
    gaps = 0
    lost: dict[str, int] = {}
    if work.unstored_drops != (0, 0):
        gaps += insert_gap(
            conn, "telemetry", None, None, *work.unstored_drops, now, "not stored: full"
        )
        # never stored, so no sink had them
        lost = unsent_dropped(telemetry_cursors(conn), None, None, work.unstored_drops[0])
    t0 = seqs["telemetry"]
    rows: list[TelemetryRow] = [
        (
            t0 + i,
            b.source,
            b.n,
            b.ts_first_ns,
            b.ts_last_ns,
            b.tag_ids,
            b.vals,
            b.quality,
            b.ts,
            now,
        )
        for i, b in enumerate(encoded, start=1)
    ]
    if rows:
        conn.executemany(_INSERT_TELEMETRY, rows)
    if work.events:
        e0 = seqs["events"]
        conn.executemany(
            _INSERT_EVENT, [(e0 + i, *ev, now) for i, ev in enumerate(work.events, start=1)]
        )
    for (sink, stream), seq in work.acks.items():
        conn.execute(ADVANCE_CURSOR, (sink, stream, seq))
    if work.quarantine:
        conn.executemany(_UPSERT_QUARANTINE, work.quarantine)
    if work.releases:
        conn.executemany("DELETE FROM quarantine WHERE id = ?", [(i,) for i in work.releases])
    housework = Housework(0, 0, 0, store_full)
    if bounds is not None:
        housework = housekeep(conn, now, bounds.max_age, bounds.max_bytes)
        gaps += housework.gaps
        for sink, n in housework.dropped_by_sink.items():
            lost[sink] = lost.get(sink, 0) + n
    return Written(gaps, lost, housework, rows)


def disk_full(exc: BaseException) -> bool:
    """Whether an error says the disk (or the file's page limit) has no room left."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)

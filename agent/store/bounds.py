"""The bounds, applied inside a commit: the age bound, and the size bound (delivered records
first, then the oldest undelivered telemetry with a gap record)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.store.schema import STREAMS

PAGE_BYTES = 4096  # SQLite's default page size, which the store keeps


def record_bytes(readings: int) -> float:
    """About how many bytes of the file a telemetry record of `readings` readings (one
    stamp) takes: 13 bytes a reading, ~100 for the row and its index entries, rounded up to
    what fits whole into a page (measured on the store: 50 readings ≈ 860 bytes)."""
    row = 13 * readings + 100
    if row > PAGE_BYTES - 16:  # spills into overflow pages; the rest shares a page
        return row * 1.04
    return PAGE_BYTES / ((PAGE_BYTES - 16) // row)


def acknowledged(conn: sqlite3.Connection) -> dict[str, int] | None:
    """Per stream, the seq every sink has acknowledged; None when no sink is configured."""
    rows = conn.execute("SELECT stream, min(seq) FROM cursors GROUP BY stream").fetchall()
    if not rows:
        return None
    acked = dict.fromkeys(STREAMS, 0)
    acked.update({str(s): int(q) for s, q in rows})
    return acked


def delete_acked(conn: sqlite3.Connection, acked: Mapping[str, int], cutoff_ns: int) -> int:
    """Delete the records up to each stream's `acked` seq that the store took in before
    `cutoff_ns` (records from before the stored time was kept: by their own time)."""
    deleted = 0
    for stream, ts_col in (("telemetry", "ts_first_ns"), ("events", "ts_ns")):
        # Two statements, each on an index (a scan of a week's history every housekeeping
        # would not do).
        for where in ("stored_ns < ?", f"stored_ns IS NULL AND {ts_col} < ?"):
            cur = conn.execute(
                f"DELETE FROM {stream} WHERE {where} AND seq <= ?", (cutoff_ns, acked[stream])
            )
            deleted += cur.rowcount
    cur = conn.execute("DELETE FROM gaps WHERE ts_ns < ? AND seq <= ?", (cutoff_ns, acked["gaps"]))
    return deleted + cur.rowcount


def used_bytes(conn: sqlite3.Connection) -> int:
    # Pages in use, not the file size: deleted pages are reused, the file does not shrink.
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


# Estimated bytes of a record (its columns plus row overhead): good enough to pick how many of
# the oldest to delete in one go.
_ROW_BYTES = {
    "telemetry": "length(tag_ids) + length(vals) + length(quality) + length(ts) + 48",
    "events": "length(data) + length(kind) + 48",
    "gaps": "64",
}


def _oldest(
    conn: sqlite3.Connection, table: str, excess: int, after: int, upto: int
) -> tuple[int | None, int | None, int, int, int]:
    """The oldest records of `table` with `after < seq <= upto` that free `excess` bytes:
    (first seq, last seq, records, readings, bytes freed)."""
    readings = "n" if table == "telemetry" else "0"
    rows = conn.execute(
        f"SELECT seq, {readings}, {_ROW_BYTES[table]} FROM {table} "
        "WHERE seq > ? AND seq <= ? ORDER BY seq",
        (after, upto),
    )
    first = last = None
    freed = count = total = 0
    for seq, n, size in rows:
        if freed >= excess:
            break
        first = int(seq) if first is None else first
        last, freed, count, total = int(seq), freed + int(size), count + 1, total + int(n)
    rows.close()
    return first, last, count, total, freed


def delete_oldest_delivered(conn: sqlite3.Connection, acked: Mapping[str, int], target: int) -> int:
    """Delete the oldest records every sink acknowledged until the store is under `target`
    bytes: telemetry first, then events and gap records. They leave the local history early
    but no sink lost them, so no gap record. Returns how many were deleted."""
    deleted = 0
    for table in ("telemetry", "events", "gaps"):
        # The estimates leave out page overhead: look again until under target.
        while (excess := used_bytes(conn) - target) > 0:
            _, last, count, _, _ = _oldest(conn, table, excess, 0, acked[table])
            if last is None:
                break
            conn.execute(f"DELETE FROM {table} WHERE seq <= ?", (last,))
            deleted += count
    return deleted


def drop_oldest_telemetry(
    conn: sqlite3.Connection, target: int, now: int, after: int = 0
) -> tuple[tuple[int, int], int]:
    """Drop the oldest telemetry records after seq `after` (the lowest sink cursor: what some
    sink has not acknowledged) until the store is under `target` bytes; one gap record names
    the dropped range. Returns ((records, readings), gap records written)."""
    excess = used_bytes(conn) - target
    first, last, count, readings, _ = _oldest(conn, "telemetry", excess, after, 1 << 62)
    if first is None or last is None:
        return (0, 0), 0
    conn.execute("DELETE FROM telemetry WHERE seq > ? AND seq <= ?", (after, last))
    gaps = insert_gap(conn, "telemetry", first, last, count, readings, now, "max_bytes")
    return (count, readings), gaps


def insert_gap(
    conn: sqlite3.Connection,
    stream: str,
    first_seq: int | None,
    last_seq: int | None,
    count: int,
    readings: int,
    ts_ns: int,
    reason: str,
) -> int:
    conn.execute(
        "INSERT INTO gaps (stream, first_seq, last_seq, count, readings, ts_ns, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (stream, first_seq, last_seq, count, readings, ts_ns, reason),
    )
    return 1


@dataclass(frozen=True, slots=True)
class Housework:
    """What one pass of the bounds did."""

    dropped_batches: int
    dropped_readings: int
    deleted: int
    store_full: bool
    gaps: int = 0
    dropped_by_sink: Mapping[str, int] = field(default_factory=dict)


def housekeep(
    conn: sqlite3.Connection, now: int, max_age: float | None, max_bytes: int | None
) -> Housework:
    """Age and size bounds, inside the commit's transaction.

    The store is the plant's local history: a record stays for `max_age` whether or not
    it was sent (an acknowledgement only moves a sink's cursor); only the size bound drops
    records earlier, delivered ones first.
    """
    acked = acknowledged(conn)
    deleted = 0
    if max_age is not None:
        # Older than max_age and acknowledged by every sink (every record when no sink is
        # configured: nobody waits for them).
        everything = {s: 1 << 62 for s in STREAMS}
        cutoff = now - int(max_age * 1e9)
        deleted += delete_acked(conn, everything if acked is None else acked, cutoff)
    dropped = (0, 0)
    gaps = 0
    full = False
    by_sink: dict[str, int] = {}
    if max_bytes is not None and used_bytes(conn) > max_bytes:
        target = int(max_bytes * 0.9)  # hysteresis: do not drop on every commit
        if acked is not None:
            deleted += delete_oldest_delivered(conn, acked, target)
        if used_bytes(conn) > target:
            cursors = telemetry_cursors(conn)  # before the drop: who had what
            after = 0 if acked is None else acked["telemetry"]
            dropped, gaps = drop_oldest_telemetry(conn, target, now, after)
            if gaps:
                first, last = conn.execute(
                    "SELECT first_seq, last_seq FROM gaps ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                by_sink = unsent_dropped(cursors, first, last, dropped[0])
        full = used_bytes(conn) > max_bytes
    return Housework(dropped[0], dropped[1], deleted, full, gaps, by_sink)


def telemetry_cursors(conn: sqlite3.Connection) -> dict[str, int]:
    """Each sink's telemetry cursor: the last seq it acknowledged."""
    rows = conn.execute("SELECT sink, seq FROM cursors WHERE stream = 'telemetry'")
    return {str(sink): int(seq) for sink, seq in rows}


def unsent_dropped(
    cursors: Mapping[str, int], first_seq: int | None, last_seq: int | None, count: int
) -> dict[str, int]:
    """Of `count` telemetry records dropped (seqs `first_seq`..`last_seq`, or None for records
    dropped before they were stored), how many each sink had not acknowledged yet.

    The size bound drops only above the lowest cursor (what every sink has goes first, without
    a gap record), so the dropped seqs above any sink's cursor are contiguous.
    """
    if first_seq is None or last_seq is None:
        return dict.fromkeys(cursors, count)
    return {
        sink: max(0, min(count, last_seq - max(cursor, first_seq - 1)))
        for sink, cursor in cursors.items()
    }

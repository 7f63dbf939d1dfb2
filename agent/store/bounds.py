"""The bounds, applied inside a commit: retention and age deletes, drop-oldest with gap records."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from agent.store.schema import STREAMS


def acknowledged(conn: sqlite3.Connection) -> dict[str, int] | None:
    """Per stream, the seq every sink has acknowledged; None when no sink is configured."""
    rows = conn.execute("SELECT stream, min(seq) FROM cursors GROUP BY stream").fetchall()
    if not rows:
        return None
    acked = dict.fromkeys(STREAMS, 0)
    acked.update({str(s): int(q) for s, q in rows})
    return acked


def delete_acked(conn: sqlite3.Connection, acked: Mapping[str, int], cutoff_ns: int) -> int:
    deleted = 0
    for stream, ts_col in (("telemetry", "ts_last_ns"), ("events", "ts_ns"), ("gaps", "ts_ns")):
        cur = conn.execute(
            f"DELETE FROM {stream} WHERE seq <= ? AND {ts_col} < ?", (acked[stream], cutoff_ns)
        )
        deleted += cur.rowcount
    return deleted


def used_bytes(conn: sqlite3.Connection) -> int:
    # Pages in use, not the file size: deleted pages are reused, the file does not shrink.
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    return (pages - free) * size


def drop_oldest_telemetry(
    conn: sqlite3.Connection, target: int, now: int
) -> tuple[tuple[int, int], int]:
    """Drop the oldest telemetry records until the store is under `target` bytes; one gap
    record names the dropped range. Returns ((records, readings), gap records written)."""
    excess = used_bytes(conn) - target
    freed = 0
    first = last = None
    count = readings = 0
    # The record sizes are estimates (blob bytes plus row overhead); good enough to pick how
    # many of the oldest to drop in one go.
    rows = conn.execute(
        "SELECT seq, n, length(tag_ids) + length(vals) + length(quality) + length(ts) + 48 "
        "FROM telemetry ORDER BY seq"
    )
    for seq, n, size in rows:
        if freed >= excess:
            break
        first = int(seq) if first is None else first
        last, freed, count, readings = int(seq), freed + int(size), count + 1, readings + int(n)
    rows.close()
    if first is None or last is None:
        return (0, 0), 0
    conn.execute("DELETE FROM telemetry WHERE seq <= ?", (last,))
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

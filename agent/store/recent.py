"""`RecentTelemetry`: the telemetry rows of the writer's last commits, kept in memory so the
forwarder's live reads need no SQL (docs/decisions/0008-group-commit-and-live-forwarding.md).

At plant rates a lane reads back, within milliseconds, the record the writer just committed:
two queries, each a read transaction (locks, the WAL index, pages another connection changed).
The writer keeps the rows it inserted, with the batches they were encoded from, once their
commit succeeded, and `run` answers a read from them when it can give exactly what the SQL
read would: the rows after `after` are here from `after + 1` on, one seq after the other.
Anything else (a lane behind the window, a record written behind the writer's back, rows a
bound deleted) is `None`: read the file.

A read of one record (a lane that keeps up reads each commit's one record) is its batch's own
columns, not decoded again from the row's blobs: the encoding is exact (agent/store/blob.py),
so both give the same run, and the decoding was a dozen numpy calls a record.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from itertools import islice

import numpy as np

from agent.model import ReadingBatch
from agent.store.blob import StoredRow, TelemetryRun, decode_run

# A telemetry row as the writer inserted it: (seq, source, n, ts_first_ns, ts_last_ns, tag_ids,
# vals, quality, ts, stored_ns), the table's columns in its INSERT's order.
TelemetryRow = tuple[int, str, int, int, int, bytes, bytes, bytes, bytes, int]

# The records of the last `RECENT_COMMITS` commits, at most `RECENT_BYTES` of them (rows and
# batches): a lane that keeps up reads the last commit or two (a send waiting for its
# acknowledgement); one further behind reads the file, as before. At W1 (one 13 KB row and its
# 13 KB batch a commit) that is ~210 KB.
RECENT_COMMITS = 8
RECENT_BYTES = 1 << 20  # a few commits even of 20,000 readings
_ROW_BYTES = 400  # a row's Python objects beside its blobs (the tuple, ints, four bytes)


def _size(entry: tuple[TelemetryRow, ReadingBatch]) -> int:
    """What a kept record holds: its row's blobs and its batch's columns (about as many bytes
    again), and the objects around them."""
    row, batch = entry
    blobs = len(row[5]) + len(row[6]) + len(row[7]) + len(row[8])
    columns = batch.tag_ids.nbytes + batch.values.nbytes + batch.quality.nbytes
    return blobs + columns + batch.ts_ns.nbytes + _ROW_BYTES


class RecentTelemetry:
    """The telemetry rows of the last `max_commits` commits, consecutive seqs, at most
    `max_bytes` of them.

    The writer thread `add`s and `clear`s, the forwarder's thread asks `run`: a lock keeps the
    window whole for either. The rows are always consecutive: rows that do not follow the last
    one (a retry after a failed commit takes new seqs) start the window again.
    """

    def __init__(self, max_bytes: int = RECENT_BYTES, max_commits: int = RECENT_COMMITS) -> None:
        self._max_bytes = max_bytes
        self._max_commits = max_commits
        self._lock = threading.Lock()
        self._rows: deque[tuple[TelemetryRow, ReadingBatch]] = deque()  # and its batch
        self._commits: deque[int] = deque()  # rows per commit held, oldest first
        self._bytes = 0
        self.served = 0  # reads answered from memory (the tests count them)

    def add(self, rows: Sequence[TelemetryRow], batches: Sequence[ReadingBatch]) -> None:
        """Keep the rows of a commit that succeeded and the batches they were encoded from, in
        the same order (writer thread), dropping the oldest beyond the bound."""
        if not rows:
            return
        with self._lock:
            kept, commits = self._rows, self._commits
            if kept and rows[0][0] != kept[-1][0][0] + 1:
                self._clear()
            for entry in zip(rows, batches, strict=True):
                kept.append(entry)
                self._bytes += _size(entry)
            commits.append(len(rows))
            if len(commits) > self._max_commits:
                for _ in range(commits.popleft()):
                    self._bytes -= _size(kept.popleft())
            while kept and self._bytes > self._max_bytes:
                self._bytes -= _size(kept.popleft())
                commits[0] -= 1
                if not commits[0]:
                    commits.popleft()

    def clear(self) -> None:
        """Forget every row: the file may no longer hold them (writer thread, before a commit
        that applies the bounds)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._rows.clear()
        self._commits.clear()
        self._bytes = 0

    def run(self, after: int, limit: int) -> TelemetryRun | None:
        """What `StoreReader.read_telemetry_run(after, limit)` returns, when the rows from
        `after + 1` on are here; None when they are not (read the file)."""
        with self._lock:
            kept = self._rows
            if not kept or limit <= 0:
                return None
            start = after + 1 - kept[0][0][0]
            if start < 0 or start >= len(kept):
                return None
            entries = list(islice(kept, start, start + limit))
        self.served += 1
        if len(entries) == 1:
            seq, batch = entries[0][0][0], entries[0][1]
            return _columns(seq, batch)
        return decode_run(*stored_rows([row for row, _ in entries]))


def _columns(seq: int, batch: ReadingBatch) -> TelemetryRun:
    """The run of one record, from the columns of the batch its row was encoded from: what
    `decode_run` gives for the row (one stamp, or one per reading when its `ts` holds more)."""
    stamps = batch.ts_ns
    per_reading = stamps.shape[0] > 1
    return TelemetryRun(
        seqs=np.array([seq], dtype=np.int64),
        sources=(batch.source,),
        offsets=np.array([0, len(batch)], dtype=np.int64),
        tag_ids=batch.tag_ids,
        values=batch.values,
        quality=batch.quality,
        ts_ns=stamps[:1],  # the first stamp, as the row decodes
        reading_ts_ns=stamps if per_reading else None,
        stamped=np.ones(1, dtype=np.bool_) if per_reading else None,
    )


def stored_rows(rows: list[TelemetryRow]) -> tuple[list[StoredRow], tuple[str, bytes, bytes]]:
    """`rows` as `read_telemetry_run` selects them for `decode_run`: source, tag_ids and
    quality None where they equal the first row's, `ts` None where the row has one stamp."""
    first = rows[0]
    source0, tags0, quality0 = first[1], first[5], first[7]
    shaped: list[StoredRow] = [
        (
            seq,
            None if source == source0 else source,
            ts_first,
            None if tags == tags0 else tags,
            vals,
            None if quality == quality0 else quality,
            None if len(ts) == 8 else ts,
        )
        for seq, source, _, ts_first, _, tags, vals, quality, ts, _ in rows
    ]
    return shaped, (source0, tags0, quality0)

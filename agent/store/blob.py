"""A telemetry record: one ReadingBatch as compact little-endian blobs, and back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.errors import StoreError
from agent.model import ReadingBatch

# ---------------------------------------------------------------------------------------------
# Pure encoding of a batch into the telemetry record and back

_I32 = np.dtype("<i4")
_F64 = np.dtype("<f8")
_I64 = np.dtype("<i8")


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    source: str
    n: int
    ts_first_ns: int
    ts_last_ns: int
    tag_ids: bytes
    vals: bytes
    quality: bytes
    ts: bytes  # 8 bytes when the batch has one timestamp, 8 * n otherwise


def encode_batch(batch: ReadingBatch) -> EncodedBatch:
    """The columns as little-endian blobs (explicit byte order: the file may change machines)."""
    ts = batch.ts_ns
    if ts.size == 1:  # one stamp for the batch (the usual poll): no reductions over it
        first = last = int(ts[0])
    else:
        first, last = (int(ts.min()), int(ts.max())) if ts.size else (0, 0)
    return EncodedBatch(
        source=batch.source,
        n=len(batch),
        ts_first_ns=first,
        ts_last_ns=last,
        tag_ids=batch.tag_ids.astype(_I32, copy=False).tobytes(),
        vals=batch.values.astype(_F64, copy=False).tobytes(),
        quality=batch.quality.tobytes(),
        ts=ts.astype(_I64, copy=False).tobytes(),
    )


def decode_batch(
    source: str, n: int, tag_ids: bytes, vals: bytes, quality: bytes, ts: bytes
) -> ReadingBatch:
    """Inverse of `encode_batch`; raises StoreError when the blobs do not fit together."""
    if (
        len(tag_ids) != 4 * n
        or len(vals) != 8 * n
        or len(quality) != n
        or len(ts) not in (8, 8 * n)
    ):
        raise StoreError(f"telemetry record of {n} readings has blobs of the wrong length")
    return ReadingBatch(
        source=source,
        tag_ids=np.frombuffer(tag_ids, dtype=_I32).astype(np.int32),
        values=np.frombuffer(vals, dtype=_F64).astype(np.float64),
        quality=np.frombuffer(quality, dtype=np.uint8).copy(),
        ts_ns=np.frombuffer(ts, dtype=_I64).astype(np.int64),
    )


# ---------------------------------------------------------------------------------------------
# Many records at once, column by column (the forwarder's read path)


@dataclass(frozen=True, slots=True)
class TelemetryRun:
    """Consecutive telemetry records read in one query, their columns joined end to end.

    Record `i` holds readings `offsets[i]:offsets[i + 1]` of `tag_ids`, `values` and `quality`.
    `ts_ns` is one stamp per record (its first reading's); `reading_ts_ns` is one per reading,
    present only when some record carries a stamp per reading. Built with one `frombuffer` per
    column instead of four numpy calls per record: at 50 readings a record that is the
    difference between 100k and 500k records a second read.
    """

    seqs: npt.NDArray[np.int64]
    sources: tuple[str, ...]
    offsets: npt.NDArray[np.int64]  # len(seqs) + 1
    tag_ids: npt.NDArray[np.int32]
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    ts_ns: npt.NDArray[np.int64]
    reading_ts_ns: npt.NDArray[np.int64] | None = None
    # Per record: stored with one stamp per reading (only with `reading_ts_ns`).
    stamped: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return int(self.seqs.shape[0])

    def slice(self, start: int, stop: int) -> TelemetryRun:
        """Records `start:stop` (clamped, step 1); the columns are views, not copies."""
        start, stop, _ = slice(start, stop).indices(len(self))
        stop = max(start, stop)
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return TelemetryRun(
            seqs=self.seqs[start:stop],
            sources=self.sources[start:stop],
            offsets=self.offsets[start : stop + 1] - a,
            tag_ids=self.tag_ids[a:b],
            values=self.values[a:b],
            quality=self.quality[a:b],
            ts_ns=self.ts_ns[start:stop],
            reading_ts_ns=None if self.reading_ts_ns is None else self.reading_ts_ns[a:b],
            stamped=None if self.stamped is None else self.stamped[start:stop],
        )

    def select(self, keep: npt.NDArray[np.bool_]) -> TelemetryRun:
        """The records where `keep` (one bool per record) is true."""
        if bool(keep.all()):
            return self
        counts = np.diff(self.offsets)
        rows = np.repeat(keep, counts)
        offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(counts[keep], out=offsets[1:])
        return TelemetryRun(
            seqs=self.seqs[keep],
            sources=tuple(s for s, k in zip(self.sources, keep.tolist(), strict=True) if k),
            offsets=offsets,
            tag_ids=self.tag_ids[rows],
            values=self.values[rows],
            quality=self.quality[rows],
            ts_ns=self.ts_ns[keep],
            reading_ts_ns=None if self.reading_ts_ns is None else self.reading_ts_ns[rows],
            stamped=None if self.stamped is None else self.stamped[keep],
        )

    def batch(self, i: int) -> ReadingBatch:
        """Record `i` as the `ReadingBatch` it was stored from."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        if self.reading_ts_ns is None or self.stamped is None or not self.stamped[i]:
            ts = self.ts_ns[i : i + 1]
        else:
            ts = self.reading_ts_ns[a:b]
        return ReadingBatch(
            self.sources[i], self.tag_ids[a:b], self.values[a:b], self.quality[a:b], ts
        )


# A stored record as the run reader selects it: (seq, source, ts_first_ns, tag_ids, vals,
# quality, ts). `source`, `tag_ids` and `quality` are None where they equal the run's reference
# record (`decode_run`'s `same`), `ts` is None where the record has one stamp (`ts_first_ns`).
# Most records of a backlog repeat the same source, tags and qualities: leaving them in SQLite
# saves three Python objects a row, a third of the cost of reading a run.
StoredRow = tuple[int, str | None, int, bytes | None, bytes, bytes | None, bytes | None]


def decode_run(rows: list[StoredRow], same: tuple[str, bytes, bytes] | None = None) -> TelemetryRun:
    """Rows (`StoredRow`) joined into one run; `same` is the (source, tag_ids, quality) that a
    None in those columns stands for. Raises StoreError when the blobs do not fit together."""
    n_rows = len(rows)
    if not n_rows:
        return _empty_run()
    # One pass over the rows into columns (tuples), then no Python work per row where the
    # column repeats the reference or has one stamp per record (the usual backlog).
    seqs, sources, firsts, tag_col, val_col, quality_col, ts_col = zip(*rows, strict=True)
    source0, tags0, quality0 = same if same is not None else ("", None, None)
    same_tags, same_quality = tag_col.count(None), quality_col.count(None)
    if (same_tags and tags0 is None) or (same_quality and quality0 is None):
        raise StoreError("telemetry records that repeat a reference that was not given")
    if same_quality == n_rows:
        assert quality0 is not None
        counts = np.full(n_rows, len(quality0), dtype=np.int64)
        quality = np.tile(np.frombuffer(quality0, dtype=np.uint8), n_rows)
    else:
        qualities = [quality0 if q is None else q for q in quality_col]
        counts = np.fromiter(map(len, qualities), dtype=np.int64, count=n_rows)  # type: ignore[arg-type]
        quality = np.frombuffer(b"".join(qualities), dtype=np.uint8).copy()  # type: ignore[arg-type]
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if same_tags == n_rows:
        assert tags0 is not None
        tag_ids = np.tile(np.frombuffer(tags0, dtype=_I32).astype(np.int32), n_rows)
    else:
        tag_blob = b"".join([tags0 if t is None else t for t in tag_col])  # type: ignore[misc]
        if len(tag_blob) != 4 * total:
            raise StoreError("telemetry records with blobs of the wrong length")
        tag_ids = np.frombuffer(tag_blob, dtype=_I32).astype(np.int32)
    val_blob = b"".join(val_col)
    if tag_ids.shape[0] != total or len(val_blob) != 8 * total:
        raise StoreError("telemetry records with blobs of the wrong length")
    first = np.array(firsts, dtype=np.int64)
    per_reading = per_row = None
    if ts_col.count(None) != n_rows:
        per_row = np.array([ts is not None for ts in ts_col], dtype=np.bool_)
        parts = []
        for i, (n, ts) in enumerate(zip(counts.tolist(), ts_col, strict=True)):
            if ts is None:
                parts.append(np.full(n, first[i], dtype=np.int64))
                continue
            if len(ts) != 8 * n or n == 0:
                raise StoreError("a telemetry record has a timestamp blob of the wrong length")
            stamps = np.frombuffer(ts, dtype=_I64).astype(np.int64)
            first[i] = stamps[0]
            parts.append(stamps)
        per_reading = np.concatenate(parts)
    return TelemetryRun(
        seqs=np.array(seqs, dtype=np.int64),
        sources=(source0,) * n_rows
        if sources.count(None) == n_rows
        else tuple(source0 if s is None else s for s in sources),
        offsets=offsets,
        tag_ids=tag_ids,
        values=np.frombuffer(val_blob, dtype=_F64).astype(np.float64),
        quality=quality,
        ts_ns=first,
        reading_ts_ns=per_reading,
        stamped=per_row,
    )


def _empty_run() -> TelemetryRun:
    return TelemetryRun(
        seqs=np.zeros(0, dtype=np.int64),
        sources=(),
        offsets=np.zeros(1, dtype=np.int64),
        tag_ids=np.zeros(0, dtype=np.int32),
        values=np.zeros(0, dtype=np.float64),
        quality=np.zeros(0, dtype=np.uint8),
        ts_ns=np.zeros(0, dtype=np.int64),
    )

"""A telemetry record: one ReadingBatch as compact little-endian blobs, and back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    return EncodedBatch(
        source=batch.source,
        n=len(batch),
        ts_first_ns=int(ts.min()) if ts.size else 0,
        ts_last_ns=int(ts.max()) if ts.size else 0,
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

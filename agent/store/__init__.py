"""The SQLite log: every reading, event and gap record, sequenced, bounded and crash-safe.

One file, `<data_dir>/lineside.db`, in WAL mode. Telemetry is stored as one record per
`ReadingBatch` (the columns as compact blobs); `benchmarks/store_layout.py` measured this against
one row per reading and the blob won by a wide margin (see benchmarks/README.md, "Store layout").
Sequence numbers are per stream (`telemetry`, `events`, `gaps`) and come from
`INTEGER PRIMARY KEY AUTOINCREMENT`, assigned inside the insert transaction, so a crash can
neither leave a hole nor reuse a number, even after every row was deleted.

Two objects:

- `Store` opens, checks and migrates the file, registers tags and sinks, keeps sink cursors and
  small values of their own (`get_meta`/`set_meta`: a Sparkplug sink's bdSeq) and serves the
  readers (`read_telemetry`, `read_events`, `read_gaps`, `stats`) on a read connection of its
  own, so WAL readers never block the writer.
- `StoreWriter` owns the one write connection in a dedicated thread
  (docs/decisions/0001-store-writer-thread.md): the event loop submits without blocking, the
  thread commits one transaction per flush interval or per N pending readings, and enforces the
  bounds every so often.

Modules: `schema` (file, migrations, connections), `blob` (the telemetry record), `sqlite_log`
(`Store`), `writer` (`StoreWriter`), `bounds` (the age and size bounds, run by the writer).
"""

from agent.store.blob import EncodedBatch, TelemetryRun, decode_batch, decode_run, encode_batch
from agent.store.schema import (
    DB_NAME,
    MIGRATIONS,
    STREAMS,
    Clock,
    Migration,
    Synchronous,
    connect,
    db_path,
    migrate,
    schema_version,
)
from agent.store.sqlite_log import (
    Gap,
    Quarantined,
    Store,
    StoredBatch,
    StoreStats,
    StreamStats,
    TagInfo,
)
from agent.store.writer import LATENCY_BUCKETS_S, StoreWriter, WriterStats

__all__ = [
    "DB_NAME",
    "LATENCY_BUCKETS_S",
    "MIGRATIONS",
    "STREAMS",
    "Clock",
    "EncodedBatch",
    "Gap",
    "Migration",
    "Quarantined",
    "Store",
    "StoreStats",
    "StoreWriter",
    "StoredBatch",
    "StreamStats",
    "Synchronous",
    "TagInfo",
    "TelemetryRun",
    "WriterStats",
    "connect",
    "db_path",
    "decode_batch",
    "decode_run",
    "encode_batch",
    "migrate",
    "schema_version",
]

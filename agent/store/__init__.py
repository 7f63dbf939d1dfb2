"""The SQLite log: every reading, event and gap record, sequenced, bounded and crash-safe.

One file, `<data_dir>/lineside.db`, in WAL mode. Telemetry is stored as one record per
`ReadingBatch` (the columns as compact blobs); `benchmarks/store_layout.py` measured this against
one row per reading and the blob won by a wide margin (see benchmarks/README.md, "Store layout").
Sequence numbers are per stream (`telemetry`, `events`, `gaps`) and come from
`INTEGER PRIMARY KEY AUTOINCREMENT`, assigned inside the insert transaction, so a crash can
neither leave a hole nor reuse a number, even after every row was deleted.

Two objects:

- `StoreReader` owns every read (`read_telemetry`, `read_events`, `read_gaps`, `stats`, the
  KPI replay's and export's queries) on a connection of its own, so WAL readers never block
  the writer; `StoreReader.open(data_dir)` is the read-only store of `status`, `export`, `oee`
  and `report`, and `find_store` the one "no store here" check. Nothing outside
  `agent/store/` names a table, an index or opens the file.
- `Store` (a `StoreReader`) opens, checks and migrates the file, registers tags and sinks and
  keeps small values of their own (`get_meta`/`set_meta`: a Sparkplug sink's bdSeq).
- `StoreWriter` owns the one write connection in a dedicated thread
  (docs/decisions/0001-store-writer-thread.md): the event loop submits without blocking (a
  queue append, one wake-up per commit), the thread group-commits (at once when idle, at most
  one commit per flush interval under load;
  docs/decisions/0008-group-commit-and-live-forwarding.md), calls its commit listeners (the
  forwarder) after each commit, and enforces the bounds every so often.

Modules: `schema` (file, migrations, connections), `blob` (the telemetry record), `reader`
(`StoreReader`, the records it returns), `sqlite_log` (`Store`), `writer` (`StoreWriter` and its
thread), `pending` (the writer's queue), `schedule` (when the writer commits), `alarm` (the
store-full state), `transaction` (the SQL of one commit), `figures` (the writer's figures),
`bounds` (the age and size bounds, run by the writer), `recent` (the telemetry rows of the
writer's last commits: the forwarder's live reads are answered from them when they hold the
records asked for, one seq after the other; else the read goes to the file).
"""

from agent.store.blob import EncodedBatch, TelemetryRun, decode_batch, decode_run, encode_batch
from agent.store.figures import LATENCY_BUCKETS_S, WriterStats
from agent.store.reader import (
    Gap,
    NoStore,
    Quarantined,
    StoredBatch,
    StoreReader,
    StoreStats,
    StreamStats,
    find_store,
)
from agent.store.recent import RecentTelemetry
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
from agent.store.sqlite_log import Store
from agent.store.writer import StoreWriter

__all__ = [
    "DB_NAME",
    "LATENCY_BUCKETS_S",
    "MIGRATIONS",
    "STREAMS",
    "Clock",
    "EncodedBatch",
    "Gap",
    "Migration",
    "NoStore",
    "Quarantined",
    "RecentTelemetry",
    "Store",
    "StoreReader",
    "StoreStats",
    "StoreWriter",
    "StoredBatch",
    "StreamStats",
    "Synchronous",
    "TelemetryRun",
    "WriterStats",
    "connect",
    "db_path",
    "decode_batch",
    "decode_run",
    "encode_batch",
    "find_store",
    "migrate",
    "schema_version",
]

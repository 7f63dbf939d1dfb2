"""Telemetry layout in SQLite: one row per reading against one blob record per batch.

    python -m benchmarks.store_layout [--flushes 60] [--dir DIR]

Both layouts are written the same way the store writes (one transaction per flush,
`executemany` with one prepared statement, WAL, sequence numbers from AUTOINCREMENT), on the
same disk in the same run, for:

- `W1`: 100 ms of W1 per flush (10 PLCs × 100 float32 tags at 10 Hz = 10 batches of 100);
- `W2`: a larger volume per flush (10 batches of 1000 readings);

each with `synchronous` FULL and NORMAL. Reported per case: readings/s written, ms per flush,
bytes in use per reading, and read-back speed for export (readings/s turned into one Python
tuple per reading, which is what `lineside export` needs). Ratios blob / rows are the result;
absolute figures depend on the disk. JSON goes to benchmarks/results/store_layout.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from agent.model import Quality, ReadingBatch
from agent.store import connect, decode_batch, encode_batch, migrate

RESULTS = Path(__file__).parent / "results" / "store_layout.json"
WORKLOADS = {"W1": (10, 100), "W2": (10, 1000)}  # (batches per flush, readings per batch)


@dataclass(frozen=True, slots=True)
class Case:
    layout: str
    workload: str
    synchronous: str
    readings: int
    write_readings_per_s: float
    ms_per_flush: float
    bytes_per_reading: float
    read_readings_per_s: float


def make_flushes(flushes: int, batches: int, size: int) -> list[list[ReadingBatch]]:
    rng = np.random.default_rng(7)
    t0 = 1_700_000_000_000_000_000
    out = []
    for f in range(flushes):
        out.append(
            [
                ReadingBatch.from_columns(
                    f"plc{b}",
                    np.arange(b * size, (b + 1) * size),
                    # float32 tags: values carry float32 precision, as polled
                    rng.normal(50, 10, size).astype(np.float32),
                    Quality.GOOD,
                    t0 + f * 100_000_000 + b,
                )
                for b in range(batches)
            ]
        )
    return out


def _rows_schema(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE readings (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts_ns INTEGER NOT NULL, "
        "tag_id INTEGER NOT NULL, value REAL NOT NULL, quality INTEGER NOT NULL)"
    )
    conn.execute("CREATE INDEX readings_ts ON readings (ts_ns)")


def write_rows(conn: sqlite3.Connection, flush: list[ReadingBatch]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for b in flush:
        conn.executemany(
            "INSERT INTO readings (ts_ns, tag_id, value, quality) VALUES (?, ?, ?, ?)",
            zip(
                b.timestamps().tolist(),
                b.tag_ids.tolist(),
                b.values.tolist(),
                b.quality.tolist(),
                strict=True,
            ),
        )
    conn.execute("COMMIT")


def write_blobs(conn: sqlite3.Connection, flush: list[ReadingBatch]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    encoded = [encode_batch(b) for b in flush]
    conn.executemany(
        "INSERT INTO telemetry (source, n, ts_first_ns, ts_last_ns, tag_ids, vals, quality, ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (e.source, e.n, e.ts_first_ns, e.ts_last_ns, e.tag_ids, e.vals, e.quality, e.ts)
            for e in encoded
        ],
    )
    conn.execute("COMMIT")


def read_rows(conn: sqlite3.Connection) -> int:
    count = 0
    for _ in conn.execute("SELECT ts_ns, tag_id, value, quality FROM readings ORDER BY seq"):
        count += 1
    return count


def read_blobs(conn: sqlite3.Connection) -> int:
    count = 0
    rows = conn.execute("SELECT source, n, tag_ids, vals, quality, ts FROM telemetry ORDER BY seq")
    for record in rows:
        b = decode_batch(*record)
        for _ in zip(
            b.timestamps().tolist(),
            b.tag_ids.tolist(),
            b.values.tolist(),
            b.quality.tolist(),
            strict=True,
        ):
            count += 1
    return count


def used_bytes(conn: sqlite3.Connection) -> int:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


def run_case(
    where: Path, layout: str, workload: str, synchronous: str, flushes: list[list[ReadingBatch]]
) -> Case:
    path = where / f"{layout}-{workload}-{synchronous}.db"
    conn = connect(path, "FULL" if synchronous == "FULL" else "NORMAL")
    if layout == "rows":
        _rows_schema(conn)
        write, read = write_rows, read_rows
    else:
        migrate(conn)
        write, read = write_blobs, read_blobs
    readings = sum(len(b) for f in flushes for b in f)
    started = time.perf_counter()
    for flush in flushes:
        write(conn, flush)
    elapsed = time.perf_counter() - started
    size = used_bytes(conn)
    started = time.perf_counter()
    assert read(conn) == readings
    read_elapsed = time.perf_counter() - started
    conn.close()
    return Case(
        layout=layout,
        workload=workload,
        synchronous=synchronous,
        readings=readings,
        write_readings_per_s=readings / elapsed,
        ms_per_flush=1000 * elapsed / len(flushes),
        bytes_per_reading=size / readings,
        read_readings_per_s=readings / read_elapsed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--flushes", type=int, default=60, help="transactions per case")
    parser.add_argument("--dir", type=Path, default=None, help="where the test files go")
    args = parser.parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="store-layout-", dir=args.dir))
    cases: list[Case] = []
    try:
        for workload, (batches, size) in WORKLOADS.items():
            flushes = make_flushes(args.flushes, batches, size)
            for synchronous in ("FULL", "NORMAL"):
                for layout in ("rows", "blob"):
                    cases.append(run_case(where, layout, workload, synchronous, flushes))
    finally:
        shutil.rmtree(where, ignore_errors=True)

    def ratio(workload: str, synchronous: str, field: str) -> float:
        pick = {
            c.layout: asdict(c)[field]
            for c in cases
            if (c.workload, c.synchronous) == (workload, synchronous)
        }
        return float(pick["blob"] / pick["rows"])

    ratios = [
        {
            "workload": w,
            "synchronous": s,
            "write_speedup": ratio(w, s, "write_readings_per_s"),
            "flush_time_ratio": ratio(w, s, "ms_per_flush"),
            "bytes_ratio": ratio(w, s, "bytes_per_reading"),
            "read_speedup": ratio(w, s, "read_readings_per_s"),
        }
        for w in WORKLOADS
        for s in ("FULL", "NORMAL")
    ]
    print(
        f"{'layout':6} {'load':4} {'sync':6} {'write r/s':>12} {'ms/flush':>9} "
        f"{'B/reading':>10} {'read r/s':>12}"
    )
    for c in cases:
        print(
            f"{c.layout:6} {c.workload:4} {c.synchronous:6} {c.write_readings_per_s:12,.0f} "
            f"{c.ms_per_flush:9.2f} {c.bytes_per_reading:10.1f} {c.read_readings_per_s:12,.0f}"
        )
    print("\nblob / rows:")
    for r in ratios:
        print(
            f"  {r['workload']} {r['synchronous']:6} write ×{r['write_speedup']:.1f}, "
            f"flush time ×{r['flush_time_ratio']:.3f}, bytes ×{r['bytes_ratio']:.2f}, "
            f"read ×{r['read_speedup']:.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "store_layout",
                "flushes_per_case": args.flushes,
                "workloads": {
                    k: {"batches_per_flush": b, "readings_per_batch": n}
                    for k, (b, n) in WORKLOADS.items()
                },
                "python": sys.version.split()[0],
                "sqlite": sqlite3.sqlite_version,
                "machine": platform.machine(),
                "cases": [asdict(c) for c in cases],
                "ratios_blob_over_rows": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

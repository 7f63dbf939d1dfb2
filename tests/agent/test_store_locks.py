"""The store's checks never cost a running writer its locks.

POSIX advisory locks belong to the process and go when any descriptor of the file is closed:
a check that opened `lineside.db` itself (to read its header, say) while the agent's writer had
it open would drop the writer's SHARED lock, and another process (`lineside status`) closing the
store would then checkpoint it and delete the -wal under the writer: a damaged store. Found by
the full-disk soak test; the checks look at the file with stat() only and leave reading to
SQLite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.export import export_readings
from agent.model import Quality, ReadingBatch
from agent.store import Store, StoreWriter, db_path
from agent.store.schema import check_path, check_store
from agent.tags import Tag

OTHER_PROCESS = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM telemetry").fetchone()
conn.close()  # the last connection to the file checkpoints it and deletes the -wal
"""


def test_checks_in_the_writers_process_leave_its_locks(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_tags([Tag(path="s/a/l/m/t", machine="m", name="t")])
    writer = StoreWriter(tmp_path)
    try:
        for i in range(20):
            batch = ReadingBatch.from_columns("plc", [1], [i], Quality.GOOD, 10**18 + i)
            writer.submit_readings(batch)
        assert writer.flush_blocking(10)
        db = db_path(tmp_path)
        wal = Path(f"{db}-wal")
        assert wal.stat().st_size > 0
        # What a reader does in the agent's own process (the KPI resume, tests, tools).
        assert check_path(db) and check_store(db)
        assert len(list(export_readings(tmp_path))) == 20
        Store(tmp_path).close()
        subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(db)], check=True, timeout=60)
        assert wal.exists() and wal.stat().st_size > 0  # the writer still holds the store
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [99], Quality.GOOD, 1))
        assert writer.flush_blocking(10)
    finally:
        writer.close()
    with Store(tmp_path) as store:
        assert len(store.read_telemetry(0, 100)) == 21

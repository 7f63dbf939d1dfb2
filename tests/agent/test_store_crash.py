"""kill -9 in the middle of writing: a real child process, a real SIGKILL, then reopen."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from agent.store import Store, db_path

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from agent.model import Quality, ReadingBatch
    from agent.store import Store, StoreWriter

    Store(sys.argv[1]).close()
    writer = StoreWriter(sys.argv[1], synchronous="FULL", flush_interval=0.005)
    i = 0
    while True:
        for _ in range(7):
            values = np.full(50, float(i))
            writer.submit_readings(
                ReadingBatch.from_columns("plc", np.arange(50), values, Quality.GOOD, i)
            )
            i += 1
        writer.flush_blocking()
        # Only now is everything up to this seq committed (synchronous FULL): say so.
        print(writer.statistics().last_seq["telemetry"], flush=True)
    """
)


def test_every_batch_reported_committed_survives_sigkill(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert child.stdout is not None
    reported: list[int] = []
    try:
        for line in child.stdout:
            reported.append(int(line))
            if len(reported) >= 40:
                # Kill while the writer keeps going: the child has batches in flight.
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert len(reported) >= 40, "the child died before it committed anything"

    conn = sqlite3.connect(db_path(tmp_path))
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()
    with Store(tmp_path) as store:  # opens: quick_check passes, recovery from the WAL done
        stored = store.read_telemetry(0, 1_000_000)
    seqs = [s.seq for s in stored]
    assert seqs == sorted(set(seqs))  # strictly increasing
    assert seqs == list(range(1, len(seqs) + 1))  # and gap-free: nothing was dropped
    assert seqs[-1] >= reported[-1]  # every batch reported committed is there
    # Each record holds the poll it was given: batch k was poll k - 1, whole and in order.
    for s in stored:
        assert np.all(s.batch.values == s.seq - 1) and len(s.batch) == 50

"""`lineside status` and `lineside quarantine` on a real store."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.model import Quality, ReadingBatch
from agent.status_file import write_status
from agent.store import Store, StoreWriter
from agent.tags import Tag


def lineside(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
    )


def make_store(data: Path) -> None:
    with Store(data) as store:
        store.register_tags([Tag(path="s/a/l/m/t", machine="m", name="t")])
        store.register_sinks(["uns", "mes"])
    writer = StoreWriter(data)
    for i in range(5):
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [i], Quality.GOOD, 10**18))
    writer.submit_ack("uns", "telemetry", 3)
    writer.submit_quarantine("mes", "telemetry", 2, "422: unknown tag")
    assert writer.flush_blocking(10)
    writer.close()


@pytest.mark.slow
def test_status_shows_backlog_and_quarantine(tmp_path: Path) -> None:
    make_store(tmp_path)
    write_status(
        tmp_path,
        {
            "written_ns": 1,
            "sources": {"plc": {"link": {"state": "connected"}}},
            "sinks": {"mes": {"forward": {"state": "failing", "last_error": "HTTP 503"}}},
            "store": {"dropped_readings": 12, "store_full": True},
        },
    )
    result = lineside("status", "--data", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["store"]["streams"]["telemetry"] == {"depth": 5, "last_seq": 5}
    assert report["sinks"]["uns"]["backlog"]["telemetry"] == 2
    assert report["sinks"]["mes"]["backlog"]["telemetry"] == 5
    assert report["sinks"]["mes"]["quarantined"] == 1
    assert report["sinks"]["mes"]["last_error"] == "HTTP 503"
    assert report["sinks"]["uns"]["oldest_unsent_age_s"]["telemetry"] > 0
    assert report["agent"]["sources"]["plc"]["state"] == "connected"
    table = lineside("status", "--data", str(tmp_path))
    assert table.returncode == 0
    assert "agent: not running" in table.stdout
    assert "HTTP 503" in table.stdout
    assert "readings dropped by the store's bounds: 12" in table.stdout
    assert "ALARM: the store is full" in table.stdout
    assert report["agent"]["store_full"] is True


@pytest.mark.slow
def test_quarantine_list_and_retry(tmp_path: Path) -> None:
    make_store(tmp_path)
    listed = lineside("quarantine", "list", "--data", str(tmp_path))
    assert listed.returncode == 0
    assert "mes telemetry seq 2: 422: unknown tag" in listed.stdout
    retried = lineside("quarantine", "retry", "--data", str(tmp_path), "--sink", "mes")
    assert "1 records will be sent again" in retried.stdout
    entries = json.loads(lineside("quarantine", "list", "--data", str(tmp_path), "--json").stdout)
    assert entries[0]["retry"] is True


@pytest.mark.slow
def test_status_and_quarantine_bad_input(tmp_path: Path) -> None:
    result = lineside("status", "--data", str(tmp_path))
    assert result.returncode == 2
    assert "no store here" in result.stderr
    result = lineside("quarantine", "drop", "--data", str(tmp_path))
    assert result.returncode == 2
    assert "unknown action 'drop'; choose list or retry" in result.stderr
    result = lineside("status")
    assert result.returncode == 2
    assert "give either --config FILE or --data DIR" in result.stderr

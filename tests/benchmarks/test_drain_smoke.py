"""The forwarding benchmark runs end to end at tiny sizes (it never asserts speed), its backlog
is what it says, and its parts refuse bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.lane import read_records
from agent.sink import TelemetryRecord
from agent.store import Store
from benchmarks import backlog, drain, drain_contenders
from benchmarks.http_receiver import start_receiver


def test_backlog_holds_the_records_asked_for(tmp_path: Path) -> None:
    backlog.fill(tmp_path, 30, 7)
    with Store(tmp_path) as store:
        records = read_records(store, "telemetry", 0, 100)
        assert len(store.tags()) == 7
    assert [r.seq for r in records] == list(range(1, 31))
    first, last = records[0], records[-1]
    assert isinstance(first, TelemetryRecord) and isinstance(last, TelemetryRecord)
    assert len(first.batch) == 7 and first.batch.ts_ns.shape == (1,)
    # 100 ms apart, and old enough to be a backlog for the forwarder's live window.
    assert int(last.batch.ts_ns[0] - first.batch.ts_ns[0]) == 29 * backlog.POLL_SPACING_NS
    assert first.batch.values.tolist() != last.batch.values.tolist()


@pytest.mark.parametrize(("records", "tags"), [(0, 5), (5, 0), (-1, 5)])
def test_backlog_refuses_an_empty_fill(tmp_path: Path, records: int, tags: int) -> None:
    with pytest.raises(ValueError):
        backlog.fill(tmp_path, records, tags)


def test_http_receiver_counts_what_it_got() -> None:
    import httpx

    receiver = start_receiver()
    try:
        response = httpx.post(receiver.url, content=b"x" * 1000)
        assert response.status_code == 200
        assert receiver.counts() == (1, 1000)
    finally:
        receiver.stop()
    assert not receiver.process.is_alive()


def test_a_contender_needs_a_store_that_holds_the_records(tmp_path: Path) -> None:
    backlog.fill(tmp_path, 3, 2)
    with pytest.raises(RuntimeError, match="holds 3 telemetry records, not 10"):
        drain_contenders.main(["mqtt-paho", "--data-dir", str(tmp_path), "--records", "10"])


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_benchmark_runs_every_contender_and_the_latency_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "drain.json"
    code = drain.main(
        ["--records", "120", "--tags", "5", "--batch", "50", "--latency-duration", "2.5",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["runs"]) == set(drain_contenders.KINDS)
    for kind, run in result["runs"].items():
        assert run["records"] == 120, kind
        assert run["seconds"] > 0 and run["cpu_s"] > 0, kind
    for kind in drain_contenders.FORWARDERS:
        run = result["runs"][kind]
        # Every record acknowledged, the cursor over all of them, the backlog sent historical.
        assert run["cursor"] == 120 and run["historical"] == 120, kind
        assert run["failures"] == 0 and run["quarantined"] == 0, kind
        assert result["ratios"][kind]["rate"] is not None
    # Three POSTs of 50, 50 and 20 records from the sink, and as many from httpx.
    assert result["runs"]["http"]["messages"] == result["runs"]["http-httpx"]["messages"] == 3
    assert result["http_requests_received"] == 6
    latency = result["latency"]
    assert latency["measured"] > 0 and latency["latency_p99_ms"] >= latency["latency_p50_ms"]
    printed = capsys.readouterr().out
    assert "| mqtt-paho |" in printed and "W1 poll-to-broker latency" in printed


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    for argv in (["--records", "0"], ["--batch", "-1"], ["--latency-duration", "0.5"]):
        with pytest.raises(SystemExit) as exit_info:
            drain.main([*argv, "--out", str(out)])
        assert exit_info.value.code == 2
    assert not out.exists()

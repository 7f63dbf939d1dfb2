"""The S7 benchmark runs end to end on a short window (never asserting speed): the request
counts the server saw are the planner's for lineside, one per tag for the naive loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import s7

pytestmark = pytest.mark.timeout(120)


def test_s7_benchmark_runs_and_counts_requests(tmp_path: Path) -> None:
    out = tmp_path / "s7.json"
    code = s7.main(["--workloads", "S7-W1", "--duration", "0.5", "--out", str(out)])
    result = json.loads(out.read_text())["S7-W1"]
    rows = result["contenders"]
    assert set(rows) == {"ours", "naive", "optimizer"}
    assert rows["ours"]["planned_requests"] == 1
    assert rows["ours"]["requests_per_poll"] == 1.0  # 100 REALs: one multi-read
    assert rows["naive"]["requests_per_poll"] == 100.0  # one db_read per tag
    assert rows["optimizer"]["requests_per_poll"] == 5.0  # snap7's 20-variable chunks
    assert all(r["samples"] > 0 for r in rows.values())
    assert result["requests_target_met"] is True
    assert code == 0  # the CPU target is measured and recorded, not asserted, on a shared machine
    assert isinstance(result["cpu_target_met"], bool)

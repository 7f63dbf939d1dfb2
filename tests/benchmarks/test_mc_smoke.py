"""The MC benchmark runs end to end (short, never asserting speed) and counts honestly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import mc
from benchmarks.workloads import WORKLOADS


@pytest.mark.timeout(60)
def test_benchmark_runs_ours_and_naive(tmp_path: Path) -> None:
    out = tmp_path / "mc.json"
    assert mc.main(["--duration", "0.3", "--workloads", "W3", "--out", str(out)]) == 0
    run = json.loads(out.read_text())["runs"]["W3"]
    ours, naive = run["ours"], run["naive"]
    assert ours["samples"] > 0 and ours["good"] == ours["samples"]
    assert ours["requests_per_poll"] == ours["planned_requests_per_poll"] == 1
    assert naive["requests_per_poll"] == 20  # one request per tag
    assert ours["cpu_s_per_1m_samples"] > 0 and naive["cpu_s_per_1m_samples"] > 0


def test_addresses_follow_the_simulators_numbering() -> None:
    tags = {t.name: mc.mc_address(t) for t in WORKLOADS["W3"].tags}
    assert tags["hr90_float64"] == "D90"
    assert tags["ir130_int16"] == "W82"  # W is numbered in hex
    assert tags["di500_bool"] == "X1F4"  # so is X on a Q CPU

"""The end-to-end benchmark runs (tiny durations; it never asserts speed), and its pure parts:
the plant's own count of samples served, the subscriber's reading of both message forms."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from benchmarks import endtoend
from benchmarks.plant import ServedCounter
from benchmarks.subscriber import Arrival, arrivals, delivery
from benchmarks.workloads import contiguous_float32, read_blocks, scattered_mixed


def _head(fc: int, start: int, count: int) -> bytes:
    return bytes((fc,)) + start.to_bytes(2, "big") + count.to_bytes(2, "big")


def test_the_plant_counts_the_tags_a_read_holds_whole() -> None:
    counter = ServedCounter(contiguous_float32(100))  # hr:0..199, two registers each
    assert counter.covered(_head(3, 0, 200)) == 100
    assert counter.covered(_head(3, 0, 125)) == 62  # the 63rd float32 is cut in half
    assert counter.covered(_head(3, 1, 4)) == 1  # hr:2..3 only
    assert counter.covered(_head(4, 0, 125)) == 0  # another table
    assert counter.covered(b"\x03\x00") == 0  # too short to say


def test_the_plant_counts_every_tag_of_a_scattered_plan_once() -> None:
    tags = scattered_mixed()
    counter = ServedCounter(tags)
    heads = [_head(r.function_code, r.start, r.count) for r in read_blocks(tags)]
    assert sum(counter.covered(h) for h in heads) == len(tags)


def test_the_subscriber_reads_single_and_batch_messages() -> None:
    single = orjson.dumps({"agent_id": "a", "ts": 1000, "values": {"x": {}, "y": {}}})
    assert arrivals(5, single) == [Arrival(5, "a", 1000, 2)]
    batch = orjson.dumps({"agent_id": "a", "ts": [1000, 1100], "n": [3, 4], "tag": []})
    assert arrivals(6, batch) == [Arrival(6, "a", 1000, 3), Arrival(6, "a", 1100, 4)]


def test_delivery_keeps_one_agent_and_the_window() -> None:
    ms = 1_000_000
    got = [
        Arrival(500 * ms, "a", 400, 10),  # received before the window: not live, too early
        Arrival(1_500 * ms, "a", 1_480, 10),  # live, but in the warm-up second: not aged
        Arrival(2_600 * ms, "a", 2_580, 10),  # 20 ms old
        Arrival(2_700 * ms, "a", 2_640, 10),  # 60 ms old
        Arrival(2_700 * ms, "b", 2_690, 10),  # another contender
        Arrival(3_100 * ms, "a", 2_990, 10),  # after the window: not live, still aged
    ]
    d = delivery(got, "a", 1_000 * ms, 3_000 * ms)
    assert d["samples_delivered"] == 30
    assert d["records_received"] == 5
    assert d["age_measured"] == 3  # ts in [1000 + the 1000 ms warm-up, 3000)
    assert (d["age_p50_ms"], d["age_max_ms"]) == (60.0, 110.0)


@pytest.mark.timeout(240)
@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "endtoend.json"
    code = endtoend.main(["--duration", "2", "--reps", "1", "--workloads", "W1", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    [w1] = result["runs"]
    assert set(w1["runs"]) == {"agent", "ceiling-mqtt", "naive"}
    for name, run in w1["runs"].items():
        # Every contender read the plant, which counted what it served, and was measured.
        assert run["samples_served"] > 0 and run["errors"] == 0, (name, run)
        assert run["cpu_s"] > 0 and run["rss_bytes"] > 0
        assert run["requests_per_poll"] == pytest.approx(2.0, abs=0.2)
    for name in ("agent", "ceiling-mqtt"):  # both publish: the broker saw their records
        assert w1["runs"][name]["samples_delivered"] > 0, name
        assert w1["runs"][name]["age_p50_ms"] is not None, name
    assert w1["runs"]["agent"]["readings_stored"] > 0
    assert {t["target"] for t in result["targets"]} >= {"W1 data age p99 (ms) <="}

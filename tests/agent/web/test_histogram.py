"""agent/histogram.py: the fixed-bucket histogram behind every latency figure of /metrics."""

from __future__ import annotations

import math

import pytest

from agent.histogram import LATENCY_BUCKETS_S, Histogram, HistogramSnapshot
from agent.statistics import SourceStatistics


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (0.0, 0),
        (-1.0, 0),  # a clock step backwards: counted, not lost
        (0.5, 0),  # equal to a bound: in that bound's bucket (Prometheus le is "<=")
        (0.50001, 1),
        (1.0, 1),
        (9.0, 3),
        (10.0, 3),
        (10.5, 4),  # beyond the last bound: +Inf
        (math.inf, 4),
    ],
)
def test_a_value_lands_in_the_first_bucket_whose_bound_it_does_not_pass(
    value: float, bucket: int
) -> None:
    h = Histogram((0.5, 1.0, 2.0, 10.0))
    h.observe(value)
    expected = [0] * 5
    expected[bucket] = 1
    assert h.counts == expected
    assert h.count == 1


def test_sum_count_and_cumulative_buckets() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    h.observe_many([0.0005, 0.002, 0.003, 0.05, 3.0])
    snap = h.snapshot()
    assert snap.counts == (1, 2, 1, 1)
    assert snap.count == 5
    assert snap.sum == pytest.approx(3.0555)
    assert snap.cumulative() == [("0.001", 1), ("0.01", 3), ("0.1", 4), ("+Inf", 5)]
    h.observe(0.0)
    assert snap.counts == (1, 2, 1, 1)  # a snapshot does not move with the histogram


def test_nan_is_ignored() -> None:
    h = Histogram()
    h.observe(math.nan)
    h.observe_many([math.nan, 0.002])
    assert h.count == 1 and h.sum == pytest.approx(0.002)


@pytest.mark.parametrize(
    "bounds",
    [(), (0.1, 0.1), (0.2, 0.1), (0.1, math.inf), (math.nan,)],
)
def test_bad_bounds_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bucket bound"):
        Histogram(bounds)


def test_a_source_histogram_is_flattened_only_for_the_status_file() -> None:
    h = Histogram()
    h.observe_many([0.0001, 0.003, 0.003, 7.0])
    stats = SourceStatistics(requests=4, latency=h.snapshot())
    figures = stats.figures()
    assert figures["latency_count"] == 4
    assert figures["latency_sum_s"] == h.sum
    buckets = [figures[f"latency_bucket_{i}"] for i in range(len(LATENCY_BUCKETS_S) + 1)]
    assert buckets == h.counts
    assert f"latency_bucket_{len(LATENCY_BUCKETS_S) + 1}" not in figures
    assert stats.latency == HistogramSnapshot(LATENCY_BUCKETS_S, tuple(h.counts), h.sum)
    assert not any(k.startswith("latency_") and "bucket" in k for k in SourceStatistics().figures())

"""The writer's figures: `WriterStats` (a frozen snapshot) and the counters behind it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.histogram import Histogram, HistogramSnapshot

LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class WriterStats:
    batches_written: int
    readings_written: int
    events_written: int
    gaps_written: int
    commits: int
    commit_latency_last_s: float
    commit_latency_max_s: float
    # counts per bucket: commits that took <= LATENCY_BUCKETS_S[i]; the last is "longer"
    commit_latency_histogram: tuple[int, ...]
    pending_batches: int
    pending_readings: int
    pending_events: int
    dropped_batches: int  # telemetry records dropped by a bound (stored or not)
    dropped_readings: int
    deleted_records: int  # delivered records removed by the age bound or the size bound
    errors: int
    last_error: str | None
    store_full: bool
    last_seq: Mapping[str, int]
    commit_latency_sum_s: float = 0.0  # with the histogram: Prometheus _sum and _count
    # telemetry records each sink lost: dropped by a bound before it had acknowledged them
    dropped_by_sink: Mapping[str, int] = field(default_factory=dict)
    # why the store is full (the disk, or max_size with events no sink acknowledged); None: not
    full_reason: str | None = None
    max_pending_readings: int = 0  # the memory bound: readings beyond it are dropped, counted

    @property
    def commit_latency(self) -> HistogramSnapshot:
        """The commit histogram as one value (`/metrics`); status.json keeps the two fields."""
        return HistogramSnapshot(
            LATENCY_BUCKETS_S, self.commit_latency_histogram, self.commit_latency_sum_s
        )


@dataclass(slots=True)
class Counters:
    batches: int = 0
    readings: int = 0
    events: int = 0
    gaps: int = 0
    commits: int = 0
    latency_last: float = 0.0
    latency_max: float = 0.0
    histogram: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    dropped_by_sink: dict[str, int] = field(default_factory=dict)
    dropped_batches: int = 0
    dropped_readings: int = 0
    deleted: int = 0
    errors: int = 0
    last_error: str | None = None

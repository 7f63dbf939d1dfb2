"""The writer's figures: `WriterStats` (a frozen snapshot) and the counters behind it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.histogram import Histogram, HistogramSnapshot
from agent.store.bounds import Housework

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

    def count_commit(
        self, batches: int, readings: int, events: int, gaps: int, latency: float, hw: Housework
    ) -> None:
        """Book a commit that wrote these records in `latency` seconds, and its bounds' work."""
        self.batches += batches
        self.readings += readings
        self.events += events
        self.gaps += gaps
        self.commits += 1
        self.latency_last = latency
        self.latency_max = max(self.latency_max, latency)
        self.histogram.observe(latency)
        self.dropped_batches += hw.dropped_batches
        self.dropped_readings += hw.dropped_readings
        self.deleted += hw.deleted
        self.last_error = None

    def count_lost(self, lost: Mapping[str, int]) -> None:
        """Book the telemetry records each sink lost to a bound before it acknowledged them."""
        for sink, n in lost.items():
            self.dropped_by_sink[sink] = self.dropped_by_sink.get(sink, 0) + n

    def snapshot(
        self,
        *,
        pending: tuple[int, int, int],
        full_reason: str | None,
        max_pending_readings: int,
        last_seq: Mapping[str, int],
    ) -> WriterStats:
        """The figures now, with the writer's own: its `pending` (batches, readings, events),
        why the store is full (None: it is not), its memory bound and its last seqs."""
        return WriterStats(
            batches_written=self.batches,
            readings_written=self.readings,
            events_written=self.events,
            gaps_written=self.gaps,
            commits=self.commits,
            commit_latency_last_s=self.latency_last,
            commit_latency_max_s=self.latency_max,
            commit_latency_histogram=tuple(self.histogram.counts),
            commit_latency_sum_s=self.histogram.sum,
            dropped_by_sink=dict(self.dropped_by_sink),
            pending_batches=pending[0],
            pending_readings=pending[1],
            pending_events=pending[2],
            dropped_batches=self.dropped_batches,
            dropped_readings=self.dropped_readings,
            deleted_records=self.deleted,
            errors=self.errors,
            last_error=self.last_error,
            store_full=full_reason is not None,
            full_reason=full_reason,
            max_pending_readings=max_pending_readings,
            last_seq=dict(last_seq),
        )

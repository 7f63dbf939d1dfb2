"""The typed figures each component reports: what `statistics()` returns, frozen at one moment.

A source, a sink and an inspection each answer `statistics()` with one of these dataclasses;
the store writer with `WriterStats` (agent/store/figures.py). The runtime gathers them into one
`AgentSnapshot` per status tick (agent/snapshot.py) and status.json, `/api/state` and `/metrics`
render that snapshot. A figure every connector keeps is a typed field; one only a protocol
keeps (OPC UA's notifications, S7's PDU size) goes in `extras`, by name.

`figures()` gives the flat mapping status.json has always carried for a source or sink: the
typed fields and the extras side by side, a latency histogram as `latency_bucket_<i>`
(non-cumulative), `latency_sum_s` and `latency_count`. It is the status file's wire format
only; nothing reads a histogram back from it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.histogram import HistogramSnapshot

# The request failures a source counts, by kind (the status page's and /metrics' `errors`).
REQUEST_ERROR_KINDS = ("timeouts", "exceptions", "malformed", "aborted")


@functools.cache
def _bucket_keys(prefix: str, buckets: int) -> tuple[str, ...]:
    """`<prefix>_bucket_<i>`: made once per histogram shape, not once per source per tick
    (the f-strings were two thirds of a source's histogram figures)."""
    return tuple(f"{prefix}_bucket_{i}" for i in range(buckets))


def _histogram_figures(prefix: str, histogram: HistogramSnapshot) -> dict[str, float]:
    counts = histogram.counts
    out: dict[str, float] = dict(zip(_bucket_keys(prefix, len(counts)), counts, strict=True))
    out[f"{prefix}_sum_s"] = histogram.sum
    out[f"{prefix}_count"] = histogram.count
    return out


@dataclass(frozen=True, slots=True)
class SourceStatistics:
    """A source's own counters since start (the link loop's are in `agent.poller`)."""

    polls: int = 0
    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    exceptions: int = 0  # the device answered with an error (Modbus exception, S7 refusal)
    malformed: int = 0
    aborted: int = 0  # requests cut short by a lost link
    connects: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    latency_last_s: float = math.nan
    latency_p50_s: float = math.nan  # of the recent requests; NaN before the first
    latency_p99_s: float = math.nan
    latency: HistogramSnapshot | None = None  # every answered request since start
    extras: Mapping[str, float] = field(default_factory=dict)  # the protocol's own figures

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)

    def errors(self) -> dict[str, int]:
        """Failed requests by kind (`REQUEST_ERROR_KINDS`)."""
        return {kind: getattr(self, kind) for kind in REQUEST_ERROR_KINDS}

    def figures(self) -> dict[str, float]:
        """The flat mapping of status.json (see the module doc)."""
        out: dict[str, float] = {
            "polls": self.polls,
            "requests": self.requests,
            "responses": self.responses,
            **self.errors(),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "latency_last_s": self.latency_last_s,
            "latency_p50_s": self.latency_p50_s,
            "latency_p99_s": self.latency_p99_s,
            "connects": self.connects,
            "reconnects": self.reconnects,
            **self.extras,
        }
        if self.latency is not None:
            out.update(_histogram_figures("latency", self.latency))
        return out


@dataclass(frozen=True, slots=True)
class SinkStatistics:
    """A sink's own counters since start (the forwarder's lanes are in `agent.forward`)."""

    connected: bool = False
    connects: int = 0
    records: int = 0  # records the far side took
    extras: Mapping[str, float] = field(default_factory=dict)  # the protocol's own figures

    def figures(self) -> dict[str, float]:
        """The flat mapping of status.json."""
        return {
            "connected": float(self.connected),
            "connects": self.connects,
            "records": self.records,
            **self.extras,
        }


@dataclass(slots=True)
class InspectionCounts:
    """One inspection's counters since start, counted in place by its inspector."""

    triggers: int = 0
    frames: int = 0  # read and preprocessed
    dropped: int = 0  # triggered while the model was still busy with earlier frames
    overlapped: int = 0  # frames decoded while the model worked on an earlier frame
    inspected: int = 0
    ok: int = 0
    not_ok: int = 0
    not_decidable: int = 0
    frame_errors: int = 0  # unreadable or truncated frames, a device gone
    model_errors: int = 0  # the model could not be loaded
    inference_errors: int = 0
    saved: int = 0
    save_errors: int = 0
    writes: int = 0
    write_refused: int = 0
    write_errors: int = 0
    latency_last_ms: float = 0.0  # frame read → verdict
    latency_max_ms: float = 0.0
    inference_last_ms: float = 0.0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class InspectionStatistics:
    """One inspection's counters (a copy, taken once) and what it runs."""

    counts: InspectionCounts = field(default_factory=InspectionCounts)
    model: str | None = None
    queue_size: int = 0

    def figures(self) -> dict[str, Any]:
        return {**asdict(self.counts), "model": self.model, "queue_size": self.queue_size}

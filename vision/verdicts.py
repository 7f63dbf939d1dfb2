"""What an inspection records of each verdict: its counters and its event's payload."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vision.adapters import Verdict
from vision.model import Model


@dataclass(slots=True)
class InspectorStats:
    """The counters of `InspectionStatistics` (agent/statistics.py), counted in place."""

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


_COUNTER = {"OK": "ok", "NotOK": "not_ok", "NotDecidable": "not_decidable"}


def count_verdict(
    stats: InspectorStats, verdict: Verdict, latency_ms: float, inference_ms: float
) -> None:
    """Count one inspected part: its verdict, its latency and its inference time."""
    stats.inspected += 1
    counter = _COUNTER[verdict.verdict]
    setattr(stats, counter, getattr(stats, counter) + 1)
    stats.latency_last_ms = latency_ms
    stats.latency_max_ms = max(stats.latency_max_ms, latency_ms)
    stats.inference_last_ms = inference_ms


def verdict_data(
    inspection: str, source: str, model: Model, verdict: Verdict, latency_ms: float
) -> dict[str, Any]:
    """An inspection event's payload (JSON-ready)."""
    return {
        "inspection": inspection,
        "source": source,
        "model": model.name,
        "adapter": model.kind,
        "verdict": verdict.verdict,
        "score": None if math.isnan(verdict.score) else round(verdict.score, 6),
        "label": verdict.label,
        "classes": list(verdict.classes),
        "boxes": [b.as_dict() for b in verdict.boxes],
        "latency_ms": round(latency_ms, 3),
    }

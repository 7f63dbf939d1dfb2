"""What an inspection records of each verdict: its counters and its event's payload."""

from __future__ import annotations

import math
from typing import Any

from agent.statistics import InspectionCounts
from vision.adapters import Verdict
from vision.model import Model

_COUNTER = {"OK": "ok", "NotOK": "not_ok", "NotDecidable": "not_decidable"}


def count_verdict(
    stats: InspectionCounts, verdict: Verdict, latency_ms: float, inference_ms: float
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

"""`lineside status`: what the store holds and how each sink keeps up, while the agent runs.

The store answers for itself (depth per stream, each sink's cursor, the age of the oldest record
a sink has not acknowledged, quarantined records); the running agent adds what only it knows
(link and sink states, last errors, drops) through `<data_dir>/status.json`, which it rewrites
every two seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agent.status_file import STATUS_FILE
from agent.store import STREAMS, StoreReader


def collect(data_dir: Path) -> dict[str, Any]:
    """Everything `lineside status` shows, as plain data. Raises StoreError without a store.
    The store is read-only here: `status` never changes it."""
    with StoreReader.open(data_dir) as store:
        stats = store.stats()
        quarantined = store.quarantined()
        sinks = store.sinks()
        cursors = {s: {st: store.cursor(s, st) for st in STREAMS} for s in sinks}
    running = _running(data_dir / STATUS_FILE)
    age = None
    if running.get("written_ns"):
        age = max(0.0, (time.time_ns() - int(running["written_ns"])) / 1e9)
    report: dict[str, Any] = {
        "store": {
            "path": stats.path,
            "bytes": stats.bytes,
            "streams": {
                name: {"depth": s.depth, "last_seq": s.last_seq}
                for name, s in stats.streams.items()
            },
        },
        "agent": {
            "status_age_s": age,
            # each link's state and last error, and why its tags read bad now (reason -> tags)
            "sources": {
                name: {
                    **source.get("link", {}),
                    "tags": source.get("tags"),
                    "bad_reasons": source.get("bad_reasons", {}),
                }
                for name, source in running.get("sources", {}).items()
            },
            "dropped_readings": running.get("store", {}).get("dropped_readings"),
            # the store is full and records wait in memory: an alarm for the operator
            "store_full": running.get("store", {}).get("store_full"),
            "full_reason": running.get("store", {}).get("full_reason"),
        },
        "sinks": {},
    }
    for sink in sinks:
        live = running.get("sinks", {}).get(sink, {}).get("forward", {})
        report["sinks"][sink] = {
            "cursor": cursors[sink],
            "backlog": {
                st: max(0, stats.streams[st].last_seq - cursors[sink][st]) for st in STREAMS
            },
            "oldest_unsent_age_s": stats.oldest_unsent_age_s.get(sink, {}),
            "quarantined": sum(1 for q in quarantined if q.sink == sink),
            "state": live.get("state"),
            "last_error": live.get("last_error") or None,
        }
    return report


def _running(path: Path) -> dict[str, Any]:
    """The running agent's figures; {} without them. On a full disk the agent overwrites the
    file in place (agent/runtime.py, write_status): a torn read is read again."""
    for attempt in range(3):
        try:
            figures = json.loads(path.read_text(encoding="utf-8"))
            return figures if isinstance(figures, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            time.sleep(0.05 * (attempt + 1))
    return {}

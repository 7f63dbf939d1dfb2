"""`/api/trend`: a few tags of one machine over the last minutes, from the store itself.

No second database: the stored telemetry batches after the window's start (found by
`Store.live_boundary`, which uses the stored-time index) are read in columnar pages, the rows of the
asked tags kept with numpy, and each tag downsampled on the server to at most `points`
buckets of min / max / last, so a Raspberry Pi sends a phone 300 points, not 36,000. Good
readings only: a bad one has no value worth drawing (the page shows the gap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.model import Quality
from agent.store import Store

PAGE = 5000  # stored batches read at once
MAX_MINUTES = 24 * 60
MAX_POINTS = 2000
MAX_TAGS = 64  # the sparklines of a machine come in one request


class TrendError(ValueError):
    """A request the trend cannot answer (a one-line message for a 400)."""


@dataclass(frozen=True, slots=True)
class TrendQuery:
    machine: str
    tags: tuple[str, ...]
    minutes: float = 60.0
    points: int = 300

    @classmethod
    def parse(
        cls, machine: str | None, tags: Sequence[str], minutes: str | None, points: str | None
    ) -> TrendQuery:
        if not machine:
            raise TrendError("name the machine: ?machine=...")
        if not tags:
            raise TrendError("name at least one tag: &tag=...")
        if len(tags) > MAX_TAGS:
            raise TrendError(f"at most {MAX_TAGS} tags at once, got {len(tags)}")
        try:
            span = float(minutes) if minutes else 60.0
            count = int(points) if points else 300
        except ValueError:
            raise TrendError("minutes and points must be numbers") from None
        if not 0 < span <= MAX_MINUTES:
            raise TrendError(f"minutes must be more than 0 and at most {MAX_MINUTES}")
        if not 2 <= count <= MAX_POINTS:
            raise TrendError(f"points must be from 2 to {MAX_POINTS}")
        return cls(machine, tuple(dict.fromkeys(tags)), span, count)


def buckets(
    ts: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    start_ns: int,
    end_ns: int,
    points: int,
) -> dict[str, list[Any]]:
    """Min, max and last value per time bucket (`points` equal buckets from start to end),
    for the buckets that hold a reading. `t` is each bucket's start in ms since the epoch."""
    inside = (ts >= start_ns) & (ts < end_ns)
    ts, values = ts[inside], values[inside]
    if not ts.size:
        return {"t": [], "min": [], "max": [], "last": []}
    width = max(1, (end_ns - start_ns) // points)
    index = np.minimum((ts - start_ns) // width, points - 1)
    order = np.lexsort((ts, index))  # by bucket, then by time: the last of a run is the latest
    index, values = index[order], values[order]
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    ends = np.r_[starts[1:], index.size] - 1
    return {
        "t": ((start_ns + index[starts] * width) // 1_000_000).tolist(),
        "min": np.minimum.reduceat(values, starts).tolist(),
        "max": np.maximum.reduceat(values, starts).tolist(),
        "last": values[ends].tolist(),
    }


def read_trend(store: Store, query: TrendQuery, now_ns: int) -> dict[str, Any]:
    """The trend of `query` ending at `now_ns` (blocking: call it from a thread)."""
    known = {(t.machine, t.name): (i, t.unit) for i, t in store.tags().items()}
    missing = [t for t in query.tags if (query.machine, t) not in known]
    if missing:
        raise TrendError(f"machine {query.machine!r} has no stored tag {missing[0]!r}")
    ids = np.array([known[query.machine, t][0] for t in query.tags], dtype=np.int32)
    start_ns = now_ns - int(query.minutes * 60e9)
    seq, held = store.live_boundary("telemetry", start_ns)
    found_ts: list[npt.NDArray[np.int64]] = []
    found_ids: list[npt.NDArray[np.int32]] = []
    found_values: list[npt.NDArray[np.float64]] = []
    after = seq - 1
    while held:
        # Columnar runs (the forwarder's read): one numpy pass per page, no object per record.
        run = store.read_telemetry_run(after, PAGE)
        if not len(run):
            break
        keep = np.isin(run.tag_ids, ids) & (run.quality == Quality.GOOD)
        if bool(keep.any()):
            stamps = run.reading_ts_ns
            if stamps is None:  # one stamp per record: repeat it over the record's readings
                stamps = np.repeat(run.ts_ns, np.diff(run.offsets))
            found_ts.append(stamps[keep])
            found_ids.append(run.tag_ids[keep])
            found_values.append(run.values[keep])
        if len(run) < PAGE:
            break
        after = int(run.seqs[-1])
    ts = np.concatenate(found_ts) if found_ts else np.zeros(0, np.int64)
    tag_ids = np.concatenate(found_ids) if found_ids else np.zeros(0, np.int32)
    values = np.concatenate(found_values) if found_values else np.zeros(0, np.float64)
    series = {}
    for name, tag_id in zip(query.tags, ids.tolist(), strict=True):
        mine = tag_ids == tag_id
        series[name] = {
            "unit": known[query.machine, name][1],
            **buckets(ts[mine], values[mine], start_ns, now_ns + 1, query.points),
        }
    return {
        "machine": query.machine,
        "from_ns": start_ns,
        "to_ns": now_ns,
        "points": query.points,
        "tags": series,
    }

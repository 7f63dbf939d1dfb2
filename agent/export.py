"""`lineside export`: the stored telemetry as one row per reading, in time order, csv or jsonl.

Text tags' strings are stored as `text` events (agent/texts.py), one per change: each is a
row too, its string the value, merged in by time.

The store keeps one record per batch; export unrolls them. Batches from different sources
overlap in time, so rows are merged through a heap that only ever holds the batches whose time
range has begun, not the whole store.
"""

from __future__ import annotations

import csv
import fnmatch
import heapq
import json
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from agent.codenames import CodeNames
from agent.model import Event, EventKind, Quality
from agent.reasonlog import ReasonAt, changes
from agent.store import StoreReader
from agent.texts import TextReading
from agent.values import Plain, plain

# The store keeps time as nanoseconds since the epoch in a signed 64-bit integer: from
# 1677-09-21 to 2262-04-11. A time asked for outside that range is clamped to it.
TIME_MIN_NS = -(1 << 63)
TIME_MAX_NS = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class ExportRow:
    ts_ns: int
    path: str  # the tag's ISA-95 path, site/area/line/machine/tag
    value: float
    quality: Quality
    unit: str = ""
    reason: str = ""  # why a bad reading is bad, from the store's `reasons` events
    # A text tag's row (from a stored `text` event, agent/texts.py): its string, None when bad;
    # `value` is NaN.
    text: str | None = None
    textual: bool = False


@dataclass(frozen=True, slots=True)
class Labels:
    """What the config adds to a row: the value in its tag's type, the name of a code.

    Without a config (`--data`) values are written as stored and codes have no name."""

    models: Mapping[str, Any] = field(default_factory=dict)
    names: CodeNames = field(default_factory=CodeNames)

    def value(self, row: ExportRow) -> Plain | str:
        if row.textual:
            return row.text
        return plain(row.value, self.models.get(row.path, _STORED))

    def name(self, row: ExportRow) -> str | None:
        return self.names.name(row.path, row.value)


_STORED = object()  # a tag the config does not know: its float64 as stored


def parse_time(text: str, tz: tzinfo | None = None) -> int:
    """An ISO-8601 date or datetime as nanoseconds since the epoch.

    Without an offset the time is read in `tz` (default: this machine's local zone, the
    plant's clock); `Z` or `+02:00` say it explicitly. Times outside the range the store can
    hold are clamped to it (`--from 0001-01-01` means "from the start").
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 time (e.g. 2025-03-01T06:00:00+01:00)"
        ) from None
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=tz) if tz is not None else moment.astimezone()
        except (OverflowError, ValueError, OSError):
            # Year 1 or 9999 in a zone off UTC leaves the calendar; there, far outside the
            # store's range, the zone makes no difference once clamped.
            moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return min(max(ns, TIME_MIN_NS), TIME_MAX_NS)


def export_readings(
    store_path: Path | str,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    tag_glob: str | None = None,
) -> Iterator[ExportRow]:
    """Every stored reading with start_ns <= ts < end_ns whose tag path matches `tag_glob`
    (fnmatch, e.g. `site/*/press*/speed`), ordered by time (ties: by storage order).

    The store is opened and checked now (StoreError: none there, or damaged); the rows come as
    they are iterated, and a read that fails on the way is a StoreError too."""
    # Read-only, checked whole (quick_check) before the first row is written, so a damaged
    # store gives its one-line error instead of a partial export.
    reader = StoreReader.open(store_path, whole=True)
    try:
        hi = TIME_MAX_NS if end_ns is None else min(end_ns, TIME_MAX_NS)
        events = changes(reader.event_texts(EventKind.REASONS, before_ns=hi))
        lo = TIME_MIN_NS if start_ns is None else max(start_ns, TIME_MIN_NS)
        texts = _text_rows(reader, lo, hi, tag_glob)
    except BaseException:
        reader.close()
        raise
    rows = heapq.merge(_rows(reader, start_ns, end_ns, tag_glob), texts, key=lambda r: r.ts_ns)
    return _with_reasons(rows, ReasonAt(events))


def _text_rows(reader: StoreReader, lo: int, hi: int, tag_glob: str | None) -> list[ExportRow]:
    """The stored `text` events of [lo, hi) as rows, in time order (strings change rarely:
    read at once)."""
    units = {t.path: t.unit for t in reader.tags().values()}
    out = []
    for ts_ns, stored in reader.event_texts(EventKind.TEXT, before_ns=hi):
        if ts_ns < lo:
            continue
        data = json.loads(stored)
        reading = TextReading.of(Event(EventKind.TEXT, ts_ns, None, data))
        path = str(data.get("tag", ""))
        if reading is None or (tag_glob is not None and not fnmatch.fnmatchcase(path, tag_glob)):
            continue
        out.append(ExportRow(ts_ns, path, math.nan, reading.quality, units.get(path, ""),
                             reading.reason, reading.value, textual=True))  # fmt: skip
    return out


def _with_reasons(rows: Iterable[ExportRow], reasons: ReasonAt) -> Iterator[ExportRow]:
    """The rows (in time order), each bad one with its reason at its time if one is known."""
    for row in rows:
        if row.quality != Quality.GOOD and not row.textual:  # a text row has its reason
            why = reasons.at(row.ts_ns, row.path)
            if why:
                row = ExportRow(row.ts_ns, row.path, row.value, row.quality, row.unit, why)
        yield row


def _rows(
    reader: StoreReader,
    start_ns: int | None,
    end_ns: int | None,
    tag_glob: str | None,
) -> Iterator[ExportRow]:
    with reader:
        tags = reader.tags()
        paths = {i: t.path for i, t in tags.items()}
        units = {t.path: t.unit for t in tags.values()}
        wanted: np.ndarray | None = None
        if tag_glob is not None:
            wanted = np.array(
                [i for i, p in paths.items() if fnmatch.fnmatchcase(p, tag_glob)], dtype=np.int32
            )
            if wanted.size == 0:
                return
        lo = TIME_MIN_NS if start_ns is None else max(start_ns, TIME_MIN_NS)
        hi = TIME_MAX_NS if end_ns is None else min(end_ns, TIME_MAX_NS)
        heap: list[tuple[int, int, int, str, float, int]] = []
        for seq, first_ns, b in reader.batches_overlapping(lo, hi):
            # Rows earlier than this batch's first reading can no longer be overtaken.
            while heap and heap[0][0] < first_ns:
                yield _row(heapq.heappop(heap), units)
            ts = b.timestamps()
            mask = (ts >= lo) & (ts < hi)
            if wanted is not None:
                mask &= np.isin(b.tag_ids, wanted)
            for k in np.flatnonzero(mask):
                tag = int(b.tag_ids[k])
                path = paths.get(tag, f"#{tag}")
                heapq.heappush(
                    heap,
                    (int(ts[k]), int(seq), int(k), path, float(b.values[k]), int(b.quality[k])),
                )
        while heap:
            yield _row(heapq.heappop(heap), units)


def _row(item: tuple[int, int, int, str, float, int], units: Mapping[str, str]) -> ExportRow:
    return ExportRow(item[0], item[3], item[4], Quality(item[5]), units.get(item[3], ""))


def _iso(ts_ns: int) -> str:
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def write_csv(rows: Iterable[ExportRow], out: TextIO, labels: Labels | None = None) -> int:
    """Header then one line per reading; returns the number of readings written."""
    labels = labels or Labels()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "ts_ns", "path", "value", "quality", "unit", "name", "reason"])
    count = 0
    for r in rows:
        value = labels.value(r)
        text = "" if value is None else str(value).lower() if isinstance(value, bool) else value
        if value is None:  # nan, inf: as stored, the quality says why; a bad text: empty
            text = "" if r.textual else repr(r.value)
        writer.writerow(
            [
                _iso(r.ts_ns),
                r.ts_ns,
                r.path,
                text,
                r.quality.name.lower(),
                r.unit,
                labels.name(r) or "",
                r.reason,
            ]
        )
        count += 1
    return count


def write_jsonl(rows: Iterable[ExportRow], out: TextIO, labels: Labels | None = None) -> int:
    """One JSON object per line; NaN and infinities (not JSON) become null."""
    labels = labels or Labels()
    count = 0
    for r in rows:
        record = {
            "time": _iso(r.ts_ns),
            "ts_ns": r.ts_ns,
            "path": r.path,
            "value": labels.value(r),
            "quality": r.quality.name.lower(),
            "unit": r.unit,
        }
        name = labels.name(r)
        if name is not None:
            record["name"] = name
        if r.reason:
            record["reason"] = r.reason
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        count += 1
    return count


def write_file(out: Path, write: Callable[[TextIO], int]) -> int:
    """Run `write` on the file `out`; returns what it returns. A file there is always complete.

    A regular file (or a new one) is written as `<out>.partial` next to it and renamed over `out`
    only when done, so a failed export (disk full, a damaged store, ^C) leaves the old file or
    none, never a cut one that looks whole. Anything else (/dev/stdout, a FIFO, a device) is
    written in place. OSError passes through.
    """
    try:
        in_place = not stat.S_ISREG(out.stat().st_mode)
    except FileNotFoundError:
        in_place = False
    if in_place:
        with out.open("w", encoding="utf-8", newline="") as f:
            return write(f)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as f:
            count = write(f)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count

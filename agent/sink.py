"""What the agent hands to a sink (MQTT, Sparkplug B, HTTP), and what it expects back.

The forwarder (`agent/forward.py`) reads records after a sink's cursor in the store and calls
`send(records)`. `send` returns only when the far side acknowledged every record (MQTT PUBACK
at QoS 1, HTTP 2xx); only then does the cursor move. Delivery is therefore at least once, and
every record carries `(agent_id, stream, seq)` so the receiver can drop duplicates.

Errors: `ConnectError` / `RequestTimeout` / other `ConnectorError`s are retried with back-off;
`SinkRejected` (the far side refused a record as invalid) quarantines that record (or the whole
batch when its `index` is None) so it never blocks the queue.

Telemetry read from the store reaches `send` as a `TelemetryRecords`: a `Sequence` of
`TelemetryRecord`s that keeps the records column by column. A sink that only iterates gets
ordinary records; one that can use the columns (an MQTT or HTTP batch built straight from the
arrays) reads `records.run` and never makes an object per record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, overload, runtime_checkable

import numpy as np
import numpy.typing as npt

from agent.codenames import CodeNames
from agent.model import Event, ReadingBatch
from agent.statistics import SinkStatistics
from agent.store.blob import TelemetryRun
from agent.tags import Tag

# The tag as sinks see it is the agent's one `Tag` record (its ISA-95 levels, unit, declared
# type). `TagMeta` is the name the connectors' payload modules import.
TagMeta = Tag


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    seq: int
    batch: ReadingBatch  # tag_ids are the store's ids: look them up in SinkContext.tags
    historical: bool = False  # replayed after an outage rather than sent live
    stream: str = "telemetry"


@dataclass(frozen=True, slots=True)
class EventRecord:
    seq: int
    event: Event
    historical: bool = False
    stream: str = "events"


@dataclass(frozen=True, slots=True)
class GapRecord:
    """Records of `of_stream` dropped before this sink had them: first..last seq, count."""

    seq: int
    of_stream: str
    first_seq: int | None
    last_seq: int | None
    count: int
    readings: int
    ts_ns: int
    reason: str
    historical: bool = False
    stream: str = "gaps"

    def describe(self) -> dict[str, object]:
        """What was lost, as every sink's payload carries it (JSON-ready)."""
        return {
            "of_stream": self.of_stream,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "count": self.count,
            "readings": self.readings,
            "reason": self.reason,
        }


Record = TelemetryRecord | EventRecord | GapRecord


class TelemetryRecords(Sequence[TelemetryRecord]):
    """Telemetry records as one columnar `TelemetryRun`, each with its `historical` mark.

    Indexing makes the `TelemetryRecord` on demand; slicing and `select` stay columnar. Marks
    alike for every record (all live, the usual send) are kept as one bool, made an array only
    for who asks for `historical`: a live send then makes no array to mark, count or test.
    """

    __slots__ = ("_marks", "run")
    stream = "telemetry"

    def __init__(self, run: TelemetryRun, historical: npt.NDArray[np.bool_] | bool = False) -> None:
        self.run = run
        if isinstance(historical, bool | np.bool_):
            self._marks: npt.NDArray[np.bool_] | bool = bool(historical)
        elif historical.shape != (len(run),):
            raise ValueError("one historical mark per record")
        else:
            self._marks = historical

    @property
    def historical(self) -> npt.NDArray[np.bool_]:
        """Each record's mark."""
        marks = self._marks
        if isinstance(marks, bool):
            return np.full(len(self.run), marks, dtype=np.bool_)
        return marks

    @property
    def seqs(self) -> npt.NDArray[np.int64]:
        return self.run.seqs

    def __len__(self) -> int:
        return len(self.run)

    @overload
    def __getitem__(self, index: int) -> TelemetryRecord: ...

    @overload
    def __getitem__(self, index: slice) -> TelemetryRecords: ...

    def __getitem__(self, index: int | slice) -> TelemetryRecord | TelemetryRecords:
        marks = self._marks
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("telemetry records are sliced with step 1")
            run = self.run.slice(start, stop)
            return TelemetryRecords(run, marks if isinstance(marks, bool) else marks[start:stop])
        n = len(self)
        if not -n <= index < n:
            raise IndexError(index)
        i = index % n
        mark = marks if isinstance(marks, bool) else bool(marks[i])
        return TelemetryRecord(int(self.run.seqs[i]), self.run.batch(i), mark)

    def __iter__(self) -> Iterator[TelemetryRecord]:
        for i in range(len(self)):
            yield self[i]

    def select(self, keep: npt.NDArray[np.bool_]) -> TelemetryRecords:
        """The records where `keep` (one bool per record) is true, in order."""
        marks = self._marks
        return TelemetryRecords(
            self.run.select(keep), marks if isinstance(marks, bool) else marks[keep]
        )

    def marked(self, historical: npt.NDArray[np.bool_] | bool) -> TelemetryRecords:
        """The same records with new historical marks."""
        return TelemetryRecords(self.run, historical)

    def historical_count(self) -> int:
        marks = self._marks
        if isinstance(marks, bool):
            return len(self) if marks else 0
        return int(np.count_nonzero(marks))

    @classmethod
    def of(cls, records: Sequence[TelemetryRecord]) -> TelemetryRecords:
        """Telemetry records given one by one, as columns (returned as is when they are)."""
        if isinstance(records, TelemetryRecords):
            return records
        batches = [r.batch for r in records]
        counts = np.array([len(b) for b in batches], dtype=np.int64)
        offsets = np.zeros(len(batches) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        per_reading = any(b.ts_ns.shape[0] > 1 for b in batches)
        run = TelemetryRun(
            seqs=np.array([r.seq for r in records], dtype=np.int64),
            sources=tuple(b.source for b in batches),
            offsets=offsets,
            tag_ids=np.concatenate([b.tag_ids for b in batches] or [np.zeros(0, np.int32)]),
            values=np.concatenate([b.values for b in batches] or [np.zeros(0)]),
            quality=np.concatenate([b.quality for b in batches] or [np.zeros(0, np.uint8)]),
            ts_ns=np.array(
                [int(b.ts_ns[0]) if b.ts_ns.shape[0] else 0 for b in batches], dtype=np.int64
            ),
            reading_ts_ns=np.concatenate([b.timestamps() for b in batches])
            if per_reading
            else None,
            stamped=np.array([b.ts_ns.shape[0] > 1 for b in batches], dtype=np.bool_)
            if per_reading
            else None,
        )
        return cls(run, np.array([r.historical for r in records], dtype=np.bool_))


class Records(Sequence[EventRecord | GapRecord]):
    """Event or gap records of one stream, with the methods of `TelemetryRecords`, so the
    forwarder handles every stream's batch the same way (`RecordBatch`)."""

    __slots__ = ("_items", "stream")

    def __init__(self, stream: str, items: Sequence[EventRecord | GapRecord]) -> None:
        self.stream = stream
        self._items = list(items)

    @property
    def seqs(self) -> npt.NDArray[np.int64]:
        return np.fromiter((r.seq for r in self._items), dtype=np.int64, count=len(self._items))

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> EventRecord | GapRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Records: ...

    def __getitem__(self, index: int | slice) -> EventRecord | GapRecord | Records:
        if isinstance(index, slice):
            return Records(self.stream, self._items[index])
        return self._items[index]

    def __iter__(self) -> Iterator[EventRecord | GapRecord]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records):
            return (self.stream, self._items) == (other.stream, other._items)
        return isinstance(other, list) and self._items == other

    __hash__ = None  # type: ignore[assignment]

    def select(self, keep: npt.NDArray[np.bool_]) -> Records:
        """The records where `keep` (one bool per record) is true, in order."""
        return Records(
            self.stream, [r for r, k in zip(self._items, keep.tolist(), strict=True) if k]
        )

    def marked(self, historical: npt.NDArray[np.bool_] | bool) -> Records:
        """The same records with new historical marks."""
        marks = [historical] * len(self) if isinstance(historical, bool) else historical.tolist()
        return Records(
            self.stream,
            [replace(r, historical=bool(h)) for r, h in zip(self._items, marks, strict=True)],
        )

    def historical_count(self) -> int:
        return sum(1 for r in self._items if r.historical)


# What the forwarder reads and sends: one stream's records, the same methods on each.
RecordBatch = TelemetryRecords | Records


@dataclass(frozen=True, slots=True)
class TagColumns:
    """How a columnar payload names tags: the ids a run uses, and each reading's index in them.

    `used` are the tag ids present, ascending (the payload's `tags` list, by their names);
    `index` gives each reading's position in `used`. `unknown_record` is the first record
    naming a tag outside the tag table, or None.
    """

    used: list[int]
    index: npt.NDArray[np.int64]
    unknown_record: int | None
    unknown_id: int | None


def tag_columns(run: TelemetryRun, known: npt.NDArray[np.bool_]) -> TagColumns:
    """`TagColumns` of `run` against `known` (True at every id in the tag table).

    A mark per id and a running count: no sort, no object per reading. When every record
    names the same tags in the same order (one source's polls, the usual backlog) the work is
    done on the first record and repeated: a comparison instead of four passes over the run.
    """
    repeated = _repeated_ids(run)
    if repeated is not None:
        first = tag_columns(run.slice(0, 1), known)
        if first.unknown_record is not None:
            return first
        return TagColumns(first.used, np.tile(first.index, len(run)), None, None)
    ids = run.tag_ids.astype(np.int64)
    outside = (ids < 0) | (ids >= known.shape[0])
    outside[~outside] = ~known[ids[~outside]]
    if bool(outside.any()):
        row = int(np.argmax(outside))
        record = int(np.searchsorted(run.offsets, row, side="right")) - 1
        return TagColumns([], np.zeros(0, dtype=np.int64), record, int(ids[row]))
    marks = np.zeros(known.shape[0], dtype=np.bool_)
    marks[ids] = True
    position = np.cumsum(marks) - 1
    return TagColumns(np.flatnonzero(marks).tolist(), position[ids], None, None)


def _repeated_ids(run: TelemetryRun) -> npt.NDArray[np.int32] | None:
    """The tag ids of the first record when every record of `run` (two or more) has the same."""
    records = len(run)
    if records < 2:
        return None
    width = int(run.offsets[1])
    if width == 0 or run.tag_ids.shape[0] != width * records:
        return None
    if not bool((np.diff(run.offsets) == width).all()):
        return None
    rows = run.tag_ids.reshape(records, width)
    return rows[0] if bool((rows == rows[0]).all()) else None


def known_ids(tags: Mapping[int, Tag]) -> npt.NDArray[np.bool_]:
    """True at every tag id of `tags` (dense by id), for `tag_columns`."""
    known = np.zeros(max(tags, default=-1) + 1, dtype=np.bool_)
    known[[i for i in tags if i >= 0]] = True
    return known


def sink_tags(stored: Mapping[int, Tag], table: Iterable[Tag] = ()) -> dict[int, Tag]:
    """Every tag the store knows, as sinks see them: this run's own `Tag` records where the
    config still has the tag (with its declared type), the store's for the others (a backlog
    may hold their readings; their values travel as float64)."""
    return {**stored, **{t.id: t for t in table}}


class Meta(Protocol):
    """Small values a sink keeps across restarts (the store's `meta` table: `Store`)."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...


# The agent's status figures for the fleet view, JSON-ready (agent/fleet.py says what is in
# them); a sink that publishes them calls it each time, and never imports the runtime.
StatusProvider = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What every sink runtime is built with, besides its own config model.

    `meta`, when given, keeps a sink's small state across restarts (Sparkplug's bdSeq); a sink
    names its keys `sink.<name>.<what>`.
    """

    agent_id: str
    tags: Mapping[int, Tag]
    meta: Meta | None = None
    status: StatusProvider | None = None
    names: CodeNames | None = None  # the names of coded values (states, stop reasons)


class Sink(Protocol):
    """A northbound sink. What it can do beyond sending is declared by the protocols below
    (`SendsAhead`, `IndependentStreams`, `HasBackground`): the forwarder asks those, never a
    sink's type name."""

    name: str

    async def connect(self) -> None:
        """One attempt; raises `ConnectError` (unreachable, refused, TLS or auth failure)."""
        ...

    async def send(self, records: Sequence[Record]) -> None:
        """Deliver `records` (one stream, in seq order); return once all are acknowledged."""
        ...

    async def close(self) -> None: ...

    def statistics(self) -> SinkStatistics: ...


@runtime_checkable
class SendsAhead(Protocol):
    """`concurrent_sends` `send` calls may be in flight at once with their records still
    arriving in call order (one MQTT connection: yes; parallel HTTP requests: no). The
    forwarder then reads and encodes the next batch while the previous one waits for its
    acknowledgement."""

    concurrent_sends: int


@runtime_checkable
class IndependentStreams(Protocol):
    """Sends on different streams may run at once, and a failure of one stream needs no
    reconnect of the others (HTTP: a client per stream), when `independent_streams` is true.
    The forwarder then sends each stream on its own, backs a failing stream off alone and does
    not close the sink on a failure."""

    independent_streams: bool


@runtime_checkable
class HasBackground(Protocol):
    """Work the sink does beside sending (the MQTT sink's retained status for the fleet view),
    run by the forwarder for as long as it runs and cancelled with it; its failure is logged
    and never stops the sending."""

    async def background(self) -> None: ...

"""The agent's hot path: each link's readings collected per tick, merged, and
handed on to the report-by-exception filter, the store, the KPI engine and the alarms; events
handed on to the store, the KPI engine and the live views; the latest reading of every tag.

`Readings` is a part of `Agent` (agent/runtime.py builds what it hands on to: the tag table,
the writer, the filter, the KPI engine, the alarms, the links' statistics). Its methods are the
agent's own, so a link's callback is one direct call per batch, with no layer in between.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from agent.alarms import AlarmBook
from agent.kpi.engine import KpiEngine
from agent.model import Event, Quality, ReadingBatch
from agent.pipeline import ReportByException, mark_non_finite, merge
from agent.poller import LinkStatistics
from agent.store import StoreWriter
from agent.tags import TagTable

log = logging.getLogger("lineside.agent")


class Readings:
    """The readings and events of a running agent, from the links to the store (a part of
    `Agent`, which sets the attributes below before the first reading)."""

    # What readings are handed on to (`Agent.__init__`; a reload replaces `tags` and `filter`).
    tags: TagTable
    writer: StoreWriter
    filter: ReportByException | None
    kpi: KpiEngine | None
    alarms: AlarmBook
    links: dict[str, LinkStatistics]
    # What it keeps (`_init_readings`).
    latest_values: npt.NDArray[np.float64]
    latest_quality: npt.NDArray[np.uint8]
    latest_ts_ns: npt.NDArray[np.int64]
    samples: int
    event_listeners: list[Callable[[Event], None]]
    _turn: list[ReadingBatch]
    _turn_sources: set[str]
    _polling: int
    _hold: asyncio.TimerHandle | None
    hold: float
    _non_finite_logged: npt.NDArray[np.bool_]

    def _init_readings(self) -> None:
        self._turn = []  # readings of this tick, not yet merged
        self._turn_sources = set()  # the links whose readings `_turn` holds
        self._polling = 0  # links between the start of a poll step and its hand-over
        self._hold: asyncio.TimerHandle | None = None  # emits the tick's readings after all
        # The longest the readings of a tick wait for a link still polling (a slow or dead PLC):
        # the store's group-commit interval, which a record may wait in any case.
        self.hold = self.writer.flush_interval
        # The latest reading of every tag, for live views (`lineside demo`, the status page).
        n = self.tags.size  # indexed by tag id
        self.latest_values = np.full(n, np.nan)
        self.latest_quality = np.full(n, Quality.BAD, dtype=np.uint8)
        self.latest_ts_ns = np.zeros(n, dtype=np.int64)
        self.samples = 0
        # Tags whose non-finite value was logged: once per tag and run, the counter does the rest.
        self._non_finite_logged = np.zeros(n, dtype=np.bool_)
        # Live views that want every event as it happens (the page's verdict log); called after
        # the store and the KPI engine have it, and never allowed to cost the agent an event.
        self.event_listeners = []

    def _tag_reader(self, machine: str, name: str) -> Callable[[], float]:
        """The latest value of one tag, NaN while unknown or bad (a vision trigger reads it)."""
        at = self.tags.id_of(machine, name)

        def read() -> float:
            if self.latest_quality[at] == Quality.BAD:
                return float("nan")
            return float(self.latest_values[at])

        return read

    def _grow_tags(self, tags: TagTable) -> None:
        """Take the reloaded tag table: the running tags keep their ids and their latest
        values; the arrays (indexed by the store's ids) grow to the new table's size."""
        n, more = tags.size, tags.size - self.tags.size
        self.latest_values = np.concatenate([self.latest_values, np.full(more, np.nan)])
        quality = np.full(more, Quality.BAD, dtype=np.uint8)
        self.latest_quality = np.concatenate([self.latest_quality, quality])
        self.latest_ts_ns = np.concatenate([self.latest_ts_ns, np.zeros(more, dtype=np.int64)])
        logged = np.zeros(more, dtype=np.bool_)
        self._non_finite_logged = np.concatenate([self._non_finite_logged, logged])
        if self.filter is not None:
            self.filter = self.filter.resized(n, *tags.deadbands())
        self.tags = tags
        self.__dict__.pop("_tags_by_source", None)  # counted again from the new table
        self.__dict__.pop("tag_machines", None)

    def began(self, source: str) -> None:
        """A link starts a poll step (connect if need be, poll, hand its readings over).

        Its readings of the step before, if still held, go on first: a merged batch holds one
        poll per link, so a tag is in it once and its stamp is its poll's (a link polling back
        to back, or faster than `hold`, would otherwise put several polls in one batch).
        """
        if source in self._turn_sources:
            self._emit_turn()
        self._polling += 1

    def ended(self) -> None:
        """A link's poll step ended: the last one of a tick sends the tick's readings on."""
        self._polling -= 1
        if not self._polling and self._turn:
            self._emit_turn()

    def collect_readings(self, batch: ReadingBatch) -> None:
        """A link's readings, merged with those of every link polled in the same tick and then
        emitted as one batch: one pass through the pipeline, one record in the store.

        The links woken for a tick poll concurrently; their batches are held until the last
        of them has ended its step (`ended`), or for `hold` seconds at most, so a slow or dead
        PLC delays the others' readings by no more than that. A batch that arrives while no
        link polls (a subscription's) goes on at the end of this turn of the loop.
        """
        self._turn.append(batch)
        self._turn_sources.add(batch.source)
        if len(self._turn) == 1:
            loop = asyncio.get_running_loop()
            if self._polling:
                self._hold = loop.call_later(self.hold, self._emit_turn)
            else:
                loop.call_soon(self._emit_turn)

    def _emit_turn(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        batches, self._turn = self._turn, []
        self._turn_sources.clear()
        if batches:
            self.emit_readings(merge(batches))

    def emit_readings(self, batch: ReadingBatch) -> None:
        n = len(batch)
        self.samples += n
        batch, non_finite = mark_non_finite(batch)
        if non_finite is not None:
            self._non_finite_read(batch, non_finite)
        # Index with intp once: numpy converts int32 indices on every use otherwise.
        at = batch.tag_ids.astype(np.intp)
        self.latest_values[at] = batch.values
        self.latest_quality[at] = batch.quality
        ts = batch.ts_ns
        # One timestamp per batch is stored as a scalar: broadcasting it costs more than it.
        self.latest_ts_ns[at] = ts[0] if ts.shape[0] == 1 else ts
        if self.filter is not None:
            batch = self.filter.filter(batch)
            if not len(batch):
                return
        self.writer.submit_readings(batch)
        if self.kpi is not None:
            for event in self.kpi.on_batch(batch):
                self.writer.submit_event(event)
        for alarm in self.alarms.on_batch(batch):
            self.emit_event(alarm)

    def _tag_path(self, tag_id: int) -> str:
        """A tag's path by its id (the table of the running config, reloads included)."""
        try:
            return self.tags.by_id(tag_id).path
        except KeyError:
            return f"#{tag_id}"

    def _tag_source(self, tag_id: int) -> str:
        try:
            return self.tags.by_id(tag_id).source
        except KeyError:
            return ""

    def _non_finite_read(self, batch: ReadingBatch, rows: npt.NDArray[np.bool_]) -> None:
        """The reason of readings `mark_non_finite` made bad: counted per source (the page's
        and /metrics' `non_finite` errors) and logged once per tag and run."""
        at = np.flatnonzero(rows)
        ids = batch.tag_ids[at]
        # A merged batch holds several sources' readings: each is counted by its tag's source.
        for name, count in collections.Counter(self._tag_source(int(i)) for i in ids).items():
            link = self.links.get(name)
            if link is not None:
                link.non_finite += count
        new = ~self._non_finite_logged[ids]
        if not bool(new.any()):
            return
        self._non_finite_logged[ids[new]] = True
        named = [
            f"{self.tags.by_id(int(i)).path} = {float(v)}"
            for i, v in zip(ids[new][:5], batch.values[at][new][:5], strict=True)
        ]
        more = int(np.count_nonzero(new)) - len(named)
        log.warning(
            "%s: non-finite value read, stored with bad quality: %s%s",
            batch.source,
            ", ".join(named),
            f" and {more} more tags" if more > 0 else "",
        )

    def emit_event(self, event: Event) -> None:
        self.writer.submit_event(event)
        if self.kpi is not None:  # inspection verdicts count into quality where configured
            for kpi_event in self.kpi.on_event(event):
                self.writer.submit_event(kpi_event)
        for listener in self.event_listeners:
            try:
                listener(event)
            except Exception:  # a live view's bug must not stop acquisition
                log.exception("an event listener failed")

"""The running agent: sources polled into the pipeline and the SQLite log, in one TaskGroup.

`Agent(config)` builds everything once (the tag table, each source's runtime from the registry,
the report-by-exception filter, the store and its writer thread); `await agent.run(stop)` polls
until `stop` is set, then drains: every reading already handed to the writer is committed
before `run` returns, so SIGTERM loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agent.clock import Clock, SystemClock
from agent.config import Config
from agent.forward import Forwarder, ForwardSettings
from agent.model import DataType, Event, Quality, ReadingBatch
from agent.pipeline import ReportByException
from agent.poller import LinkStatistics, run_link
from agent.registry import runtime_class
from agent.scheduler import Schedule
from agent.sink import SinkContext, TagMeta
from agent.source import Source
from agent.store import Store, StoreWriter, TagInfo
from agent.tags import TagTable

log = logging.getLogger("lineside.agent")


STATUS_FILE = "status.json"
STATUS_INTERVAL = 2.0  # seconds between rewrites of the status file
# Tag id arrays whose store ids are remembered (one per unit and poll group is typical).


def write_status(data_dir: Path, figures: dict[str, Any]) -> None:
    """Replace `<data_dir>/status.json` atomically (a reader never sees half a file)."""
    target = data_dir / STATUS_FILE
    temporary = target.with_suffix(".tmp")
    temporary.write_text(json.dumps(figures, default=str), encoding="utf-8")
    os.replace(temporary, target)


def sink_tags(
    stored: dict[int, TagInfo], types: Mapping[str, DataType] | None = None
) -> dict[int, TagMeta]:
    """The store's tags as sinks see them: each path split into its ISA-95 levels, with the
    declared type of the tags this config still has (`types`, by path; others: float64)."""
    tags = {}
    for tag_id, info in stored.items():
        site, area, line, machine, name = info.path.split("/", 4)
        kind = (types or {}).get(info.path, "float64")
        tags[tag_id] = TagMeta(info.path, site, area, line, machine, name, info.unit, kind)
    return tags


class Agent:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.tags = TagTable.from_config(config)
        self.sources: list[Source] = [
            runtime_class(s.type)(s, self.tags, self.clock) for s in config.sources
        ]
        data_dir = config.agent.data_dir
        self.store = Store(data_dir, synchronous=config.store.synchronous)
        ids = self.store.register_tags(
            TagInfo(path=t.path, machine=t.machine, name=t.name, unit=t.unit, source=t.source)
            for t in self.tags
        )
        # Stored batches carry the store's tag ids, which stay stable across restarts and
        # config edits; the hot path uses the dense ids of this run's tag table.
        self._store_ids = np.array([ids[t.path] for t in self.tags], dtype=np.int32)
        bounds = config.store
        self.writer = StoreWriter(
            data_dir,
            synchronous=bounds.synchronous,
            flush_interval=bounds.flush_interval,
            flush_rows=bounds.flush_rows,
            max_bytes=bounds.max_size,
            max_age=bounds.max_age,
            retention=bounds.retention,
        )
        self.filter: ReportByException | None = None
        if config.agent.report == "changes":
            self.filter = ReportByException(
                len(self.tags),
                *self.tags.deadbands(),
                heartbeat_ns=round(config.agent.heartbeat * 1e9),
            )
        sink_names = [s.name for s in config.sinks]
        self.store.register_sinks(sink_names)
        types = {t.path: t.type for t in self.tags}
        context = SinkContext(config.agent.id, sink_tags(self.store.tags(), types))
        forward = config.forward
        settings = ForwardSettings(
            batch_size=forward.batch_size,
            live_window=forward.live_window,
            replay_rate=forward.replay_rate,
        )
        self.forwarders = [
            Forwarder(
                runtime_class(s.type)(s, context), self.store, self.writer, self.clock, settings
            )
            for s in config.sinks
        ]
        self.links = {s.name: LinkStatistics() for s in self.sources}
        self.schedules = {s.name: Schedule(dict(s.poll_groups()), self.clock) for s in self.sources}
        # The latest reading of every tag, for live views (`lineside demo`, the status page).
        n = len(self.tags)
        self.latest_values = np.full(n, np.nan)
        self.latest_quality = np.full(n, Quality.BAD, dtype=np.uint8)
        self.latest_ts_ns = np.zeros(n, dtype=np.int64)
        self.samples = 0

    def emit_readings(self, batch: ReadingBatch) -> None:
        n = len(batch)
        self.samples += n
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
        self.writer.submit_readings(
            ReadingBatch(
                source=batch.source,
                tag_ids=self._store_ids[batch.tag_ids],
                values=batch.values,
                quality=batch.quality,
                ts_ns=batch.ts_ns,
            )
        )

    def emit_event(self, event: Event) -> None:
        self.writer.submit_event(event)

    async def run(self, stop: asyncio.Event | None = None, duration: float | None = None) -> None:
        """Poll until `stop` is set (or `duration` seconds passed), then drain and close."""
        stop = stop or asyncio.Event()
        log.info(
            "agent %s: %d sources, %d tags, store %s",
            self.config.agent.id,
            len(self.sources),
            len(self.tags),
            self.store.path,
        )
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        run_link(
                            source,
                            self.clock,
                            self.emit_readings,
                            self.emit_event,
                            stats=self.links[source.name],
                            schedule=self.schedules[source.name],
                        ),
                        name=f"link-{source.name}",
                    )
                    for source in self.sources
                ]
                tasks += [
                    group.create_task(f.run(), name=f"sink-{f.sink.name}") for f in self.forwarders
                ]
                tasks.append(group.create_task(self._publish_status(), name="status-file"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration)
                for task in tasks:
                    task.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.writer.flush()
            with contextlib.suppress(OSError):
                write_status(self.config.agent.data_dir, self.statistics())
            self.writer.close()
            self.store.close()
            log.info("agent %s: stopped, store drained", self.config.agent.id)

    async def _publish_status(self) -> None:
        """Write the statistics next to the store every few seconds for `lineside status`."""
        while True:
            write_status(self.config.agent.data_dir, self.statistics())
            await self.clock.sleep_until(self.clock.monotonic() + STATUS_INTERVAL)

    def statistics(self) -> dict[str, Any]:
        """Every figure the agent keeps, as plain data (JSON-ready)."""
        sources: dict[str, Any] = {}
        for source in self.sources:
            schedule = self.schedules[source.name].statistics()
            sources[source.name] = {
                **source.statistics(),
                "link": asdict(self.links[source.name]),
                "groups": {name: asdict(s) for name, s in schedule.items()},
            }
        sinks = {
            f.sink.name: {**f.sink.statistics(), "forward": asdict(f.stats)}
            for f in self.forwarders
        }
        filtered = self.filter.statistics() if self.filter is not None else None
        return {
            "agent_id": self.config.agent.id,
            "written_ns": self.clock.time_ns(),
            "tags": len(self.tags),
            "samples": self.samples,
            "sources": sources,
            "sinks": sinks,
            "pipeline": asdict(filtered) if filtered is not None else None,
            "store": asdict(self.writer.statistics()),
        }

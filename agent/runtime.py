"""The running agent: sources polled into the pipeline and the SQLite log, in one TaskGroup.

`Agent(config)` builds everything once (the tag table, each source's runtime from the registry,
the report-by-exception filter, the store and its writer thread); `await agent.run(stop)` polls
until `stop` is set, then drains: every reading already handed to the writer is committed
before `run` returns, so SIGTERM loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.alarms import AlarmBook, AlarmRule, rules_of
from agent.clock import Clock, SystemClock
from agent.codenames import CodeNames
from agent.config.loader import load_config
from agent.config.sections import Config
from agent.errors import ConfigError, LinesideError, one_line
from agent.forward import Forwarder, ForwardSettings
from agent.inspections import build_inspectors
from agent.kpi.engine import KpiEngine
from agent.kpi.resume import resume
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.notify import Notifier
from agent.pipeline import ReportByException, mark_non_finite, merge
from agent.poller import LINK_BACKOFF_MAX, Backoff, LinkStatistics, run_link
from agent.reasonlog import record_reasons
from agent.reasons import reasons_of
from agent.registry import runtime_class
from agent.reload import (
    ConfigChange,
    audit_data,
    difference,
    effective,
    merged_tags,
    summary,
)
from agent.scheduler import Schedule, Wakeups
from agent.sink import SinkContext
from agent.snapshot import AgentSnapshot, take_snapshot
from agent.source import ReportsChanges, Source
from agent.status_file import STATUS_FILE as STATUS_FILE
from agent.status_file import keep_status_file, status_figures, write_status
from agent.store import Store, StoreWriter
from agent.tags import Tag, TagTable, config_tags
from agent.texts import TextRecorder
from agent.web.andon import StateTrace
from agent.web.config import WebError

if TYPE_CHECKING:
    from agent.web.server import WebServer
    from agent.web.state import StateBuilder
    from vision.inspector import Inspector

ALARMS_META = "alarms_active"  # the store's meta key of the alarms active at the last stop
log = logging.getLogger("lineside.agent")


STATUS_INTERVAL = 2.0  # seconds between rewrites of the status file
KPI_TICK = 1.0  # seconds between closing the KPI windows of silent machines
# At stop, how long the drain waits for a store that takes no writes (full, failing) before
# it gives up on what is still pending: SIGTERM is honoured within a few seconds, always.
DRAIN_STALL = 3.0


def _first_leaf(exc: BaseException) -> BaseException:
    """The first exception a TaskGroup's group holds (itself when not a group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def sink_tags(stored: Mapping[int, Tag], table: Iterable[Tag] = ()) -> dict[int, Tag]:
    """Every tag the store knows, as sinks see them: this run's own `Tag` records where the
    config still has the tag (with its declared type), the store's for the others (a backlog
    may hold their readings; their values travel as float64)."""
    return {**stored, **{t.id: t for t in table}}


@dataclass(frozen=True)
class _ReloadPlan:
    """What a reload built, ready to swap in (`Agent._reload_plan`)."""

    config: Config
    change: ConfigChange
    tags: TagTable
    tags_added: int
    sources: dict[str, Source]  # the sources added or changed, by name
    forwarders: dict[str, Forwarder]  # the sinks added or started again, by name
    alarms: list[AlarmRule]  # the [[alarms]] of the new config, bound to the new tags' ids


class Agent:
    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        data_dir = config.agent.data_dir
        self.store = Store(data_dir, synchronous=config.store.synchronous)
        # The one Tag record of each configured tag, with the store's id (stable across
        # restarts and config edits): the id every ReadingBatch carries, from source to sink.
        self.tags = TagTable.registered(config_tags(config), self.store.register_tags)
        self.sources: list[Source] = [
            runtime_class(s.type)(s, self.tags, self.clock) for s in config.sources
        ]
        for source in self.sources:
            if isinstance(source, ReportsChanges):
                source.heartbeat = config.agent.heartbeat
        bounds = config.store
        self.writer = StoreWriter(
            data_dir,
            synchronous=bounds.synchronous,
            flush_interval=bounds.flush_interval,
            flush_rows=bounds.flush_rows,
            max_bytes=bounds.max_size,
            max_age=bounds.max_age,
            max_pending_readings=bounds.max_pending,
            # Age bounds on the clock the records are stamped with (a simulated plant's too).
            clock=self.clock.time_ns,
        )
        self.filter: ReportByException | None = None
        if config.agent.report == "changes":
            self.filter = ReportByException(
                self.tags.size,
                *self.tags.deadbands(),
                heartbeat_ns=round(config.agent.heartbeat * 1e9),
            )
        sink_names = [s.name for s in config.sinks]
        self.store.register_sinks(sink_names)
        # Sinks that publish the agent's status (the MQTT fleet view) call `fleet_status`.
        context = SinkContext(
            config.agent.id,
            sink_tags(self.store.tags(), self.tags),
            self.store,
            status=self.fleet_status,
            names=CodeNames.of(config),
        )
        self._started = self.clock.monotonic()  # for the uptime; `run` sets it again
        self._state: StateBuilder | None = None  # the status figures when there is no page
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
        self._settings = settings
        self.links = {s.name: LinkStatistics() for s in self.sources}
        # Every link's grid aligned on one set of timers: links due at the same instant wake in
        # one turn of the loop, and their readings go on as one batch (`collect_readings`).
        self.wakeups = Wakeups(self.clock)
        self.schedules = {s.name: self._schedule(s) for s in self.sources}
        self._turn: list[ReadingBatch] = []  # readings of this turn of the loop, not yet merged
        # The latest reading of every tag, for live views (`lineside demo`, the status page).
        n = self.tags.size  # indexed by tag id
        self.latest_values = np.full(n, np.nan)
        self.latest_quality = np.full(n, Quality.BAD, dtype=np.uint8)
        self.latest_ts_ns = np.zeros(n, dtype=np.int64)
        self.samples = 0
        # Tags whose non-finite value was logged: once per tag and run, the counter does the rest.
        self._non_finite_logged = np.zeros(n, dtype=np.bool_)
        # OEE per machine and line from the stored readings (report-by-exception applied, store
        # ids), so the KPIs agree with what the store holds; None without [machines.kpi].
        self.kpi: KpiEngine | None = None
        ids = {t.path: t.id for t in self.tags}
        self._kpi_ids = ids
        # Each machine's state as the engine folds it, from the store at start on: the page's
        # andon timeline of the shift (agent/web/andon.py).
        self.state_trace = StateTrace()
        if any(m.kpi is not None for m in config.machines):
            self.kpi = KpiEngine(config, ids)
            self.kpi.trace = self.state_trace
        # The [[alarms]] conditions, evaluated on the stored batches (store ids), like the KPIs.
        self.alarms = AlarmBook.from_config(
            config.alarms,
            {(t.machine, t.name): ids[t.path] for t in self.tags},
            self.clock.time_ns(),
            {m.name: m.kpi for m in config.machines if m.kpi is not None},
        )
        self._restore_alarms()
        self.web: WebServer | None = None  # the status page, once bound (agent/web/)
        # systemd's notify socket (READY, WATCHDOG, STOPPING); silent outside systemd.
        self.notifier = Notifier.from_environment()
        # Live views that want every event as it happens (the page's verdict log); called after
        # the store and the KPI engine have it, and never allowed to cost the agent an event.
        self.event_listeners: list[Callable[[Event], None]] = []
        # Text tags' strings, stored on change as `text` events beside the batches.
        self.texts = TextRecorder(
            lambda: self.sources, lambda: self.tags, self.links, self.clock, self.emit_event
        )
        # Vision is imported only when the config has inspections (onnxruntime, OpenCV).
        self.inspectors: list[Inspector] = self._inspectors() if config.inspections else []
        # The running TaskGroup and each source's and sink's task in it ("source a", "sink b"),
        # so a config reload can stop and start them one by one.
        self._group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()

    def _schedule(self, source: Source) -> Schedule:
        return Schedule(dict(source.poll_groups()), self.clock, align=True, wakeups=self.wakeups)

    def _inspectors(self) -> list[Inspector]:
        return build_inspectors(
            self.config,
            clock=self.clock,
            emit_event=self.emit_event,
            read_tag=lambda machine: functools.partial(self._tag_reader, machine),
        )

    def _tag_reader(self, machine: str, name: str) -> Callable[[], float]:
        """The latest value of one tag, NaN while unknown or bad (a vision trigger reads it)."""
        at = self.tags.id_of(machine, name)

        def read() -> float:
            if self.latest_quality[at] == Quality.BAD:
                return float("nan")
            return float(self.latest_values[at])

        return read

    def inspections(self) -> dict[str, Any]:
        """Each inspection's latest verdict and counters (as status.json has them)."""
        return self.snapshot().inspection_figures()

    async def _supervised(
        self, what: str, run: Callable[[], Awaitable[None]], failed: Callable[[str], None]
    ) -> None:
        """Run `run()` until it returns; when it raises, log one line, hand `failed` the reason
        and run it again after a back-off. One source, sink or inspection failing in a way
        nobody foresaw never ends the agent nor stops the others (the traceback goes to the
        debug log; the same reason again is logged at debug level only)."""
        backoff = Backoff(maximum=LINK_BACKOFF_MAX)
        rng = random.Random()
        logged = ""
        while True:
            try:
                await run()
                return
            except Exception as exc:
                why = one_line(_first_leaf(exc))
                level = logging.ERROR if why != logged else logging.DEBUG
                log.log(level, "%s failed: %s; starting it again", what, why)
                log.debug("%s failed", what, exc_info=exc)
                logged = why
                try:
                    failed(why)
                except Exception as again:
                    log.error("%s: %s", what, one_line(again))
            await self.clock.sleep_until(self.clock.monotonic() + backoff.next(rng))

    def _source_failed(self, source: Source, why: str) -> None:
        """Its tags read bad until it runs again, and its status says why."""
        link = self.links[source.name]
        link.state, link.last_error = "lost", why
        for batch in source.bad_batches(list(source.poll_groups()), self.clock.time_ns()):
            self.emit_readings(batch)

    @staticmethod
    def _sink_failed(forwarder: Forwarder, why: str) -> None:
        forwarder.stats.failures += 1
        forwarder.stats.state, forwarder.stats.last_error = "failing", why

    @staticmethod
    def _inspection_failed(inspector: Inspector, why: str) -> None:
        inspector.stats.last_error = why

    def _start_source(self, source: Source) -> None:
        """Poll `source` in the running TaskGroup, supervised (a reload starts sources too)."""
        assert self._group is not None
        self._tasks[f"source {source.name}"] = self._group.create_task(
            self._supervised(
                f"source {source.name}",
                functools.partial(
                    run_link,
                    source,
                    self.clock,
                    self.collect_readings,
                    self.emit_event,
                    stats=self.links[source.name],
                    schedule=self.schedules[source.name],
                ),
                functools.partial(self._source_failed, source),
            ),
            name=f"link-{source.name}",
        )

    def _start_sink(self, forwarder: Forwarder) -> None:
        """Forward to `forwarder`'s sink in the running TaskGroup, supervised."""
        assert self._group is not None
        name = forwarder.sink.name
        self._tasks[f"sink {name}"] = self._group.create_task(
            self._supervised(
                f"sink {name}", forwarder.run, functools.partial(self._sink_failed, forwarder)
            ),
            name=f"sink-{name}",
        )

    async def _stop_task(self, key: str) -> None:
        """Cancel one source's or sink's task and wait until it closed its connection."""
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.wait({task})

    def request_reload(self) -> None:
        """SIGHUP: reload the config file in a task of its own (a signal handler cannot wait)."""
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self, config: Config | None = None) -> bool:
        """Read the config file again (or take `config`) and apply what changed while polling
        (agent/reload.py says what can change). True: applied; False: refused, the problems
        logged one a line and the running config kept."""
        async with self._reloading:
            if self._group is None:
                log.warning("reload: the agent is not polling (starting or stopping); ignored")
                return False
            self.notifier.reloading()
            try:
                return await self._reload(config)
            except Exception as exc:  # a bug of ours: logged, never the end of the agent
                log.error("reload failed: %s", one_line(exc))
                log.debug("reload failed", exc_info=exc)
                return False
            finally:
                self.notifier.ready()

    async def _reload(self, config: Config | None) -> bool:
        if config is None:
            try:
                config = await asyncio.to_thread(load_config, self.config.file)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("reload refused: %s", problem)
                n = len(exc.problems)
                log.error(
                    "reload refused: %d problem%s in %s; the running config is kept",
                    n,
                    "" if n == 1 else "s",
                    self.config.file,
                )
                return False
            except Exception as exc:  # the file cannot be read at all
                log.error("reload refused: %s; the running config is kept", one_line(exc))
                return False
        change = difference(self.config, config)
        for key in change.needs_restart:
            log.warning("reload: needs a restart: %s; the running value is kept", key)
        target = effective(self.config, config, change)
        try:
            plan = self._reload_plan(target, change)
        except Exception as exc:  # a connector that cannot be built, a store that is full
            log.error("reload refused: %s; the running config is kept", one_line(exc))
            log.debug("reload refused", exc_info=exc)
            return False
        await self._apply_reload(plan)
        return True

    def _reload_plan(self, target: Config, change: ConfigChange) -> _ReloadPlan:
        """Everything the reload builds, built before anything running is stopped, so a
        failure here refuses the reload with the agent untouched."""
        # New tags get the store's ids; the store takes the new settings (unit, source) of the
        # others and keeps the source a tag no longer configured came from.
        tags, added = merged_tags(self.tags, target, self.store.register_tags)
        self.store.register_tags([t for t in tags if t.source])
        old_sources = self.config.sources_by_name
        sources: dict[str, Source] = {}
        for spec in target.sources:
            if spec.name in old_sources and old_sources[spec.name] == spec:
                continue
            source = runtime_class(spec.type)(spec, tags, self.clock)
            if isinstance(source, ReportsChanges):
                source.heartbeat = target.agent.heartbeat
            sources[spec.name] = source
        # New tags must reach every sink's description of them (a Sparkplug birth, a tag
        # table): then every sink starts again, from its cursor, so nothing is sent twice.
        old_sinks = self.config.sinks_by_name
        restart = {s.name for s in target.sinks if added or old_sinks.get(s.name) != s}
        context = SinkContext(
            target.agent.id, sink_tags(self.store.tags(), tags), self.store,
            status=self.fleet_status,
        )  # fmt: skip
        forwarders = {}
        for s in target.sinks:
            if s.name in restart:
                sink = runtime_class(s.type)(s, context)
                forwarders[s.name] = Forwarder(
                    sink, self.store, self.writer, self.clock, self._settings
                )
        kpis = {m.name: m.kpi for m in target.machines if m.kpi is not None}
        alarms = rules_of(target.alarms, {(t.machine, t.name): t.id for t in tags}, kpis)
        return _ReloadPlan(target, change, tags, added, sources, forwarders, alarms)

    async def _apply_reload(self, plan: _ReloadPlan) -> None:
        """Stop what goes or changes, swap the tables, start what is new; the store writer,
        the KPI engine's open windows and the unchanged sources and sinks run on."""
        target_sources = {s.name for s in plan.config.sources}
        for source in self.sources:
            if source.name not in target_sources or source.name in plan.sources:
                await self._stop_task(f"source {source.name}")
        target_sinks = {s.name for s in plan.config.sinks}
        for forwarder in self.forwarders:
            name = forwarder.sink.name
            if name not in target_sinks or name in plan.forwarders:
                await self._stop_task(f"sink {name}")
        # From here on nothing awaits until the new tasks run: the page and the pipeline
        # never see half a reload.
        self._grow_tags(plan.tags)
        running = {s.name: s for s in self.sources}
        self.sources = [plan.sources.get(s.name) or running[s.name] for s in plan.config.sources]
        for source in self.sources:
            if source.name in plan.sources or source.name not in self.links:
                self.links[source.name] = LinkStatistics()
                self.schedules[source.name] = self._schedule(source)
        for name in set(self.links) - target_sources:
            del self.links[name], self.schedules[name]
        sinks = {f.sink.name: f for f in self.forwarders}
        self.forwarders = [plan.forwarders.get(s.name) or sinks[s.name] for s in plan.config.sinks]
        try:  # a new sink starts at the store's first record; a removed one lets records go
            self.store.register_sinks(target_sinks)
        except LinesideError as exc:
            log.error("reload: %s", exc)
        self.config = plan.config
        # Alarms added, removed or changed; the others keep their state and acknowledgement.
        for event in self.alarms.reconfigure(plan.alarms, self.clock.time_ns()):
            self.emit_event(event)
        machines = list(dict.fromkeys(t.machine for t in self.tags if t.source))
        for builder in (self.web.state if self.web is not None else None, self._state):
            if builder is not None:  # the page's machines: a reload may add some
                builder.machines = machines
        for source in self.sources:
            if source.name in plan.sources:
                self._start_source(source)
        for forwarder in self.forwarders:
            if forwarder.sink.name in plan.forwarders:
                self._start_sink(forwarder)
        line = summary(plan.change, plan.tags_added)
        log.info("%s", line)
        data = audit_data(plan.change, plan.tags_added, line)
        self.writer.submit_event(Event(EventKind.AUDIT, self.clock.time_ns(), None, data))

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

    def collect_readings(self, batch: ReadingBatch) -> None:
        """A link's readings, merged with those of every link whose poll ended in this same
        turn of the event loop (woken by one timer, their answers came in together) and then
        emitted as one batch: one pass through the pipeline, one record in the store."""
        self._turn.append(batch)
        if len(self._turn) == 1:
            asyncio.get_running_loop().call_soon(self._emit_turn)

    def _emit_turn(self) -> None:
        batches, self._turn = self._turn, []
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

    async def run(self, stop: asyncio.Event | None = None, duration: float | None = None) -> None:
        """Poll until `stop` is set (or `duration` seconds passed), then drain and close."""
        stop = stop or asyncio.Event()
        self._started = self.clock.monotonic()
        log.info(
            "agent %s: %d sources, %d tags, store %s",
            self.config.agent.id,
            len(self.sources),
            len(self.tags),
            self.store.path,
        )
        try:
            if self.kpi is not None:
                self._resume_kpi()
            if self.config.web.enabled and self.web is None:
                try:
                    await self.start_web()
                except WebError as exc:  # acquisition matters more than the page
                    log.warning("%s; the agent runs without it", exc)
            async with asyncio.TaskGroup() as group:
                self._group = group
                for source in self.sources:
                    self._start_source(source)
                for forwarder in self.forwarders:
                    self._start_sink(forwarder)
                tasks: list[asyncio.Task[None]] = []
                tasks += [
                    group.create_task(
                        self._supervised(
                            f"inspection {i.name}",
                            i.run,
                            functools.partial(self._inspection_failed, i),
                        ),
                        name=f"inspect-{i.name}",
                    )
                    for i in self.inspectors
                ]
                tasks.append(group.create_task(self._publish_status(), name="status-file"))
                # Why tags read bad, stored as it changes: export names the reason of a row.
                tasks.append(
                    group.create_task(
                        record_reasons(self.sources, self._tag_path, self.clock, self.emit_event),
                        name="reasons",
                    )
                )
                tasks.append(group.create_task(self.texts.run(), name="texts"))
                if self.kpi is not None:
                    tasks.append(group.create_task(self._tick_kpi(), name="kpi"))
                # always: a reload may add alarms to an agent that started without any
                tasks.append(group.create_task(self._tick_alarms(), name="alarms"))
                if self.web is not None:
                    tasks.append(group.create_task(self.web.serve(), name="web"))
                # systemd's READY=1 and watchdog, created last so READY=1 follows every task's
                # start; fed from this loop, so a loop stuck for WatchdogSec gets restarted.
                tasks.append(group.create_task(self.notifier.serve(), name="notify"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), duration)
                self.notifier.stopping()
                async with self._reloading:  # a reload under way finishes first
                    self._group = None  # and none starts a task from now on
                    for task in [*tasks, *self._tasks.values(), *self._reloads]:
                        task.cancel()
        finally:
            if self.web is not None:
                await self.web.close()
            self._emit_turn()  # readings of the last turn, if its callback has not run
            drained = await self._drain()
            self._keep_alarms()
            with contextlib.suppress(OSError):
                write_status(self.config.agent.data_dir, self.statistics())
            # Once the drain gave up, close() only tells the writer thread to stop.
            drained = self.writer.close(DRAIN_STALL if drained else 0.1) and drained
            self.store.close()
            if drained:
                log.info("agent %s: stopped, store drained", self.config.agent.id)
            else:
                left = self.writer.statistics()
                log.error(
                    "agent %s: stopped; the store took no writes (%s): %d readings and %d "
                    "events that waited in memory were not stored",
                    self.config.agent.id,
                    left.full_reason or left.last_error,
                    left.pending_readings,
                    left.pending_events,
                )

    async def _drain(self) -> bool:
        """Wait until everything submitted is committed, as long as the store takes writes;
        one that is full or failing gets DRAIN_STALL seconds. False: it gave up."""
        flushed = asyncio.ensure_future(self.writer.flush())
        stalled_since = time.monotonic()
        while True:
            done, _ = await asyncio.wait({flushed}, timeout=0.05)
            if done:
                return not flushed.exception()
            stats = self.writer.statistics()
            if not stats.store_full and stats.last_error is None:
                stalled_since = time.monotonic()  # it commits: a long drain is no stall
            elif time.monotonic() - stalled_since > DRAIN_STALL:
                flushed.cancel()
                return False

    def _resume_kpi(self) -> None:
        """Rebuild the open KPI windows from the stored readings before polling, so a restart
        mid-shift loses only the time the agent was stopped (agent/kpi/replay.py)."""
        assert self.kpi is not None
        data_dir = self.config.agent.data_dir
        step = [0]

        def progress(done: int, total: int) -> None:
            tenth = 10 * done // total if total else 10
            if tenth > step[0]:  # one line per tenth of the way
                step[0] = tenth
                log.info("kpi: resuming the open windows, %d of %d stored records", done, total)

        try:
            resumed = resume(self.kpi, self.config, self.clock.time_ns(), data_dir=data_dir,
                             progress=progress)  # fmt: skip
        except LinesideError as exc:  # acquisition matters more than the windows' past
            log.warning("kpi: cannot resume the open windows (%s); they start again now", exc)
            self.kpi = KpiEngine(self.config, self._kpi_ids)
            self.state_trace.machines.clear()  # what the failed replay traced, half done
            self.kpi.trace = self.state_trace
            return
        for event in resumed.events:
            self.writer.submit_event(event)
        log.info(
            "kpi: resumed from %d stored records; %d KPI records were stored, %d are stored now",
            resumed.records,
            resumed.held,
            len(resumed.events),
        )

    async def start_web(self) -> WebServer:
        """Bind the status page now (`run` serves it); raises WebError naming the port when
        it is taken, TokenError when the configured token cannot be read."""
        from agent.web.server import WebServer

        if self.web is None:
            self.web = await WebServer.start(self)
        return self.web

    async def _tick_kpi(self) -> None:
        """Close the KPI windows of machines that stopped reporting, once a second."""
        assert self.kpi is not None
        while True:
            for event in self.kpi.tick(self.clock.time_ns()):
                self.writer.submit_event(event)
            await self.clock.sleep_until(self.clock.monotonic() + KPI_TICK)

    def _restore_alarms(self) -> None:
        """The alarms the last run left active (kept in the store's meta on stop)."""
        raw = self.store.get_meta(ALARMS_META)
        if not raw or not self.alarms.rules:
            return
        try:
            saved = json.loads(raw)
        except ValueError:
            log.warning("alarms: the active alarms kept at the last stop are unreadable")
            return
        if isinstance(saved, dict) and (n := self.alarms.restore(saved)):
            log.info("alarms: %d active at the last stop, still active until cleared", n)

    def _keep_alarms(self) -> None:
        """Keep the active alarms for the next run: it clears them, never raises them twice."""
        try:
            self.store.set_meta(ALARMS_META, json.dumps(self.alarms.active()))
        except Exception as exc:  # a store that takes no writes: the next run raises anew
            log.warning("alarms: cannot keep the active alarms: %s", exc)

    async def _tick_alarms(self) -> None:
        """Raise the alarms whose delay or staleness ran out between readings, once a second."""
        while True:
            for event in self.alarms.tick(self.clock.time_ns()):
                self.emit_event(event)
            await self.clock.sleep_until(self.clock.monotonic() + KPI_TICK)

    def acknowledge_alarm(self, name: str, by: str) -> bool:
        """An operator acknowledged an active alarm: stored and forwarded as an audit event.
        False when there is no such active, unacknowledged alarm."""
        event = self.alarms.acknowledge(name, by, self.clock.time_ns())
        if event is None:
            return False
        log.info("alarm %s acknowledged by %s", name, by)
        self.emit_event(event)
        return True

    def kpi_snapshot(self) -> dict[str, Any] | None:
        """Live OEE of the shift in progress (the day outside shifts); None without KPIs."""
        return self.kpi.snapshot(self.clock.time_ns()) if self.kpi is not None else None

    async def fleet_status(self) -> dict[str, Any]:
        """The figures of the agent's fleet status message (agent/fleet.py), made from the
        status page's own figures: the page's builder when it runs, else one of our own."""
        from agent import __version__
        from agent.fleet import agent_status
        from agent.web.state import StateBuilder

        if self.web is not None:
            builder = self.web.state
        else:
            if self._state is None:
                self._state = StateBuilder(self)
            builder = self._state
        figures = await builder.figures()
        uptime = max(0.0, self.clock.monotonic() - self._started)
        return agent_status(figures, version=__version__, uptime_s=uptime)

    async def _publish_status(self) -> None:
        await keep_status_file(self, STATUS_INTERVAL)

    def bad_reasons(self, source: Source) -> dict[str, int]:
        """Why tags of `source` read bad now: reason → tags; empty when all read good.

        From the source's own reasons (agent/reasons.py); a connector that keeps none is
        judged by its link alone (every tag bad for the link's error while it is down).
        """
        reasons = reasons_of(source)
        if reasons is not None:
            return reasons.summary()
        link = self.links[source.name]
        if link.state == "connected":
            return {}
        return {link.last_error or f"link {link.state}": self.tags_of_source(source.name)}

    def tag_reasons(self, source: Source) -> dict[int, str]:
        """Tag id → why it reads bad, for the bad tags of `source` (as `bad_reasons`)."""
        reasons = reasons_of(source)
        if reasons is not None:
            return reasons.by_tag()
        why = next(iter(self.bad_reasons(source)), "")
        return {t.id: why for t in self.tags if t.source == source.name} if why else {}

    def tags_of_source(self, name: str) -> int:
        return self._tags_by_source.get(name, 0)

    @functools.cached_property
    def _tags_by_source(self) -> dict[str, int]:
        return dict(collections.Counter(t.source for t in self.tags))

    def snapshot(self) -> AgentSnapshot:
        """Every figure the agent keeps now (agent/snapshot.py), typed and frozen: taken on
        the status tick for status.json and by the page for `/api/state` and `/metrics`."""
        return take_snapshot(self)

    def statistics(self) -> dict[str, Any]:
        """Every figure the agent keeps, as plain data (JSON-ready): `status.json`."""
        return status_figures(self.snapshot())

"""The running agent: sources polled into the pipeline and the SQLite log, in one TaskGroup.

`Agent(config)` builds everything once (the tag table, each source's runtime from the registry,
the report-by-exception filter, the store and its writer thread); `await agent.run(stop)` polls
until `stop` is set, then drains: every reading already handed to the writer is committed
before `run` returns, so SIGTERM loses nothing.

Its parts, by what each owns: the readings' path from the links to the store (agent/readings.py),
the supervisor that starts a failed task again (agent/supervisor.py), a reload applied to the
running agent (agent/reloading.py), what carries across a restart (agent/restarts.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

from agent import reloading, restarts
from agent.alarms import AlarmBook
from agent.clock import Clock, SystemClock
from agent.codenames import CodeNames
from agent.config.sections import Config
from agent.forward import Forwarder
from agent.inspections import build_inspectors
from agent.kpi.engine import KpiEngine
from agent.lane import ForwardSettings
from agent.notify import Notifier
from agent.pipeline import ReportByException
from agent.poller import LinkStatistics, run_link
from agent.readings import Readings
from agent.reasonlog import record_reasons
from agent.reasons import reasons_of
from agent.registry import runtime_class
from agent.scheduler import Schedule, Wakeups
from agent.sink import SinkContext
from agent.sink import sink_tags as sink_tags
from agent.snapshot import AgentSnapshot, take_snapshot
from agent.source import ReportsChanges, Source
from agent.status_file import STATUS_FILE as STATUS_FILE
from agent.status_file import keep_status_file, status_figures, status_phase
from agent.store import Store, StoreWriter
from agent.supervisor import first_leaf, inspection_failed, sink_failed, supervise
from agent.tags import TagTable, config_tags
from agent.texts import TextRecorder
from agent.web.andon import StateTrace
from agent.web.config import WebError

if TYPE_CHECKING:
    from agent.web.server import WebServer
    from agent.web.state import StateBuilder
    from vision.inspector import Inspector

log = logging.getLogger("lineside.agent")

STATUS_INTERVAL = 2.0  # seconds between rewrites of the status file
KPI_TICK = 1.0  # seconds between closing the KPI windows of silent machines

_first_leaf = first_leaf  # its name here before agent/supervisor.py (tests import it)


class Agent(Readings):
    """The running agent; its readings' path (`collect_readings`, `emit_readings`,
    `emit_event`) and latest values are its `Readings` part (agent/readings.py)."""

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
        # The latest snapshot and the config it was taken under (`snapshot`'s max_age).
        self._snapshot: tuple[Config, AgentSnapshot] | None = None
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
        # one turn of the loop, and their readings go on as one batch once the last of them
        # has ended its poll (`collect_readings`).
        self.wakeups = Wakeups(self.clock)
        self.schedules = {s.name: self._schedule(s) for s in self.sources}
        # The latest reading of every tag, the turn's readings, the event listeners.
        self._init_readings()
        # OEE per machine and line from the stored readings (report-by-exception applied, store
        # ids), so the KPIs agree with what the store holds; None without [machines.kpi].
        self.kpi: KpiEngine | None = None
        ids = {t.path: t.id for t in self.tags}
        # Kept for `resume_kpi` only, so only with a KPI engine (0.4 MB at 20,000 tags).
        self._kpi_ids: dict[str, int] = {}
        # Each machine's state as the engine folds it, from the store at start on: the page's
        # andon timeline of the shift (agent/web/andon.py).
        self.state_trace = StateTrace()
        if any(m.kpi is not None for m in config.machines):
            self._kpi_ids = ids
            self.kpi = KpiEngine(config, ids)
            self.kpi.trace = self.state_trace
        # The [[alarms]] conditions, evaluated on the stored batches (store ids), like the KPIs.
        self.alarms = AlarmBook.from_config(
            config.alarms,
            {(t.machine, t.name): ids[t.path] for t in self.tags},
            self.clock.time_ns(),
            {m.name: m.kpi for m in config.machines if m.kpi is not None},
        )
        restarts.restore_alarms(self.store, self.alarms)
        self.web: WebServer | None = None  # the status page, once bound (agent/web/)
        # systemd's notify socket (READY, WATCHDOG, STOPPING); silent outside systemd.
        self.notifier = Notifier.from_environment()
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

    def inspections(self) -> dict[str, Any]:
        """Each inspection's latest verdict and counters (as status.json has them)."""
        return self.snapshot().inspection_figures()

    def _source_failed(self, source: Source, why: str) -> None:
        """Its tags read bad until it runs again, and its status says why."""
        link = self.links[source.name]
        link.state, link.last_error = "lost", why
        for batch in source.bad_batches(list(source.poll_groups()), self.clock.time_ns()):
            self.emit_readings(batch)

    def _start_source(self, source: Source) -> None:
        """Poll `source` in the running TaskGroup, supervised (a reload starts sources too)."""
        assert self._group is not None
        self._tasks[f"source {source.name}"] = self._group.create_task(
            supervise(
                f"source {source.name}",
                functools.partial(
                    run_link,
                    source,
                    self.clock,
                    self.collect_readings,
                    self.emit_event,
                    stats=self.links[source.name],
                    schedule=self.schedules[source.name],
                    polls=self,
                ),
                functools.partial(self._source_failed, source),
                self.clock,
            ),
            name=f"link-{source.name}",
        )

    def _start_sink(self, forwarder: Forwarder) -> None:
        """Forward to `forwarder`'s sink in the running TaskGroup, supervised."""
        assert self._group is not None
        name = forwarder.sink.name
        self._tasks[f"sink {name}"] = self._group.create_task(
            supervise(
                f"sink {name}", forwarder.run, functools.partial(sink_failed, forwarder), self.clock
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
        (agent/reload.py says what can change, agent/reloading.py applies it). True: applied;
        False: refused, the problems logged one a line and the running config kept."""
        return await reloading.reload(self, config)

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
                restarts.resume_kpi(self)
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
                        supervise(
                            f"inspection {i.name}",
                            i.run,
                            functools.partial(inspection_failed, i),
                            self.clock,
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
            await restarts.stop(self)

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
        # Figures up to one status tick old: the status file's snapshot, not one of its own.
        figures = await builder.figures(max_age=STATUS_INTERVAL, shared_age=STATUS_INTERVAL)
        uptime = max(0.0, self.clock.monotonic() - self._started)
        return agent_status(figures, version=__version__, uptime_s=uptime)

    async def _publish_status(self) -> None:
        intervals = [t.interval for s in self.schedules.values() for t in s.groups.values()]
        await keep_status_file(self, STATUS_INTERVAL, status_phase(intervals, STATUS_INTERVAL))

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

    @functools.cached_property
    def tag_machines(self) -> tuple[str, ...]:
        """The machines of the tag table, in its order: made once per table (a reload
        makes it again), not per status tick over every tag."""
        return tuple(dict.fromkeys(t.machine for t in self.tags))

    def snapshot(self, max_age: float = 0.0) -> AgentSnapshot:
        """Every figure the agent keeps now (agent/snapshot.py), typed and frozen: taken on
        the status tick for status.json and by the page for `/api/state` and `/metrics`.

        With `max_age`, the latest snapshot is handed out again while it is younger than that
        many seconds (and the config has not been reloaded since), so they share one rather
        than each taking its own (50 sources: ~1.5 ms): the status tick renders the page's
        when it is young, the fleet status the status tick's."""
        kept = self._snapshot
        if kept is not None and max_age > 0:
            config, taken = kept
            if config is self.config and self.clock.monotonic() - taken.monotonic < max_age:
                return taken
        taken = take_snapshot(self)
        self._snapshot = (self.config, taken)
        return taken

    def statistics(self) -> dict[str, Any]:
        """Every figure the agent keeps, as plain data (JSON-ready): `status.json`."""
        return status_figures(self.snapshot())

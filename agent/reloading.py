"""A config reload applied to the running agent (SIGHUP): the new config read and checked,
everything it needs built before anything running stops, then the sources, sinks and alarms
it changes stopped and started in the running TaskGroup. The writer, the tag ids, the KPI
windows and the unchanged sources and sinks run on.

agent/reload.py holds the pure parts (what changed, the grown tag table, the summary); this
module is the part that touches the running `Agent` (`Agent.reload` calls `reload`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.alarms import AlarmRule, rules_of
from agent.config.loader import load_config
from agent.config.sections import Config
from agent.errors import ConfigError, LinesideError, one_line
from agent.forward import Forwarder
from agent.model import Event, EventKind
from agent.poller import LinkStatistics
from agent.registry import runtime_class
from agent.reload import ConfigChange, audit_data, difference, effective, merged_tags, summary
from agent.sink import SinkContext, sink_tags
from agent.source import ReportsChanges, Source
from agent.tags import TagTable

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("lineside.agent")


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload built, ready to swap in (`plan`)."""

    config: Config
    change: ConfigChange
    tags: TagTable
    tags_added: int
    sources: dict[str, Source]  # the sources added or changed, by name
    forwarders: dict[str, Forwarder]  # the sinks added or started again, by name
    alarms: list[AlarmRule]  # the [[alarms]] of the new config, bound to the new tags' ids


async def reload(agent: Agent, config: Config | None) -> bool:
    """`Agent.reload`: one reload at a time, never while the agent starts or stops."""
    async with agent._reloading:
        if agent._group is None:
            log.warning("reload: the agent is not polling (starting or stopping); ignored")
            return False
        agent.notifier.reloading()
        try:
            return await _reload(agent, config)
        except Exception as exc:  # a bug of ours: logged, never the end of the agent
            log.error("reload failed: %s", one_line(exc))
            log.debug("reload failed", exc_info=exc)
            return False
        finally:
            agent.notifier.ready()


async def _reload(agent: Agent, config: Config | None) -> bool:
    if config is None:
        try:
            config = await asyncio.to_thread(load_config, agent.config.file)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            n = len(exc.problems)
            log.error(
                "reload refused: %d problem%s in %s; the running config is kept",
                n,
                "" if n == 1 else "s",
                agent.config.file,
            )
            return False
        except Exception as exc:  # the file cannot be read at all
            log.error("reload refused: %s; the running config is kept", one_line(exc))
            return False
    change = difference(agent.config, config)
    for key in change.needs_restart:
        log.warning("reload: needs a restart: %s; the running value is kept", key)
    target = effective(agent.config, config, change)
    try:
        built = plan(agent, target, change)
    except Exception as exc:  # a connector that cannot be built, a store that is full
        log.error("reload refused: %s; the running config is kept", one_line(exc))
        log.debug("reload refused", exc_info=exc)
        return False
    await apply(agent, built)
    return True


def plan(agent: Agent, target: Config, change: ConfigChange) -> ReloadPlan:
    """Everything the reload builds, built before anything running is stopped, so a
    failure here refuses the reload with the agent untouched."""
    # New tags get the store's ids; the store takes the new settings (unit, source) of the
    # others and keeps the source a tag no longer configured came from.
    tags, added = merged_tags(agent.tags, target, agent.store.register_tags)
    agent.store.register_tags([t for t in tags if t.source])
    old_sources = agent.config.sources_by_name
    sources: dict[str, Source] = {}
    for spec in target.sources:
        if spec.name in old_sources and old_sources[spec.name] == spec:
            continue
        source = runtime_class(spec.type)(spec, tags, agent.clock)
        if isinstance(source, ReportsChanges):
            source.heartbeat = target.agent.heartbeat
        sources[spec.name] = source
    # New tags must reach every sink's description of them (a Sparkplug birth, a tag
    # table): then every sink starts again, from its cursor, so nothing is sent twice.
    old_sinks = agent.config.sinks_by_name
    restart = {s.name for s in target.sinks if added or old_sinks.get(s.name) != s}
    context = SinkContext(
        target.agent.id, sink_tags(agent.store.tags(), tags), agent.store,
        status=agent.fleet_status,
    )  # fmt: skip
    forwarders = {}
    for s in target.sinks:
        if s.name in restart:
            sink = runtime_class(s.type)(s, context)
            forwarders[s.name] = Forwarder(
                sink, agent.store, agent.writer, agent.clock, agent._settings
            )
    kpis = {m.name: m.kpi for m in target.machines if m.kpi is not None}
    alarms = rules_of(target.alarms, {(t.machine, t.name): t.id for t in tags}, kpis)
    return ReloadPlan(target, change, tags, added, sources, forwarders, alarms)


async def apply(agent: Agent, plan: ReloadPlan) -> None:
    """Stop what goes or changes, swap the tables, start what is new; the store writer,
    the KPI engine's open windows and the unchanged sources and sinks run on."""
    target_sources = {s.name for s in plan.config.sources}
    for source in agent.sources:
        if source.name not in target_sources or source.name in plan.sources:
            await agent._stop_task(f"source {source.name}")
    target_sinks = {s.name for s in plan.config.sinks}
    for forwarder in agent.forwarders:
        name = forwarder.sink.name
        if name not in target_sinks or name in plan.forwarders:
            await agent._stop_task(f"sink {name}")
    # From here on nothing awaits until the new tasks run: the page and the pipeline
    # never see half a reload.
    agent._grow_tags(plan.tags)
    running = {s.name: s for s in agent.sources}
    agent.sources = [plan.sources.get(s.name) or running[s.name] for s in plan.config.sources]
    agent.texts.sources_changed()  # their text tags may have come or gone
    for source in agent.sources:
        if source.name in plan.sources or source.name not in agent.links:
            agent.links[source.name] = LinkStatistics()
            agent.schedules[source.name] = agent._schedule(source)
    for name in set(agent.links) - target_sources:
        del agent.links[name], agent.schedules[name]
    sinks = {f.sink.name: f for f in agent.forwarders}
    agent.forwarders = [plan.forwarders.get(s.name) or sinks[s.name] for s in plan.config.sinks]
    try:  # a new sink starts at the store's first record; a removed one lets records go
        agent.store.register_sinks(target_sinks)
    except LinesideError as exc:
        log.error("reload: %s", exc)
    agent.config = plan.config
    # Alarms added, removed or changed; the others keep their state and acknowledgement.
    for event in agent.alarms.reconfigure(plan.alarms, agent.clock.time_ns()):
        agent.emit_event(event)
    machines = list(dict.fromkeys(t.machine for t in agent.tags if t.source))
    for builder in (agent.web.state if agent.web is not None else None, agent._state):
        if builder is not None:  # the page's machines: a reload may add some
            builder.machines = machines
    for source in agent.sources:
        if source.name in plan.sources:
            agent._start_source(source)
    for forwarder in agent.forwarders:
        if forwarder.sink.name in plan.forwarders:
            agent._start_sink(forwarder)
    line = summary(plan.change, plan.tags_added)
    log.info("%s", line)
    data = audit_data(plan.change, plan.tags_added, line)
    agent.writer.submit_event(Event(EventKind.AUDIT, agent.clock.time_ns(), None, data))

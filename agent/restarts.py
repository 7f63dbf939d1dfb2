"""What the running agent carries across a restart: at start, the KPI windows resumed from the
stored readings and the alarms the last run left active; at stop, every reading handed to the
writer committed (so SIGTERM loses nothing), the active alarms kept and the last status
written. `Agent.__init__` and `Agent.run` call these (agent/runtime.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from agent.alarms import AlarmBook
from agent.errors import LinesideError
from agent.kpi.engine import KpiEngine
from agent.kpi.resume import resume
from agent.status_file import write_status
from agent.store import Store, StoreWriter

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("lineside.agent")

ALARMS_META = "alarms_active"  # the store's meta key of the alarms active at the last stop
# At stop, how long the drain waits for a store that takes no writes (full, failing) before
# it gives up on what is still pending: SIGTERM is honoured within a few seconds, always.
DRAIN_STALL = 3.0


def resume_kpi(agent: Agent) -> None:
    """Rebuild the open KPI windows from the stored readings before polling, so a restart
    mid-shift loses only the time the agent was stopped (agent/kpi/replay.py)."""
    assert agent.kpi is not None
    data_dir = agent.config.agent.data_dir
    step = [0]

    def progress(done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth > step[0]:  # one line per tenth of the way
            step[0] = tenth
            log.info("kpi: resuming the open windows, %d of %d stored records", done, total)

    try:
        resumed = resume(agent.kpi, agent.config, agent.clock.time_ns(), data_dir=data_dir,
                         progress=progress)  # fmt: skip
    except LinesideError as exc:  # acquisition matters more than the windows' past
        log.warning("kpi: cannot resume the open windows (%s); they start again now", exc)
        agent.kpi = KpiEngine(agent.config, agent._kpi_ids)
        agent.state_trace.machines.clear()  # what the failed replay traced, half done
        agent.kpi.trace = agent.state_trace
        return
    for event in resumed.events:
        agent.writer.submit_event(event)
    log.info(
        "kpi: resumed from %d stored records; %d KPI records were stored, %d are stored now",
        resumed.records,
        resumed.held,
        len(resumed.events),
    )


def restore_alarms(store: Store, alarms: AlarmBook) -> None:
    """The alarms the last run left active (kept in the store's meta on stop)."""
    raw = store.get_meta(ALARMS_META)
    if not raw or not alarms.rules:
        return
    try:
        saved = json.loads(raw)
    except ValueError:
        log.warning("alarms: the active alarms kept at the last stop are unreadable")
        return
    if isinstance(saved, dict) and (n := alarms.restore(saved)):
        log.info("alarms: %d active at the last stop, still active until cleared", n)


def keep_alarms(store: Store, alarms: AlarmBook) -> None:
    """Keep the active alarms for the next run: it clears them, never raises them twice."""
    try:
        store.set_meta(ALARMS_META, json.dumps(alarms.active()))
    except Exception as exc:  # a store that takes no writes: the next run raises anew
        log.warning("alarms: cannot keep the active alarms: %s", exc)


async def stop(agent: Agent) -> None:
    """Once polling ended: the page closed, the store drained, the alarms kept, the last
    status written, the writer and the store closed; one line says whether all was stored."""
    if agent.web is not None:
        await agent.web.close()
    agent._emit_turn()  # readings of the last turn, if its callback has not run
    drained = await drain(agent.writer)
    keep_alarms(agent.store, agent.alarms)
    with contextlib.suppress(OSError):
        write_status(agent.config.agent.data_dir, agent.statistics())
    # Once the drain gave up, close() only tells the writer thread to stop.
    drained = agent.writer.close(DRAIN_STALL if drained else 0.1) and drained
    agent.store.close()
    if drained:
        log.info("agent %s: stopped, store drained", agent.config.agent.id)
    else:
        left = agent.writer.statistics()
        log.error(
            "agent %s: stopped; the store took no writes (%s): %d readings and %d "
            "events that waited in memory were not stored",
            agent.config.agent.id,
            left.full_reason or left.last_error,
            left.pending_readings,
            left.pending_events,
        )


async def drain(writer: StoreWriter) -> bool:
    """Wait until everything submitted is committed, as long as the store takes writes;
    one that is full or failing gets DRAIN_STALL seconds. False: it gave up."""
    flushed = asyncio.ensure_future(writer.flush())
    stalled_since = time.monotonic()
    while True:
        done, _ = await asyncio.wait({flushed}, timeout=0.05)
        if done:
            return not flushed.exception()
        stats = writer.statistics()
        if not stats.store_full and stats.last_error is None:
            stalled_since = time.monotonic()  # it commits: a long drain is no stall
        elif time.monotonic() - stalled_since > DRAIN_STALL:
            flushed.cancel()
            return False

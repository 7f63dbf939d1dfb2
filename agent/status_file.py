"""The status file, `<data_dir>/status.json`: the running agent's figures for `lineside status`
(and whoever reads the data directory), rewritten every `STATUS_INTERVAL` seconds."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.poller import LinkStatistics
from agent.scheduler import Ticker, TickerStatistics
from agent.secrets import redact_tree
from agent.snapshot import AgentSnapshot, AlarmSnapshot

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("lineside.agent")

STATUS_FILE = "status.json"
STATUS_BLOCK = 4096  # the status file is padded to whole blocks of this size (write_status)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


# The field names of the per-source figures, whose values are all numbers, strings or None:
# a plain getattr each is a tenth of what `asdict`'s deep copy costs per source and group.
_LINK_FIELDS = tuple(f.name for f in fields(LinkStatistics))
_TICKER_FIELDS = tuple(f.name for f in fields(TickerStatistics))


def status_figures(snapshot: AgentSnapshot) -> dict[str, Any]:
    """The status file's figures (JSON-ready): a renderer of the snapshot, pure."""
    sources: dict[str, Any] = {}
    for source in snapshot.sources:
        own: Mapping[str, Any] = (
            {"statistics_error": source.statistics_error}
            if source.statistics_error is not None
            else source.statistics.figures()
        )
        sources[source.name] = {
            **own,
            "link": {f: getattr(source.link, f) for f in _LINK_FIELDS},
            "groups": {
                name: {f: getattr(s, f) for f in _TICKER_FIELDS}
                for name, s in source.groups.items()
            },
            "tags": source.tags,
            "bad_reasons": dict(source.bad_reasons),
        }
    sinks: dict[str, Any] = {}
    for sink in snapshot.sinks:
        own = (
            {"statistics_error": sink.statistics_error}
            if sink.statistics_error is not None
            else sink.statistics.figures()
        )
        sinks[sink.name] = {**own, "forward": asdict(sink.forward)}
    return {
        "agent_id": snapshot.agent_id,
        "written_ns": snapshot.wall_ns,
        "tags": snapshot.tags,
        "samples": snapshot.samples,
        "sources": sources,
        "sinks": sinks,
        "pipeline": asdict(snapshot.pipeline) if snapshot.pipeline is not None else None,
        "store": asdict(snapshot.writer),
        "inspections": snapshot.inspection_figures(),
        "alarms": [_alarm(a) for a in snapshot.alarms],
    }


def _alarm(alarm: AlarmSnapshot) -> dict[str, Any]:
    return {
        "alarm": alarm.name,
        "machine": alarm.machine,
        "active": alarm.active,
        "acknowledged": alarm.acknowledged,
        "raised": alarm.raised,
    }


def status_phase(poll_intervals: Iterable[float], interval: float) -> float:
    """Where in its `interval` the status tick runs: halfway between two polls of the fastest
    link (the links' grids are whole multiples of their intervals), so that its work, tens of
    milliseconds with hundreds of sources, never holds a poll back. 0 without a gridded link."""
    fastest = min((i for i in poll_intervals if i > 0), default=None)
    return 0.0 if fastest is None else (fastest / 2) % interval


async def keep_status_file(agent: Agent, interval: float, phase: float = 0.0) -> None:
    """Write the statistics next to the store for `lineside status`: at once, then on a grid
    of `interval` seconds `phase` seconds past whole multiples of it (`status_phase`).

    A write that fails (a full disk) is logged once and tried again next time: the status
    file is a view, never a reason to stop polling.
    """
    failing: str | None = None
    ticker = Ticker(interval, agent.clock, align=True, phase=phase)
    while True:
        await ticker.wait()  # the first grid point is at or before now: served at once
        try:
            # One taken within half an interval (the page's) is rendered, else a new one.
            snapshot = agent.snapshot(max_age=interval / 2)
            write_status(agent.config.agent.data_dir, status_figures(snapshot))
        except Exception as exc:
            if str(exc) != failing:
                log.warning(
                    "status file: cannot write it (%s); `lineside status` shows older "
                    "figures until it can",
                    exc,
                    exc_info=not isinstance(exc, OSError),
                )
            failing = str(exc)
        else:
            if failing is not None:
                log.info("status file: written again")
            failing = None


def write_status(data_dir: Path, figures: dict[str, Any]) -> None:
    """Replace `<data_dir>/status.json` atomically (a reader never sees half a file).

    On a full disk no new file can be written: the old one is then overwritten in place. It is
    padded with spaces (JSON allows them) to whole blocks, which it keeps, so the rewrite needs
    no new block as long as the figures fit; a reader may then see a torn file and read again.
    """
    target = data_dir / STATUS_FILE
    # Last errors in it quote far sides, which may echo a credential.
    text = json.dumps(redact_tree(figures), default=str).encode()
    body = text.ljust(-(-len(text) // STATUS_BLOCK) * STATUS_BLOCK)
    temporary = target.with_suffix(".tmp")
    try:
        temporary.write_bytes(body)
        os.replace(temporary, target)
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        with contextlib.suppress(OSError):
            temporary.unlink()  # what was written of it, so the space it took is free again
        _overwrite(target, text, exc)


def _overwrite(target: Path, text: bytes, full: OSError) -> None:
    """Write `text` over the file's blocks, without making it longer (the disk is full)."""
    try:
        fd = os.open(target, os.O_WRONLY)  # no O_CREAT, no O_TRUNC: the blocks it has
    except FileNotFoundError:
        raise full from None  # none yet: nothing to write over
    try:
        size = os.fstat(fd).st_size
        if len(text) > size:
            raise full
        os.pwrite(fd, text.ljust(size), 0)
    finally:
        os.close(fd)

"""The status file, `<data_dir>/status.json`: the running agent's figures for `lineside status`
(and whoever reads the data directory), rewritten every `STATUS_INTERVAL` seconds."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import one_line
from agent.secrets import redact_tree

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("lineside.agent")

STATUS_FILE = "status.json"
STATUS_BLOCK = 4096  # the status file is padded to whole blocks of this size (write_status)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def status_figures(agent: Agent) -> dict[str, Any]:
    """Every figure the agent keeps, as plain data (JSON-ready)."""
    sources: dict[str, Any] = {}
    for source in agent.sources:
        schedule = agent.schedules[source.name].statistics()
        sources[source.name] = {
            **_figures(source.name, source.statistics),
            "link": asdict(agent.links[source.name]),
            "groups": {name: asdict(s) for name, s in schedule.items()},
            "tags": agent.tags_of_source(source.name),
            "bad_reasons": agent.bad_reasons(source),
        }
    sinks = {
        f.sink.name: {**_figures(f.sink.name, f.sink.statistics), "forward": asdict(f.stats)}
        for f in agent.forwarders
    }
    filtered = agent.filter.statistics() if agent.filter is not None else None
    return {
        "agent_id": agent.config.agent.id,
        "written_ns": agent.clock.time_ns(),
        "tags": len(agent.tags),
        "samples": agent.samples,
        "sources": sources,
        "sinks": sinks,
        "pipeline": asdict(filtered) if filtered is not None else None,
        "store": asdict(agent.writer.statistics()),
        "inspections": agent.inspections(),
    }


async def keep_status_file(agent: Agent, interval: float) -> None:
    """Write the statistics next to the store every `interval` seconds for `lineside status`.

    A write that fails (a full disk) is logged once and tried again next time: the status
    file is a view, never a reason to stop polling.
    """
    failing: str | None = None
    while True:
        try:
            write_status(agent.config.agent.data_dir, agent.statistics())
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
        await agent.clock.sleep_until(agent.clock.monotonic() + interval)


def _figures(name: str, statistics: Callable[[], Mapping[str, Any]]) -> Mapping[str, Any]:
    """A source's or sink's own figures; a bug there costs its figures, not the status file,
    the page or the agent (they all read them)."""
    try:
        return statistics()
    except Exception as exc:
        log.debug("%s: statistics failed", name, exc_info=exc)
        return {"statistics_error": one_line(exc)}


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

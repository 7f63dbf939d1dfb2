"""`lineside read`: connect to every source once, poll every group once, report each tag."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from agent.clock import SystemClock
from agent.config import Config
from agent.errors import ConnectorError
from agent.model import Quality
from agent.registry import runtime_class
from agent.source import Source
from agent.tags import TagInfo, TagTable


@dataclass(frozen=True, slots=True)
class OneReading:
    tag: TagInfo
    value: float
    quality: Quality
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    readings: list[OneReading]
    errors: dict[str, str]  # source name → why it could not be read


def matches(tag: TagInfo, pattern: str | None) -> bool:
    """A glob on the tag's path (`*/press1/*`) or on its name (`die_*`)."""
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(tag.path, pattern) or fnmatch.fnmatchcase(tag.name, pattern)


async def read_once(config: Config, pattern: str | None = None) -> ReadResult:
    clock = SystemClock()
    tags = TagTable.from_config(config)
    wanted = {t.source for t in tags if matches(t, pattern)}
    readings: list[OneReading] = []
    errors: dict[str, str] = {}
    for source_config in config.sources:
        if source_config.name not in wanted:
            continue
        source: Source = runtime_class(source_config.type)(source_config, tags, clock)
        groups = list(source.poll_groups())
        try:
            await source.connect()
            batches = await source.poll(groups)
        except ConnectorError as exc:
            errors[source.name] = str(exc) or type(exc).__name__
            batches = source.bad_batches(groups, clock.time_ns())
        finally:
            await source.close()
        for batch in batches:
            for tag_id, value, quality, ts in zip(
                batch.tag_ids.tolist(),
                batch.values.tolist(),
                batch.quality.tolist(),
                batch.timestamps().tolist(),
                strict=True,
            ):
                tag = tags.tags[tag_id]
                if matches(tag, pattern):
                    readings.append(OneReading(tag, value, Quality(quality), ts))
    readings.sort(key=lambda r: r.tag.id)
    return ReadResult(readings, errors)

"""`lineside read`: connect to every source once, poll every group once, report each tag.

Each bad reading comes with its reason: the source's own (a Modbus exception by name and
code, a timeout; agent/reasons.py), or the link's error when the source could not be read.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from dataclasses import dataclass

from agent.clock import SystemClock
from agent.config.sections import Config
from agent.errors import one_line
from agent.model import Quality
from agent.pipeline import NON_FINITE_REASON, mark_non_finite
from agent.reasons import reasons_of
from agent.registry import runtime_class
from agent.source import Source
from agent.tags import Tag, TagTable
from agent.texts import texts_of
from agent.values import is_text, models_by_path


@dataclass(frozen=True, slots=True)
class OneReading:
    tag: Tag
    value: float
    quality: Quality
    ts_ns: int
    reason: str = ""  # why it is bad ("" when good, or when the source gives no reason)
    text: str | None = None  # a text tag's string (its `value` is NaN)


@dataclass(frozen=True, slots=True)
class ReadResult:
    readings: list[OneReading]
    errors: dict[str, str]  # source name → why it could not be read

    @property
    def bad(self) -> list[OneReading]:
        return [r for r in self.readings if r.quality != Quality.GOOD]


def matches(tag: Tag, pattern: str | None) -> bool:
    """A glob on the tag's path (`*/press1/*`) or on its name (`die_*`)."""
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(tag.path, pattern) or fnmatch.fnmatchcase(tag.name, pattern)


FIRST_VALUES_WAIT = 1.0  # seconds, beyond two poll intervals, for a subscription's first values


def awaited(tags: TagTable, models: dict[str, object], source: str) -> set[int]:
    """The ids of the tags of `source` that `read` waits for in the batches. Text tags are
    never in a batch (their strings come beside it, agent/texts.py): they are not waited for."""
    return {t.id for t in tags if t.source == source and not is_text(models.get(t.path))}


async def read_once(config: Config, pattern: str | None = None) -> ReadResult:
    clock = SystemClock()
    tags = TagTable.from_config(config)
    wanted = {t.source for t in tags if matches(t, pattern)}
    models = models_by_path(config)
    readings: list[OneReading] = []
    errors: dict[str, str] = {}
    for source_config in config.sources:
        if source_config.name not in wanted:
            continue
        source: Source = runtime_class(source_config.type)(source_config, tags, clock)
        groups = list(source.poll_groups())
        expected = awaited(tags, models, source.name)
        try:
            await source.connect()
            batches = await source.poll(groups)
            # A subscription's first values arrive after connect, not in reply to a poll: poll
            # again until every tag has one, for at most a few publishing intervals.
            deadline = (
                clock.monotonic() + FIRST_VALUES_WAIT + 2 * max(source.poll_groups().values())
            )
            seen = {int(i) for b in batches for i in b.tag_ids}
            while not expected <= seen and clock.monotonic() < deadline:
                await clock.sleep_until(clock.monotonic() + 0.05)
                more = await source.poll(groups)
                seen |= {int(i) for b in more for i in b.tag_ids}
                batches += more
        except Exception as exc:  # a source's unforeseen failure too: one line, no traceback
            errors[source.name] = one_line(exc)
            batches = source.bad_batches(groups, clock.time_ns())
        finally:
            with contextlib.suppress(Exception):
                await source.close()
        reasons = reasons_of(source)
        why = reasons.by_tag() if reasons is not None else {}
        link_error = errors.get(source.name, "")
        for batch in batches:
            batch, _ = mark_non_finite(batch)  # NaN or ±inf is no good reading here either
            for tag_id, value, quality, ts in zip(
                batch.tag_ids.tolist(),
                batch.values.tolist(),
                batch.quality.tolist(),
                batch.timestamps().tolist(),
                strict=True,
            ):
                tag = tags.by_id(tag_id)
                if matches(tag, pattern):
                    reason = "" if quality == Quality.GOOD else link_error or why.get(tag_id, "")
                    if quality != Quality.GOOD and not reason and not math.isfinite(value):
                        reason = NON_FINITE_REASON
                    readings.append(OneReading(tag, value, Quality(quality), ts, reason))
        readings += _texts(source, tags, pattern, link_error, why)
    # A tag polled again while a subscription caught up: its latest reading.
    latest = {r.tag.id: r for r in readings}
    return ReadResult(sorted(latest.values(), key=lambda r: r.tag.id), errors)


def _texts(
    source: Source, tags: TagTable, pattern: str | None, link_error: str, why: dict[int, str]
) -> list[OneReading]:
    """The strings of the text tags of `source` the poll read, bad with a reason otherwise."""
    texts = texts_of(source)
    out: list[OneReading] = []
    for tag_id in texts.tag_ids if texts is not None else ():
        tag = tags.by_id(tag_id)
        if not matches(tag, pattern):
            continue
        got = texts.latest.get(tag_id) if texts is not None else None
        reason = link_error or why.get(tag_id, "")
        if got is None or reason or got.quality is Quality.BAD:
            bad = reason or (got.reason if got is not None else "") or "no string read"
            ts = got.ts_ns if got is not None else 0
            out.append(OneReading(tag, math.nan, Quality.BAD, ts, bad))
        else:
            out.append(OneReading(tag, math.nan, got.quality, got.ts_ns, got.reason, got.value))
    return out

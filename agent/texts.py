"""Text tags: strings read beside the numeric readings, stored and sent on change.

A `ReadingBatch` holds float64 values, and the hot path (pipeline, store blob, forwarder)
stays that way. Strings (a die id, a recipe, a PackML state name) take a side channel:

- a source that reads text tags keeps the latest string of each in its `texts` (`Texts`),
  set where it decodes an answer; nothing else of the poll changes;
- `TextRecorder.run` looks at every source's texts a few times a second (while any source
  reads text tags) and stores each change (value, quality or reason) as a `text` event:
  `{"tag_id", "tag" (path), "source", "value", "quality", "reason"}`, stamped with the
  reading's time, its machine the tag's. A text tag reads bad with its block's reason
  (agent/reasons.py) or the link's error when the link is down, like the numeric tags read
  with it; a bad text has no value (`null`).

Events are stored, survive a restart, are exported beside the readings and forwarded by every
sink as the tag's value (each sink's README says how). Strings change rarely: one event per
change costs less than a column in every batch.

Decoding (`decode_text`): bytes as the device sends them, ASCII, padding (NULs, spaces) cut
at the end and a NUL ending the text early; a byte that is not ASCII becomes U+FFFD and the
reading is `uncertain` with the reason `NOT_ASCII`, so nothing read is lost silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.clock import Clock
from agent.errors import one_line
from agent.model import Event, EventKind, Quality
from agent.reasons import reasons_of

if TYPE_CHECKING:  # the sources import this module: no import of the config's models here
    from agent.tags import Tag, TagTable

log = logging.getLogger("lineside.texts")

CHECK_INTERVAL = 0.25  # seconds between looks at the sources' texts
NOT_ASCII = "bytes that are not ASCII, shown as U+FFFD"


@dataclass(frozen=True, slots=True)
class TextReading:
    """One string reading of a text tag; `value` None when there is none (bad)."""

    tag_id: int
    value: str | None
    quality: Quality
    ts_ns: int
    reason: str = ""

    def same(self, other: TextReading | None) -> bool:
        """Whether `other` says the same (its time aside): then nothing is stored."""
        return other is not None and (self.value, self.quality, self.reason) == (
            other.value,
            other.quality,
            other.reason,
        )

    def event(self, tag: Tag, source: str) -> Event:
        data = {
            "tag_id": self.tag_id,
            "tag": tag.path,
            "source": source,
            "value": self.value,
            "quality": self.quality.name.lower(),
            "reason": self.reason,
        }
        return Event(EventKind.TEXT, self.ts_ns, tag.machine, data)

    @classmethod
    def of(cls, event: Event) -> TextReading | None:
        """The reading a stored `text` event holds; None for any other event."""
        if event.kind is not EventKind.TEXT:
            return None
        d = event.data
        try:
            value = d.get("value")
            quality = Quality[str(d.get("quality", "bad")).upper()]
            return cls(int(d["tag_id"]), None if value is None else str(value), quality,
                       event.ts_ns, str(d.get("reason") or ""))  # fmt: skip
        except (KeyError, TypeError, ValueError):
            return None


def decode_text(raw: bytes) -> tuple[str, Quality, str]:
    """A device's string bytes as (text, quality, reason): cut at the first NUL, trailing
    spaces dropped; bytes beyond ASCII replaced (uncertain, `NOT_ASCII`)."""
    raw = raw.split(b"\0", 1)[0].rstrip(b" ")
    if raw.isascii():
        return raw.decode("ascii"), Quality.GOOD, ""
    return raw.decode("ascii", errors="replace"), Quality.UNCERTAIN, NOT_ASCII


class Texts:
    """The latest string of each text tag of one source, as the source last decoded it."""

    def __init__(self, tag_ids: Iterable[int]) -> None:
        self.tag_ids: tuple[int, ...] = tuple(tag_ids)
        self.latest: dict[int, TextReading] = {}
        # Good strings read, same or not: a link whose tags are all text tags has polls with no
        # numeric reading, and its loop tells a good poll by this count moving.
        self.good_reads = 0

    def put(self, tag_id: int, value: str | None, quality: Quality, ts_ns: int,
            reason: str = "") -> None:  # fmt: skip
        """Keep a reading; the same string again keeps the time it was first read, so the
        stored change is stamped when it happened, not when the recorder looked."""
        reading = TextReading(tag_id, value, quality, ts_ns, reason)
        if quality == Quality.GOOD:
            self.good_reads += 1
        if not reading.same(self.latest.get(tag_id)):
            self.latest[tag_id] = reading

    def decoded(self, tag_id: int, raw: bytes, ts_ns: int) -> None:
        """Keep the string `raw` holds (see `decode_text`)."""
        text, quality, reason = decode_text(raw)
        self.put(tag_id, text, quality, ts_ns, reason)


def texts_of(source: object) -> Texts | None:
    """A source's texts, if it reads text tags."""
    texts = getattr(source, "texts", None)
    return texts if isinstance(texts, Texts) and texts.tag_ids else None


class TextRecorder:
    """Stores each change of a text tag as a `text` event; `latest` is what the page shows."""

    def __init__(
        self,
        sources: Callable[[], Iterable[Any]],
        tags: Callable[[], TagTable],
        links: Mapping[str, Any],
        clock: Clock,
        emit_event: Callable[[Event], None],
    ) -> None:
        self._sources = sources
        self._tags = tags
        self._links = links
        self._clock = clock
        self._emit = emit_event
        self.latest: dict[int, TextReading] = {}
        self._changed = asyncio.Event()  # the sources were replaced (`sources_changed`)

    def sources_changed(self) -> None:
        """The agent's sources were replaced (a reload): see which read text tags now."""
        self._changed.set()

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Look every `interval` seconds until cancelled. While no source reads a text tag
        (most plants), wait for the sources to change instead: four looks a second at every
        source were about 1 % of the agent's CPU at W1 (10 PLCs at 100 ms)."""
        while True:
            self._changed.clear()
            if self.check():
                await self._clock.sleep_until(self._clock.monotonic() + interval)
            else:
                await self._changed.wait()

    def check(self) -> bool:
        """Store the changes of every source's texts; whether any source reads text tags."""
        watched = False
        for source in self._sources():
            texts = texts_of(source)
            if texts is None:
                continue
            watched = True
            try:
                self._check(source, texts)
            except Exception as exc:  # a text tag never ends the agent
                log.warning("texts of %s not stored: %s", source.name, one_line(exc))
        return watched

    def _check(self, source: Any, texts: Texts) -> None:
        link = self._links.get(source.name)
        down = str(link.last_error) if link is not None and link.state == "lost" else ""
        reasons = reasons_of(source)
        why = reasons.by_tag() if reasons is not None and not down else {}
        tags = self._tags()
        now = self._clock.time_ns()
        for tag_id in texts.tag_ids:
            reading = texts.latest.get(tag_id)
            bad = down or why.get(tag_id, "")
            if bad:  # the block or the link failed: the text reads bad for its reason
                reading = TextReading(tag_id, None, Quality.BAD, now, bad)
                texts.latest.pop(tag_id, None)  # the next string read is a change, stamped anew
            if reading is None or reading.same(self.latest.get(tag_id)):
                continue
            self.latest[tag_id] = reading
            self._emit(reading.event(tags.by_id(tag_id), source.name))

"""Why readings are bad: one reason per block of tags, kept by the source that reads them.

A block is what fails as a whole: a Modbus read request, an OPC UA subscription or node group.
A source registers its blocks once (`add_block`) and, after each attempt, sets the block's
reason: "" when it read good, else a short stable text ("illegal data address (02)",
"timeout after 1s", an OPC UA status code name). Setting an unchanged reason is a list lookup
and a string compare, so the hot path pays nothing per reading; only a change is recorded.

While the link itself is down, `set_link` gives every tag of the source the link's reason
(a refused connection) until it is cleared.

`report()` logs the changes since the last call, one line per reason that appeared (WARNING)
or went away (INFO), each line rate limited (`Repeats`) so a flapping device costs a line per
minute with a count rather than a line per poll. The readers (`read`, the page, `/metrics`,
`status`, `/readyz`) ask `summary()` (reason → tags bad for it) or `by_tag()`; the page's
error list asks `seen()`: every reason since start with its first and last time and a count.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("lineside.source")

REPEAT_WINDOW = 60.0  # seconds: a repeated log line or event is held back this long at most


@dataclass(slots=True)
class _Held:
    last: float = -math.inf  # monotonic time the key was last let through
    held: int = 0  # repeats held back since


@dataclass(slots=True)
class Repeats:
    """Lets a repeated message through once per `window` seconds, counting the rest.

    `allow(key)` answers None when the message must be held back, else how many repeats were
    held back since the last one let through (0 the first time), for the message to say so.
    """

    window: float = REPEAT_WINDOW
    clock: Callable[[], float] = time.monotonic
    _keys: dict[object, _Held] = field(default_factory=dict)

    def allow(self, key: object) -> int | None:
        now = self.clock()
        entry = self._keys.setdefault(key, _Held())
        if now - entry.last < self.window:
            entry.held += 1
            return None
        held, entry.held, entry.last = entry.held, 0, now
        return held


def repeated(held: int) -> str:
    """ " (3 more times in the last minute)" for a message let through after repeats."""
    if held <= 0:
        return ""
    return f" ({held} more {'time' if held == 1 else 'times'} since the last report)"


@dataclass(slots=True)
class Seen:
    """One reason in a source's error list: first and last seen (epoch seconds), how often."""

    reason: str
    first: float
    last: float
    count: int = 0  # bad block attempts (or link failures) that gave this reason


# A source's error list keeps this many reasons at most (the oldest last-seen goes first): a
# device that puts a counter in its error text must not grow the list without bound.
MAX_SEEN = 50


@dataclass(slots=True)
class _Block:
    tag_ids: tuple[int, ...]
    label: str  # where it reads, for the log: "unit 1 hr:0+20"


class Reasons:
    """The current reason of every block of one source (empty: good)."""

    def __init__(
        self,
        source: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self._wall = wall
        self._seen: dict[str, Seen] = {}
        self.version = 0  # counts the changes of any tag's reason (agent/reasonlog.py asks)
        self.changed_at = 0.0  # epoch seconds of the latest change
        self._blocks: list[_Block] = []
        # Reason by block, "" while it reads good. Read it, never write it (`set` does): a hot
        # loop checks `current[block]` before calling `set` on a good read.
        self.current: list[str] = []
        self._was: dict[int, str] = {}  # block -> reason at the last report, for changed blocks
        self._link = ""
        self._repeats = Repeats(clock=clock)

    def add_block(self, tag_ids: Sequence[int], label: str) -> int:
        """Register a block of tags (at construction); its index for `set`."""
        self._blocks.append(_Block(tuple(int(t) for t in tag_ids), label))
        self.current.append("")
        return len(self._blocks) - 1

    def split_block(self, block: int, parts: Sequence[tuple[Sequence[int], str]]) -> list[int]:
        """Replace `block` by `parts` (tag ids and label each: a read split in several), and
        return their indexes; the old block keeps no tag and reads good."""
        self.set(block, "")
        self._blocks[block] = _Block((), self._blocks[block].label)
        return [self.add_block(tag_ids, label) for tag_ids, label in parts]

    def set(self, block: int, reason: str) -> None:
        """The block's reason after an attempt ("" when it read good)."""
        if self.current[block] != reason:
            self._was.setdefault(block, self.current[block])
            self.current[block] = reason
            self._changed()
        if reason:
            self._saw(reason)

    def _changed(self) -> None:
        self.version += 1
        self.changed_at = self._wall()

    def _saw(self, reason: str) -> None:
        now = self._wall()
        seen = self._seen.get(reason)
        if seen is None:
            if len(self._seen) >= MAX_SEEN:
                del self._seen[min(self._seen.values(), key=lambda s: s.last).reason]
            seen = self._seen[reason] = Seen(reason, now, now)
        seen.last = now
        seen.count += 1

    def seen(self) -> list[Seen]:
        """Every reason this source has had since start, the latest seen first."""
        return sorted(self._seen.values(), key=lambda s: -s.last)

    def reason(self, block: int) -> str:
        return self.current[block]

    def set_link(self, reason: str) -> None:
        """Every tag is bad for `reason` (the link is down); "" when it is up again."""
        if self._link != reason:
            self._changed()
        self._link = reason
        if reason:
            self._saw(reason)

    @property
    def link(self) -> str:
        return self._link

    def tags(self) -> int:
        return sum(len(b.tag_ids) for b in self._blocks)

    def summary(self) -> dict[str, int]:
        """Reason → number of tags bad for it; empty when every tag reads good."""
        if self._link:
            return {self._link: self.tags()}
        out: dict[str, int] = {}
        for block, reason in zip(self._blocks, self.current, strict=True):
            if reason:
                out[reason] = out.get(reason, 0) + len(block.tag_ids)
        return out

    def by_tag(self) -> dict[int, str]:
        """Tag id → reason, for the bad tags only."""
        out: dict[int, str] = {}
        for block, reason in zip(self._blocks, self.current, strict=True):
            reason = self._link or reason
            if reason:
                out.update(dict.fromkeys(block.tag_ids, reason))
        return out

    def report(self) -> None:
        """Log what changed since the last call: one line per reason that came or went."""
        if not self._was:
            return
        came: dict[str, list[int]] = {}
        went: dict[str, list[int]] = {}
        for block, before in self._was.items():
            now = self.current[block]
            if now == before:
                continue
            if now:
                came.setdefault(now, []).append(block)
            if before:
                went.setdefault(before, []).append(block)
        self._was.clear()
        for reason, blocks in came.items():
            held = self._repeats.allow(("bad", reason))
            if held is not None:
                log.warning(
                    "%s: %s bad: %s%s", self.source, self._where(blocks), reason, repeated(held)
                )
        for reason, blocks in went.items():
            held = self._repeats.allow(("good", reason))
            if held is not None:
                log.info(
                    "%s: %s good again (was: %s)%s",
                    self.source,
                    self._where(blocks),
                    reason,
                    repeated(held),
                )

    def _where(self, blocks: list[int]) -> str:
        n = sum(len(self._blocks[b].tag_ids) for b in blocks)
        labels = [self._blocks[b].label for b in blocks[:3]]
        more = f", {len(blocks) - 3} more" if len(blocks) > 3 else ""
        return f"{n} {'tag' if n == 1 else 'tags'} ({', '.join(labels)}{more})"


def reasons_of(source: object) -> Reasons | None:
    """The source's `reasons`, if its connector keeps them (every built-in one should)."""
    reasons = getattr(source, "reasons", None)
    return reasons if isinstance(reasons, Reasons) else None


def one_line(summary: Mapping[str, int], total: int) -> str:
    """ "12 of 20 tags bad: illegal data address (02)" ("" when none is bad)."""
    if not summary:
        return ""
    bad = sum(summary.values())
    parts = "; ".join(
        f"{reason}" if len(summary) == 1 else f"{reason} ({n})"
        for reason, n in sorted(summary.items(), key=lambda kv: -kv[1])
    )
    return f"{bad} of {total} tags bad: {parts}"

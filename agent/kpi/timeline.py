"""A machine's state over time, as the KPI engine folded it: the shift report's Gantt chart, its
stop counts per reason and its time per product. Pure: the engine calls `Timeline.add` (its
`trace` hook) during a replay, the report reads `segments`.

A stretch that a recompute (late data) folds again replaces what was traced there before, so the
timeline shows what the windows counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

NS = 1_000_000_000
STOPS = ("down", "setup", "idle")  # the categories that are stops with a reason


@dataclass(frozen=True, slots=True)
class Segment:
    start_ns: int
    end_ns: int
    category: str  # running, idle, down, setup, planned_stop, unknown (agent/kpi/states.py)
    reason: str  # the stop reason label in force ("no reason" when none)
    product: int | None  # the product code in force (the `product` tag), None without one
    planned: bool = True  # inside planned time (the calendar)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS

    @property
    def key(self) -> str:
        """What the Gantt colours a stretch by: the category, and the reason of a stop (the
        same key the Pareto uses, "down: die jam")."""
        if self.category in STOPS:
            return f"{self.category}: {self.reason}"
        return self.category


@dataclass(slots=True)
class Timeline:
    """Segments per machine, in time order, adjacent equal ones joined."""

    machines: dict[str, list[Segment]] = field(default_factory=dict)

    def add(
        self,
        machine: str,
        start_ns: int,
        end_ns: int,
        category: str,
        reason: str,
        product: int | None,
        planned: bool,
    ) -> None:
        if end_ns <= start_ns:
            return
        rows = self.machines.setdefault(machine, [])
        # A recompute folds from a checkpoint again: drop what it redoes.
        while rows and rows[-1].start_ns >= start_ns:
            rows.pop()
        if rows and rows[-1].end_ns > start_ns:
            last = rows.pop()
            rows.append(Segment(last.start_ns, start_ns, last.category, last.reason,
                                last.product, last.planned))  # fmt: skip
        reason = reason if category in STOPS else ""
        new = Segment(start_ns, end_ns, category, reason, product, planned)
        if rows:
            last = rows[-1]
            same = (last.category, last.reason, last.product, last.planned) == (
                category, reason, product, planned)  # fmt: skip
            if same and last.end_ns == start_ns:
                rows[-1] = Segment(last.start_ns, end_ns, category, reason, product, planned)
                return
        rows.append(new)

    def between(self, machine: str, start_ns: int, end_ns: int) -> list[Segment]:
        """The machine's segments clipped to [start, end)."""
        return clip(self.machines.get(machine, []), start_ns, end_ns)


def clip(segments: Iterable[Segment], start_ns: int, end_ns: int) -> list[Segment]:
    out = []
    for s in segments:
        a, b = max(s.start_ns, start_ns), min(s.end_ns, end_ns)
        if a < b:
            out.append(Segment(a, b, s.category, s.reason, s.product, s.planned))
    return out


def stop_counts(segments: Sequence[Segment]) -> dict[str, int]:
    """How many stops began per key ("down: die jam") in planned time: a stop is a run of
    segments with the same key, so a product change during a stop is not a new stop, and
    neither is a stop that goes on across a break (time outside planned time is skipped)."""
    out: dict[str, int] = {}
    previous: str | None = None
    for s in segments:
        if not s.planned:
            continue
        if s.key != previous and s.category in STOPS:
            out[s.key] = out.get(s.key, 0) + 1
        previous = s.key
    return out


def by_product(segments: Sequence[Segment]) -> dict[int | None, dict[str, float]]:
    """Seconds per category per product code (None: no product known), in planned time."""
    out: dict[int | None, dict[str, float]] = {}
    for s in segments:
        if not s.planned:
            continue
        row = out.setdefault(s.product, {})
        row[s.category] = row.get(s.category, 0.0) + s.seconds
    return out

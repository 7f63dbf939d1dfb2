"""A machine's state over time, as the KPI engine folded it: the shift report's Gantt chart, its
stop counts per reason and its time per product. Pure: the engine calls `Timeline.add` (its
`trace` hook) during a replay, the report reads `segments`.

A stretch that a recompute (late data) folds again replaces what was traced there before, so the
timeline shows what the windows counted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class Count:
    t_ns: int
    counter: str  # total, good, reject or rework
    amount: float  # credited to known run time
    ideal_s: float  # its ideal time (0 for a counter that does not say what was made)
    product: int | None


@dataclass(slots=True)
class Timeline:
    """Segments and counts per machine, in time order, adjacent equal segments joined: the
    engine's `Trace` (agent/kpi/machine.py) during a replay."""

    machines: dict[str, list[Segment]] = field(default_factory=dict)
    counts: dict[str, list[Count]] = field(default_factory=dict)

    def segment(
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
        reason = reason if category in STOPS else ""
        if rows:
            last = rows[-1]
            same = (last.category, last.reason, last.product, last.planned) == (
                category, reason, product, planned)  # fmt: skip
            if same and last.end_ns == start_ns:
                rows[-1] = Segment(last.start_ns, end_ns, category, reason, product, planned)
                return
        rows.append(Segment(start_ns, end_ns, category, reason, product, planned))

    def count(
        self,
        machine: str,
        t_ns: int,
        counter: str,
        amount: float,
        ideal_s: float,
        product: int | None,
    ) -> None:
        self.counts.setdefault(machine, []).append(Count(t_ns, counter, amount, ideal_s, product))

    def redo(self, machine: str, from_ns: int) -> None:
        """Forget what was traced from `from_ns` on: a recompute traces it again."""
        rows = self.machines.get(machine, [])
        while rows and rows[-1].start_ns >= from_ns:
            rows.pop()
        if rows and rows[-1].end_ns > from_ns:
            last = rows.pop()
            rows.append(Segment(last.start_ns, from_ns, last.category, last.reason,
                                last.product, last.planned))  # fmt: skip
        counts = self.counts.get(machine, [])
        while counts and counts[-1].t_ns >= from_ns:
            counts.pop()

    def between(self, machine: str, start_ns: int, end_ns: int) -> list[Segment]:
        """The machine's segments clipped to [start, end)."""
        return clip(self.machines.get(machine, []), start_ns, end_ns)

    def counts_between(self, machine: str, start_ns: int, end_ns: int) -> list[Count]:
        """The machine's counts taken in [start, end), the window that holds them as the
        engine counts them."""
        return [c for c in self.counts.get(machine, []) if start_ns <= c.t_ns < end_ns]


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


def per_product(
    segments: Sequence[Segment], counts: Sequence[Count], counters: Collection[str]
) -> dict[int | None, dict[str, float | None]]:
    """Per product code: time per category in planned time, the counts (the counter the
    machine lacks derived as the engine derives it, docs/kpi.md "Counters") and the classic
    A, P, Q and OEE of the time that product was running. `counters` are the machine's
    configured counters (total, good, reject, rework)."""
    times = by_product(segments)
    summed: dict[int | None, dict[str, float]] = {}
    for c in counts:
        row = summed.setdefault(c.product, {})
        row[c.counter] = row.get(c.counter, 0.0) + c.amount
        row["ideal_s"] = row.get("ideal_s", 0.0) + c.ideal_s
    out: dict[int | None, dict[str, float | None]] = {}
    for code in {*times, *summed}:
        t, n = times.get(code, {}), summed.get(code, {})
        total, good = n.get("total", 0.0), n.get("good", 0.0)
        reject, rework = n.get("reject", 0.0), n.get("rework", 0.0)
        if "total" not in counters:
            total = good + reject + rework
        elif "good" not in counters:
            good = max(total - reject - rework, 0.0)
        running = t.get("running", 0.0)
        known = running + sum(t.get(k, 0.0) for k in STOPS)
        ideal = n.get("ideal_s", 0.0)
        a = running / known if known > 0 else None
        p = ideal / running if running > 0 else None
        q = good / total if total > 0 else None
        oee = a * p * q if a is not None and p is not None and q is not None else None
        if oee is None and a is not None and total == 0:
            oee = 0.0  # planned time passed and nothing was made: a true 0
        out[code] = {**t, "total": total, "good": good, "availability": a,
                     "performance": p, "quality": q, "oee": oee}  # fmt: skip
    return out

"""Ground truth of a simulated machine: what really happened, to check the agent's KPIs against.

A machine's life is a tiling of half-open intervals `[start, end)`, each in one of five states.
An interval carries enough to say how much was produced up to any instant inside it (rate,
phase, which units were rejected, drive power), so a window that cuts an interval, such as a shift
boundary, is split exactly: `summary(a, b) + summary(b, c) == summary(a, c)`.

OEE here is the classic (Nakajima / oee.com) one, from standards.md §1.5:
planned time = window - planned stops; availability = run / planned;
performance = produced / (ideal rate x run); quality = good / produced.
Setup (changeover) is a stop inside planned time, so it is an availability loss.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

State = Literal["running", "idle", "down", "setup", "planned_stop"]
STATES: tuple[State, ...] = ("running", "idle", "down", "setup", "planned_stop")


@dataclass(frozen=True, slots=True)
class Interval:
    """One state over `[start, end)`.

    Discrete output (parts, picks): unit k of the interval completes when
    `phase + (t - start) * rate` reaches k; `reject_units` lists the rejected k (1-based, sorted).
    Continuous output (tonnes): `(t - start) * rate`, of which `reject_fraction` is off spec.
    """

    start: float
    end: float
    state: State
    reason: int = 0
    rate: float = 0.0  # units per second; 0 unless running
    phase: float = 0.0  # fraction of a unit already done at `start` (discrete only)
    discrete: bool = True
    reject_units: tuple[int, ...] = ()
    reject_fraction: float = 0.0
    power_kw: float = 0.0

    def __post_init__(self) -> None:
        if not self.end >= self.start:
            raise ValueError(f"interval ends before it starts: {self.start} > {self.end}")
        if self.state not in STATES:
            raise ValueError(f"unknown state {self.state!r}")

    @property
    def duration(self) -> float:
        return self.end - self.start

    def produced_by(self, t: float) -> float:
        """Units completed in this interval by time `t` (clipped to the interval)."""
        if self.rate == 0.0 or t <= self.start:
            return 0.0
        progress = (min(t, self.end) - self.start) * self.rate
        if self.discrete:
            return float(math.floor(self.phase + progress))
        return progress

    def rejects_by(self, t: float) -> float:
        if self.discrete:
            return float(bisect_right(self.reject_units, self.produced_by(t)))
        return self.produced_by(t) * self.reject_fraction

    def energy_by(self, t: float) -> float:
        """kWh drawn in this interval by time `t`."""
        if t <= self.start:
            return 0.0
        return self.power_kw * (min(t, self.end) - self.start) / 3600.0

    @property
    def produced(self) -> float:
        return self.produced_by(self.end)

    @property
    def reject(self) -> float:
        return self.rejects_by(self.end)

    @property
    def good(self) -> float:
        return self.produced - self.reject

    @property
    def energy_kwh(self) -> float:
        return self.energy_by(self.end)

    def clipped(self, end: float) -> Interval:
        """The same interval cut short at `end` (for the interval in progress)."""
        if end >= self.end:
            return self
        end = max(end, self.start)
        produced = self.produced_by(end) if self.discrete else 0.0
        kept = tuple(k for k in self.reject_units if k <= produced)
        return Interval(
            self.start,
            end,
            self.state,
            self.reason,
            self.rate,
            self.phase,
            self.discrete,
            kept,
            self.reject_fraction,
            self.power_kw,
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """What happened over `[t0, t1)`. Quantities are in the machine's unit (parts, t, picks)."""

    t0: float
    t1: float
    seconds: dict[State, float]
    produced: float
    good: float
    reject: float
    energy_kwh: float
    ideal_rate: float  # units per second at 100 % speed
    stops: dict[int, int] = field(default_factory=dict)  # reason -> stops starting in the window


@dataclass(frozen=True, slots=True)
class Oee:
    """Classic OEE factors; `None` where undefined (nothing planned, no run time, no output)."""

    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    planned_s: float
    run_s: float


@dataclass(frozen=True, slots=True)
class GroundTruth:
    kind: str
    name: str
    unit: str  # unit of produced quantities
    ideal_rate: float  # units per second
    now: float
    intervals: tuple[Interval, ...]
    reboots: tuple[float, ...] = ()  # times at which the PLC counters were reset to 0

    @property
    def totals(self) -> Summary:
        return self.summary(0.0, self.now)

    def summary(self, t0: float, t1: float) -> Summary:
        if t1 < t0:
            raise ValueError(f"window ends before it starts: {t0} > {t1}")
        seconds: dict[State, float] = dict.fromkeys(STATES, 0.0)
        stops: dict[int, int] = {}
        produced = reject = energy = 0.0
        for iv in self.intervals:
            if iv.end <= t0 or iv.start >= t1:
                continue
            a, b = max(t0, iv.start), min(t1, iv.end)
            seconds[iv.state] += b - a
            produced += iv.produced_by(b) - iv.produced_by(a)
            reject += iv.rejects_by(b) - iv.rejects_by(a)
            energy += iv.energy_by(b) - iv.energy_by(a)
            if iv.state != "running" and iv.start >= t0:
                stops[iv.reason] = stops.get(iv.reason, 0) + 1
        return Summary(t0, t1, seconds, produced, produced - reject, reject, energy,
                       self.ideal_rate, stops)  # fmt: skip

    def true_oee(self, t0: float, t1: float, micro_stop_threshold_s: float = 0.0) -> Oee:
        """Classic OEE over `[t0, t1)`.

        Stops (idle or down) whose whole duration is shorter than `micro_stop_threshold_s` are
        counted as run time, i.e. as a performance loss rather than an availability loss, as an
        agent with that threshold would. OEE itself is `good / (ideal rate x planned)`, which is
        A x P x Q whenever all three are defined and does not depend on the threshold.
        """
        s = self.summary(t0, t1)
        planned = (t1 - t0) - s.seconds["planned_stop"]
        run = s.seconds["running"]
        if micro_stop_threshold_s > 0.0:
            for iv in self.intervals:
                if iv.state in ("idle", "down") and iv.duration < micro_stop_threshold_s:
                    run += max(0.0, min(t1, iv.end) - max(t0, iv.start))
        availability = run / planned if planned > 0 else None
        performance = s.produced / (self.ideal_rate * run) if run > 0 else None
        quality = s.good / s.produced if s.produced > 0 else None
        oee = s.good / (self.ideal_rate * planned) if planned > 0 else None
        return Oee(availability, performance, quality, oee, planned, run)

    def true_oee_over(self, intervals: Sequence[tuple[float, float]]) -> Oee:
        """Classic OEE over the union of `intervals` (sorted, not overlapping): the truth
        over the time an observer could see, to compare with an agent whose view had gaps
        (docs/kpi.md, "Production in unknown time"). Planned time is the intervals minus the
        planned stops inside them; OEE is good / (ideal rate x planned)."""
        seen = [self.summary(a, b) for a, b in intervals if b > a]
        planned = sum((s.t1 - s.t0) - s.seconds["planned_stop"] for s in seen)
        run = sum(s.seconds["running"] for s in seen)
        produced = sum(s.produced for s in seen)
        good = sum(s.good for s in seen)
        return Oee(
            run / planned if planned > 0 else None,
            produced / (self.ideal_rate * run) if run > 0 else None,
            good / produced if produced > 0 else None,
            good / (self.ideal_rate * planned) if planned > 0 else None,
            planned,
            run,
        )

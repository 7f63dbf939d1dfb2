"""The common shape of a simulated machine, and the timeline engine the three kinds share.

A machine is a deterministic function of (seed, simulated time). Its life is drawn ahead of time
as a list of segments: a running stretch, then the stop that ended it, then the next running
stretch, and so on. Every random draw happens when a segment is created, in segment order, so the
values at time t do not depend on how often or in what steps `advance_to` was called.

Stops come from competing clocks measured in *running* time (a machine does not wear out while
stopped): each stop cause has an exponential time between occurrences and an exponential
duration; changeovers come after a fixed running time; planned stops come from a repeating
calendar and win over running, but never cut short a stop already in progress.

Rejected units (discrete kinds) are drawn on their own random stream as geometric gaps over the
global unit index, i.e. one Bernoulli draw per unit, taken in batches.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from firmware_sim.machines.truth import GroundTruth, Interval, State
from firmware_sim.profile import Profile

Value = float | int | bool | str

# State codes served by kinds without their own state model (mill, loom); the press serves
# PackML StateCurrent numbers instead.
STATE_CODES: dict[State, int] = {
    "running": 1,
    "idle": 2,
    "down": 3,
    "setup": 4,
    "planned_stop": 5,
}

MAX_RUN_CHUNK_S = 1800.0  # long running stretches are split so the speed drifts over time
_REJECT_BATCH = 256


class MachineModel(Protocol):
    name: str
    kind: str  # "press" | "mill" | "loom"
    profile: Profile

    def advance_to(self, t: float) -> None: ...

    def values(self) -> Mapping[str, Value]: ...

    def reboot(self) -> None: ...

    def ground_truth(self) -> GroundTruth: ...


@dataclass(frozen=True, slots=True)
class StopCause:
    reason: int
    state: State  # "down" (breakdown) or "idle" (micro-stop)
    every_s: float  # mean running seconds between occurrences; math.inf disables the cause
    mean_s: float  # mean duration

    def __post_init__(self) -> None:
        if not self.every_s > 0:
            raise ValueError(f"stop {self.reason}: time between stops must be > 0 (inf: never)")


@dataclass(frozen=True, slots=True)
class PlannedStop:
    offset_s: float  # from the start of each calendar period
    duration_s: float
    reason: int


@dataclass(frozen=True, slots=True)
class TimelineSpec:
    """The engine's view of a kind's rates, in units per second and seconds."""

    ideal_rate: float
    discrete: bool
    speed_loss: float  # mean fraction of the ideal rate lost while running
    reject_probability: float  # per unit (discrete) or per running stretch (continuous)
    causes: tuple[StopCause, ...]
    changeover_every_s: float  # running seconds between changeovers; math.inf for none
    changeover_s: float
    changeover_reason: int
    period_s: float  # length of the planned-stop calendar period
    planned: tuple[PlannedStop, ...]

    def __post_init__(self) -> None:
        if not self.changeover_every_s > 0:
            raise ValueError("time between changeovers must be > 0 (inf: never)")
        if self.planned and not self.period_s > 0:
            raise ValueError("planned stops need a calendar period > 0")
        for p in self.planned:
            if not p.duration_s > 0:
                raise ValueError(f"planned stop at {p.offset_s} s must last > 0 s")


CHANGEOVER_REASON = 301
PLANNED_REASON = 401


class CommonRates(Protocol):
    """The rates every kind has (its rates dataclass adds its own)."""

    @property
    def speed_loss(self) -> float: ...
    @property
    def reject_probability(self) -> float: ...
    @property
    def changeover_every_s(self) -> float: ...
    @property
    def changeover_s(self) -> float: ...
    @property
    def planned_stops(self) -> tuple[tuple[float, float], ...]: ...


def shared_causes(
    state: State, every_s: float, mean_s: float, shares: tuple[tuple[int, float], ...]
) -> list[StopCause]:
    """One cause per reason code, each occurring its share of the time (`every_s / share`)."""
    return [StopCause(reason, state, every_s / share, mean_s) for reason, share in shares]


def timeline_spec(
    rates: CommonRates,
    *,
    ideal_rate: float,
    discrete: bool,
    period_s: float,
    causes: list[StopCause],
) -> TimelineSpec:
    """The engine's spec from a kind's rates: the parts all kinds share, in one place."""
    return TimelineSpec(
        ideal_rate=ideal_rate,
        discrete=discrete,
        speed_loss=rates.speed_loss,
        reject_probability=rates.reject_probability,
        causes=tuple(causes),
        changeover_every_s=rates.changeover_every_s,
        changeover_s=rates.changeover_s,
        changeover_reason=CHANGEOVER_REASON,
        period_s=period_s,
        planned=tuple(PlannedStop(o, d, PLANNED_REASON) for o, d in rates.planned_stops),
    )


def check_rates(rates: object) -> None:
    """Reject negative or NaN numeric rates; probabilities and fractions must be in [0, 1)."""
    for f in fields(rates):  # type: ignore[arg-type]
        v = getattr(rates, f.name)
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if math.isnan(v) or v < 0:
            raise ValueError(f"{f.name} must be >= 0, got {v}")
        if (f.name.endswith("probability") or f.name == "speed_loss") and v >= 1:
            raise ValueError(f"{f.name} must be < 1, got {v}")


def counter_modulus(profile: Profile, name: str) -> float:
    """The engineering value at which an unsigned counter register wraps to 0."""
    tag = profile.tag(name)
    return float(2 ** (16 * tag.width)) * tag.scale


@dataclass(frozen=True, slots=True)
class Segment:
    """An interval plus the running totals at its start (since power-up, never reset)."""

    iv: Interval
    units0: float
    rejects0: float
    energy0: float
    stops0: tuple[tuple[int, int], ...]  # (reason, count) of stops started before this one
    changeovers: int  # changeovers started up to and including this segment
    temp0: float  # temperature at `start` of the kind's first-order thermal signal


@dataclass(frozen=True, slots=True)
class Totals:
    units: float
    rejects: float
    energy_kwh: float
    stops: dict[int, int]


class SimulatedMachine:
    """Timeline engine; a kind subclasses it and supplies `values()` and its power/thermal hooks."""

    kind: str = ""
    unit: str = ""
    ambient_c: float = 25.0
    thermal_tau_s: float = 1200.0

    def __init__(self, name: str, seed: int, spec: TimelineSpec, profile: Profile) -> None:
        self.name = name
        self.profile = profile
        self.spec = spec
        self._planned = tuple(sorted(spec.planned, key=lambda p: p.offset_s))
        seq = np.random.SeedSequence(seed)
        timeline, rejects, ripple = seq.spawn(3)
        self._rng = np.random.default_rng(timeline)
        self._reject_rng = np.random.default_rng(rejects)
        self._phases = np.random.default_rng(ripple).uniform(0, 2 * math.pi, 4).tolist()
        self._reject_at: list[int] = []  # global 1-based indices of rejected units
        self._to_cause = [self._draw_every(c) for c in spec.causes]
        self._to_changeover = spec.changeover_every_s
        self._segments: list[Segment] = []
        self._i = 0
        self._now = 0.0
        self._reboots: list[float] = []
        self._base = Totals(0.0, 0.0, 0.0, {})
        self._extend()

    # -- random draws (only ever called while creating segments) -------------------------------

    def _draw_every(self, cause: StopCause) -> float:
        return (
            math.inf if math.isinf(cause.every_s) else float(self._rng.exponential(cause.every_s))
        )

    def _rejects_upto(self, unit: float) -> None:
        p = self.spec.reject_probability
        if p <= 0:
            return
        while not self._reject_at or self._reject_at[-1] < unit:
            last = self._reject_at[-1] if self._reject_at else 0
            gaps = self._reject_rng.geometric(p, _REJECT_BATCH)
            self._reject_at.extend((last + np.cumsum(gaps)).tolist())

    # -- hooks a kind overrides ----------------------------------------------------------------

    def power_kw(self, state: State, rate: float) -> float:
        return 0.0

    def temp_target(self, state: State) -> float:
        return self.ambient_c

    # -- segment creation ----------------------------------------------------------------------

    def _append(self, start: float, end: float, state: State, reason: int, rate: float = 0.0,
                reject_fraction: float = 0.0) -> None:  # fmt: skip
        prev = self._segments[-1] if self._segments else None
        if prev is None:
            units0 = rejects0 = energy0 = 0.0
            stops: dict[int, int] = {}
            changeovers, temp0, phase = 0, self.ambient_c, 0.0
        else:
            p = prev.iv
            units0 = prev.units0 + p.produced
            rejects0 = prev.rejects0 + p.reject
            energy0 = prev.energy0 + p.energy_kwh
            stops = dict(prev.stops0)
            if p.state != "running":
                stops[p.reason] = stops.get(p.reason, 0) + 1
            changeovers = prev.changeovers
            temp0 = self._temp(prev, p.end)
            # A stroke cut by a stop is lost; a running stretch split in two keeps its progress.
            phase = 0.0
            if p.state == "running" and state == "running" and p.discrete:
                done = p.phase + (p.end - p.start) * p.rate
                phase = done - math.floor(done)
        if state == "setup":
            changeovers += 1
        reject_units: tuple[int, ...] = ()
        if state == "running" and self.spec.discrete:
            n = math.floor(phase + (end - start) * rate)
            self._rejects_upto(units0 + n)
            lo = bisect_right(self._reject_at, units0)
            hi = bisect_right(self._reject_at, units0 + n)
            reject_units = tuple(int(k - units0) for k in self._reject_at[lo:hi])
        iv = Interval(start, end, state, reason, rate, phase, self.spec.discrete, reject_units,
                      reject_fraction, self.power_kw(state, rate))  # fmt: skip
        self._segments.append(
            Segment(iv, units0, rejects0, energy0, tuple(sorted(stops.items())), changeovers, temp0)
        )

    def _planned_window(self, t: float) -> PlannedStop | None:
        """The first planned stop that has not ended by `t`, its offset made absolute."""
        spec = self.spec
        if not self._planned:
            return None
        k = math.floor(t / spec.period_s)
        for period in (k, k + 1):
            for p in self._planned:
                start = period * spec.period_s + p.offset_s
                if start + p.duration_s > t:
                    return PlannedStop(start, p.duration_s, p.reason)
        return None

    def _extend(self) -> None:
        """Append the next running stretch and the stop that ends it (or one planned stop)."""
        spec = self.spec
        t = self._segments[-1].iv.end if self._segments else 0.0
        planned = self._planned_window(t)
        if planned is not None and planned.offset_s <= t:
            self._append(t, planned.offset_s + planned.duration_s, "planned_stop", planned.reason)
            return
        horizon = planned.offset_s - t if planned is not None else math.inf
        clocks = [*self._to_cause, self._to_changeover, horizon, MAX_RUN_CHUNK_S]
        run = min(clocks)
        fired = clocks.index(run)
        self._to_cause = [c - run for c in self._to_cause]
        self._to_changeover -= run
        if run > 0:
            factor = 1.0 - spec.speed_loss * float(self._rng.uniform(0.5, 1.5))
            off_spec = float(self._rng.random()) < spec.reject_probability
            fraction = 1.0 if off_spec and not spec.discrete else 0.0
            self._append(t, t + run, "running", 0, spec.ideal_rate * max(factor, 0.0), fraction)
        t += run
        if fired < len(spec.causes):
            cause = spec.causes[fired]
            duration = float(self._rng.exponential(cause.mean_s))
            self._to_cause[fired] = self._draw_every(cause)
            if duration > 0:
                self._append(t, t + duration, cause.state, cause.reason)
        elif fired == len(spec.causes):
            self._to_changeover = spec.changeover_every_s
            if spec.changeover_s > 0:
                self._append(t, t + spec.changeover_s, "setup", spec.changeover_reason)

    # -- time ----------------------------------------------------------------------------------

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"{self.name}: time goes backwards ({t} < {self._now})")
        if t == self._now:
            return
        while self._segments[-1].iv.end <= t:
            self._extend()
        while self._segments[self._i].iv.end <= t:
            self._i += 1
        self._now = t

    @property
    def now(self) -> float:
        return self._now

    @property
    def segment(self) -> Segment:
        """The segment in progress at `now`."""
        return self._segments[self._i]

    def _temp(self, seg: Segment, t: float) -> float:
        target = self.temp_target(seg.iv.state)
        return target + (seg.temp0 - target) * math.exp(-(t - seg.iv.start) / self.thermal_tau_s)

    def temperature(self) -> float:
        return self._temp(self.segment, self._now)

    def ripple(self, period_s: float, which: int = 0) -> float:
        """A deterministic wobble in [-1, 1] for analog signals (a pure function of time)."""
        return math.sin(2 * math.pi * self._now / period_s + self._phases[which % 4])

    # -- totals and counters -------------------------------------------------------------------

    def _totals_at(self, t: float) -> Totals:
        seg = self.segment
        iv = seg.iv
        stops = dict(seg.stops0)
        if iv.state != "running" and iv.start <= t:
            stops[iv.reason] = stops.get(iv.reason, 0) + 1
        return Totals(seg.units0 + iv.produced_by(t), seg.rejects0 + iv.rejects_by(t),
                      seg.energy0 + iv.energy_by(t), stops)  # fmt: skip

    def counters(self) -> Totals:
        """Totals since the last reboot, as the PLC's counters show them (not yet wrapped)."""
        now, base = self._totals_at(self._now), self._base
        stops = {r: n - base.stops.get(r, 0) for r, n in now.stops.items()}
        return Totals(now.units - base.units, now.rejects - base.rejects,
                      now.energy_kwh - base.energy_kwh, stops)  # fmt: skip

    def wrap(self, name: str, value: float) -> float:
        return value % counter_modulus(self.profile, name)

    def reboot(self) -> None:
        """A PLC restart: counters read 0 from now on; the process itself carries on."""
        self._base = self._totals_at(self._now)
        self._reboots.append(self._now)

    def ground_truth(self) -> GroundTruth:
        intervals = [s.iv for s in self._segments[: self._i]]
        if self._now > self.segment.iv.start:
            intervals.append(self.segment.iv.clipped(self._now))
        return GroundTruth(self.kind, self.name, self.unit, self.spec.ideal_rate, self._now,
                           tuple(intervals), tuple(self._reboots))  # fmt: skip

    def values(self) -> Mapping[str, Value]:
        raise NotImplementedError

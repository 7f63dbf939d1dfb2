"""OEE and ISO 22400-2 KPIs from the summed components of a window (docs/kpi.md, "KPIs").

A window (an hour, a shift, a line) accumulates `Components`: times in seconds and counts, all
plain sums. Roll-ups add components and only then divide, never averaging percentages (an OEE
of two machines is not the mean of their OEEs). A KPI whose denominator is zero is undefined
(None), never 0: "no planned time" must not read as "0 % OEE".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields

# Float sums of many intervals are not exact: A = 1.0000000000002 is rounding, not bad input.
_EPS = 1e-9


@dataclass(slots=True)
class Components:
    """Everything a window accumulates; all sums, so windows and machines add up."""

    calendar_s: float = 0.0  # all time in the window (for TEEP)
    planned_s: float = 0.0  # planned production time (PPT / PBT): calendar plan minus
    # planned stops (calendar breaks and the "planned_stop" state)
    running_s: float = 0.0  # APT
    idle_s: float = 0.0  # ADOT: available, not producing (starved, blocked, waiting)
    down_s: float = 0.0  # ADET: failures
    setup_s: float = 0.0  # ASUT
    planned_stop_s: float = 0.0  # planned stops signalled by the machine inside planned time
    unknown_s: float = 0.0  # planned time with no trustworthy state (bad quality, gaps)
    total: float = 0.0  # PQ
    good: float = 0.0  # GQ (first-time good: reworked parts are not good)
    reject: float = 0.0  # SQ
    rework: float = 0.0  # RQ (0 unless a rework counter exists)
    ideal_s: float = 0.0  # sum(ideal cycle time x count): net run time
    energy_kwh: float = 0.0
    has_energy: bool = False
    failures: int = 0  # FE: transitions into "down"
    down_by_reason: dict[str, float] = field(default_factory=dict)  # seconds per reason label

    def __add__(self, other: Components) -> Components:
        summed = Components()
        for f in fields(Components):
            if f.name not in ("has_energy", "down_by_reason"):
                setattr(summed, f.name, getattr(self, f.name) + getattr(other, f.name))
        summed.has_energy = self.has_energy or other.has_energy
        summed.down_by_reason = dict(self.down_by_reason)
        for reason, seconds in other.down_by_reason.items():
            summed.down_by_reason[reason] = summed.down_by_reason.get(reason, 0.0) + seconds
        return summed


def rollup(parts: Iterable[Components]) -> Components:
    """The components of several windows or machines together (sum, then divide later)."""
    total = Components()
    for part in parts:
        total = total + part
    return total


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _known_planned(c: Components) -> float:
    """Planned time whose state we know: availability's denominator (PPT / PBT). Unknown time is
    reported on its own, not counted as a stop: we do not guess what the machine did."""
    return c.planned_s - c.unknown_s


def _oee(c: Components, a: float | None, p: float | None, q: float | None) -> float | None:
    if a is not None and p is not None and q is not None:
        return a * p * q
    # Known planned time passed and nothing was made: OEE is a true 0 (the "simple OEE"
    # good x ICT / PPT is 0/PPT), even though P or Q alone has no denominator.
    if a is not None and c.total == 0:
        return 0.0
    return None  # no planned time, or counts without run time (bad state input)


def _teep(c: Components, oee: float | None) -> float | None:
    utilisation = _ratio(c.planned_s, c.calendar_s)
    return None if oee is None or utilisation is None else oee * utilisation


def classic(c: Components) -> dict[str, float | None]:
    """Classic (Nakajima / oee.com) OEE, standards.md §1.5."""
    a = _ratio(c.running_s, _known_planned(c))
    p = _ratio(c.ideal_s, c.running_s)
    q = _ratio(c.good, c.total)
    oee = _oee(c, a, p, q)
    return {
        "availability": a,
        "performance": p,
        "quality": q,
        "oee": oee,
        "teep": _teep(c, oee),
        "energy_per_good": _ratio(c.energy_kwh, c.good) if c.has_energy else None,
    }


def iso22400(c: Components) -> dict[str, float | None]:
    """The ISO 22400-2 KPIs on the time hierarchy of standards.md §1.2:
    PBT = known planned time, AUPT = APT + ASUT, AUBT = AUPT + ADET, AOET = AUBT + ADOT."""
    pbt = _known_planned(c)
    apt, asut, adet, adot = c.running_s, c.setup_s, c.down_s, c.idle_s
    aupt = apt + asut
    aubt = aupt + adet
    aoet = aubt + adot
    availability = _ratio(apt, pbt)
    # PRU x PQ is the ideal (planned) time of what was produced: ideal_s.
    effectiveness = _ratio(c.ideal_s, apt)
    quality_ratio = _ratio(c.good, c.total)
    oee = _oee(c, availability, effectiveness, quality_ratio)
    aupt_share = _ratio(aupt, pbt)
    nee = (
        aupt_share * effectiveness * quality_ratio
        if aupt_share is not None and effectiveness is not None and quality_ratio is not None
        else (0.0 if aupt_share is not None and c.total == 0 else None)
    )
    throughput = _ratio(c.total, aoet)
    return {
        "availability": availability,
        "effectiveness": effectiveness,
        "quality_ratio": quality_ratio,
        "oee_index": oee,
        "nee_index": nee,
        "allocation_efficiency": _ratio(aubt, pbt),
        "utilization_efficiency": _ratio(apt, aubt),
        "technical_efficiency": _ratio(apt, apt + adet),
        "setup_rate": _ratio(asut, aupt),
        "throughput_rate": None if throughput is None else throughput * 3600.0,  # per hour
        "scrap_ratio": _ratio(c.reject, c.total),
        "rework_ratio": _ratio(c.rework, c.total),
        # FPY = GP / IP needs serialised parts; from counters, the parts neither scrapped nor
        # reworked out of all produced: (PQ - SQ - RQ) / PQ.
        "first_pass_yield": _ratio(c.total - c.reject - c.rework, c.total),
        # TBF counts setup and production time but no delays (IEC 60050-191): AUPT per failure.
        "mtbf_s": _ratio(aupt, c.failures),
        "mttr_s": _ratio(adet, c.failures),
        "teep": _teep(c, oee),
    }


def flags(c: Components, tolerance: float = 1.05) -> list[str]:
    """Data-quality flags of a window, in a fixed order.

    - performance_above_100: P > tolerance; the value is kept uncapped (standards.md §1.6,
      usually a wrong ideal cycle time).
    - availability_above_100 / quality_above_100: impossible values, so the input is wrong
      (running outside the plan, a good counter ahead of the total counter).
    - count_without_run_time: parts counted but no run time: the state signal is wrong.
    - unknown_time: some planned time had no trustworthy state.
    - no_planned_time: nothing was planned, so A, P-based OEE and TEEP are undefined.
    """
    out: list[str] = []
    k = classic(c)
    p, a, q = k["performance"], k["availability"], k["quality"]
    if p is not None and p > tolerance:
        out.append("performance_above_100")
    if a is not None and a > 1.0 + _EPS:
        out.append("availability_above_100")
    if q is not None and q > 1.0 + _EPS:
        out.append("quality_above_100")
    if c.running_s <= 0 and c.total > 0:
        out.append("count_without_run_time")
    if c.unknown_s > 0:
        out.append("unknown_time")
    if c.planned_s <= 0:
        out.append("no_planned_time")
    return out

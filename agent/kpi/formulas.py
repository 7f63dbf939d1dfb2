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
    frozen_s: float = 0.0  # the part of unknown_s whose values were frozen (docs/kpi.md)
    total: float = 0.0  # PQ
    good: float = 0.0  # GQ (first-time good: reworked parts are not good)
    reject: float = 0.0  # SQ
    rework: float = 0.0  # RQ (0 unless a rework counter exists)
    ideal_s: float = 0.0  # sum(ideal cycle time x count): net run time
    energy_kwh: float = 0.0
    has_energy: bool = False
    failures: int = 0  # FE: transitions into "down"
    down_by_reason: dict[str, float] = field(default_factory=dict)  # seconds per reason label
    # Ideal time of the good, rejected and reworked parts (count x ideal cycle time): quality by
    # ideal time, so a line of machines making different things adds time, never units.
    good_ideal_s: float = 0.0
    reject_ideal_s: float = 0.0
    rework_ideal_s: float = 0.0
    # Production whose time is unknown (docs/kpi.md, "Production in unknown time"): the share
    # of a counter's delta that falls on unknown time is kept apart, not credited to known run
    # time; in units of the total counter and as ideal time.
    unknown_count: float = 0.0
    unknown_ideal_s: float = 0.0
    # Running outside planned time (a calendar break, off shift): overtime, kept apart from
    # planned time and from the counts of OEE.
    overtime_s: float = 0.0
    overtime_count: float = 0.0
    implausible: int = 0  # counter steps beyond the plausibility bound, capped
    # False for a roll-up of several machines: their counts are in different units (parts,
    # tonnes, picks) and are not added; quality and the ratios then go by ideal time.
    units: bool = True
    # One machine's window per product code (docs/kpi.md, Per product), when it has a product
    # tag: the same components, counted while that product was in force. Empty otherwise and
    # in a roll-up of machines (product codes are the machine's own).
    products: dict[str, Components] = field(default_factory=dict)

    def __add__(self, other: Components) -> Components:
        summed = Components()
        for f in fields(Components):
            if f.name not in ("has_energy", "down_by_reason", "units", "products"):
                setattr(summed, f.name, getattr(self, f.name) + getattr(other, f.name))
        summed.has_energy = self.has_energy or other.has_energy
        summed.units = self.units and other.units
        summed.down_by_reason = dict(self.down_by_reason)
        for reason, seconds in other.down_by_reason.items():
            summed.down_by_reason[reason] = summed.down_by_reason.get(reason, 0.0) + seconds
        summed.products = dict(self.products)
        for code, part in other.products.items():
            held = summed.products.get(code)
            summed.products[code] = part if held is None else held + part
        return summed


def rollup(parts: Iterable[Components]) -> Components:
    """The components of several windows of one machine together (sum, then divide later)."""
    total = Components()
    for part in parts:
        total = total + part
    return total


def line_rollup(parts: Iterable[Components]) -> Components:
    """The components of several machines (a line, an area, the site): times and ideal times
    add (ISO 22400: add the components, then divide); counts do not, as units differ from
    machine to machine. Quality is then Σ good x ICT / Σ produced x ICT, and OEE
    Σ good x ICT / Σ known planned time."""
    total = rollup(parts)
    total.units = False
    total.products = {}  # a product code means something on its own machine only
    return total


# Count fields that have no meaning across machines (`units` False): null in a line's record.
COUNT_FIELDS = ("total", "good", "reject", "rework", "unknown_count", "overtime_count")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _known_planned(c: Components) -> float:
    """Planned time whose state we know: availability's denominator (PPT / PBT). Unknown time is
    reported on its own, not counted as a stop: we do not guess what the machine did."""
    return c.planned_s - c.unknown_s


def _made(c: Components) -> float:
    """How much was made: the count for one machine, the ideal time for a roll-up."""
    return c.total if c.units else c.ideal_s


def _quality(c: Components, num: float, num_ideal_s: float) -> float | None:
    """A share of what was made: by count for one machine, by ideal time for a roll-up."""
    return _ratio(num, c.total) if c.units else _ratio(num_ideal_s, c.ideal_s)


def _oee(c: Components, a: float | None, p: float | None, q: float | None) -> float | None:
    if a is not None and p is not None and q is not None:
        return a * p * q
    # Known planned time passed and nothing was made: OEE is a true 0 (the "simple OEE"
    # good x ICT / PPT is 0/PPT), even though P or Q alone has no denominator.
    if a is not None and _made(c) == 0:
        return 0.0
    return None  # no planned time, or counts without run time (bad state input)


def _teep(c: Components, oee: float | None) -> float | None:
    utilisation = _ratio(c.planned_s, c.calendar_s)
    return None if oee is None or utilisation is None else oee * utilisation


def classic(c: Components) -> dict[str, float | None]:
    """Classic (Nakajima / oee.com) OEE, standards.md §1.5."""
    a = _ratio(c.running_s, _known_planned(c))
    p = _ratio(c.ideal_s, c.running_s)
    q = _quality(c, c.good, c.good_ideal_s)
    oee = _oee(c, a, p, q)
    return {
        "availability": a,
        "performance": p,
        "quality": q,
        "oee": oee,
        "teep": _teep(c, oee),
        "energy_per_good": _ratio(c.energy_kwh, c.good) if c.has_energy and c.units else None,
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
    quality_ratio = _quality(c, c.good, c.good_ideal_s)
    oee = _oee(c, availability, effectiveness, quality_ratio)
    aupt_share = _ratio(aupt, pbt)
    nee = (
        aupt_share * effectiveness * quality_ratio
        if aupt_share is not None and effectiveness is not None and quality_ratio is not None
        else (0.0 if aupt_share is not None and _made(c) == 0 else None)
    )
    throughput = _ratio(c.total, aoet) if c.units else None
    return {
        "availability": availability,
        "effectiveness": effectiveness,
        "quality_ratio": quality_ratio,
        "oee_index": oee,
        "nee_index": nee,
        "allocation_efficiency": _ratio(aubt, pbt),
        # ISO 22400-2 production process ratio APT / AOET and allocation ratio AUBT / AOET.
        "production_process_ratio": _ratio(apt, aoet),
        "allocation_ratio": _ratio(aubt, aoet),
        "utilization_efficiency": _ratio(apt, aubt),
        "technical_efficiency": _ratio(apt, apt + adet),
        "setup_rate": _ratio(asut, aupt),
        "throughput_rate": None if throughput is None else throughput * 3600.0,  # per hour
        "scrap_ratio": _quality(c, c.reject, c.reject_ideal_s),
        "rework_ratio": _quality(c, c.rework, c.rework_ideal_s),
        # FPY = GP / IP needs serialised parts; from counters, the parts neither scrapped nor
        # reworked out of all produced: (PQ - SQ - RQ) / PQ.
        "first_pass_yield": _quality(
            c, c.total - c.reject - c.rework, c.ideal_s - c.reject_ideal_s - c.rework_ideal_s
        ),
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
    - frozen: some of it because the source's values stopped moving (frozen values).
    - unknown_production: parts were counted across unknown time and kept out of the OEE.
    - implausible_count: a counter step beyond ideal rate x elapsed time was capped.
    - overtime: the machine ran outside planned time (a break, off shift); kept apart.
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
    if c.running_s <= 0 and _made(c) > 0:
        out.append("count_without_run_time")
    if c.unknown_s > 0:
        out.append("unknown_time")
    if c.frozen_s > 0:
        out.append("frozen")
    if c.unknown_ideal_s > 0 or c.unknown_count > 0:
        out.append("unknown_production")
    if c.implausible > 0:
        out.append("implausible_count")
    if c.overtime_s > 0 or c.overtime_count > 0:
        out.append("overtime")
    if c.planned_s <= 0:
        out.append("no_planned_time")
    return out


def unknown_share(c: Components) -> dict[str, float | None]:
    """How much of a window the OEE beside it could not see (shown next to every OEE): the
    share of planned time whose state is unknown, and the share of production (by ideal time)
    counted across unknown time. None where there is nothing to share."""
    made = c.ideal_s + c.unknown_ideal_s
    return {"time": _ratio(c.unknown_s, c.planned_s), "parts": _ratio(c.unknown_ideal_s, made)}

"""Planned time and KPI windows (hour, shift, day) from the shift calendar (docs/kpi.md).

All instants are UTC nanoseconds since the epoch and every interval is half-open [start, end).
The calendar is written in local wall-clock time (`agent.config.Calendar`); it is converted here
and only here, so daylight saving is handled in one place: a local day may last 23 or 25 hours
and a night shift across the change is one hour shorter or longer.

Rules for a shift occurrence: it belongs to the local date on which it starts; it happens if
that date's weekday is in the shift's `days` and the date is not a day off (so a night shift
starting the evening before a holiday is still worked). Wall-clock times that do not exist (the
spring-forward gap) are taken with the offset in force before the change, as `zoneinfo` does
with fold=0; a wall-clock time that occurs twice is taken at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import pairwise
from typing import Literal

from agent.config.calendar import WEEKDAYS, Calendar, Shift

WindowKind = Literal["hour", "shift", "day"]
KINDS: tuple[WindowKind, ...] = ("hour", "shift", "day")
_KIND_ORDER = {k: i for i, k in enumerate(KINDS)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Window:
    kind: WindowKind
    # "2026-11-27T08" for hours, "2026-11-27/early" for shifts (local date of the shift start),
    # "2026-11-27" for days. The hour that occurs twice when clocks go back gets its UTC offset
    # appended to both occurrences ("2026-10-25T02+02:00", "2026-10-25T02+01:00").
    name: str
    start_ns: int
    end_ns: int


def _zone(calendar: Calendar | None) -> tzinfo:
    return UTC if calendar is None else calendar.zone


def _instant(wall: datetime, zone: tzinfo, fold: int = 0) -> int:
    """UTC ns of a naive local wall-clock time."""
    aware = wall.replace(tzinfo=zone, fold=fold)
    return (aware - _EPOCH) // timedelta(microseconds=1) * 1000


def _local(t_ns: int, zone: tzinfo) -> datetime:
    """The aware local time of an instant (microseconds are plenty for names and dates)."""
    return (_EPOCH + timedelta(microseconds=t_ns // 1000)).astimezone(zone)


def _ambiguous(wall: datetime, zone: tzinfo) -> bool:
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    return first.utcoffset() != second.utcoffset() and (
        _local(_instant(wall, zone, 1), zone).replace(tzinfo=None) == wall
    )


def _dates(start_ns: int, end_ns: int, zone: tzinfo, before: int = 0) -> Iterator[date]:
    """Local dates from `before` days before the date of start_ns to the date of end_ns."""
    day = _local(start_ns, zone).date() - timedelta(days=before)
    last = _local(end_ns, zone).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def _day_windows(start_ns: int, end_ns: int, zone: tzinfo) -> Iterator[Window]:
    for day in _dates(start_ns, end_ns, zone):
        begin = _instant(datetime.combine(day, time()), zone)
        finish = _instant(datetime.combine(day + timedelta(days=1), time()), zone)
        yield Window("day", day.isoformat(), begin, finish)


def _hour_starts(start_ns: int, end_ns: int, zone: tzinfo) -> list[int]:
    """Every instant where a local hour begins, from before start_ns to past end_ns. Walks the
    wall clock hour by hour with an hour's margin each side, so a repeated or skipped hour
    next to either end is still seen."""
    wall = _local(start_ns, zone).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    wall -= timedelta(hours=1)
    last = _local(end_ns, zone).replace(tzinfo=None) + timedelta(hours=2)
    starts: set[int] = set()
    while wall <= last:
        starts.add(_instant(wall, zone))  # in a gap: the instant the clock jumps (fold=0)
        if _ambiguous(wall, zone):
            starts.add(_instant(wall, zone, 1))
        wall += timedelta(hours=1)
    return sorted(starts)


def _hour_windows(start_ns: int, end_ns: int, zone: tzinfo) -> Iterator[Window]:
    starts = _hour_starts(start_ns, end_ns, zone)
    for begin, finish in pairwise(starts):
        local = _local(begin, zone)
        wall = local.replace(tzinfo=None, minute=0, second=0, microsecond=0)
        name = wall.strftime("%Y-%m-%dT%H")
        if _ambiguous(wall, zone):
            name += local.isoformat()[-6:]
        yield Window("hour", name, begin, finish)


@dataclass(frozen=True, slots=True)
class _Occurrence:
    shift: Shift
    day: date
    start_ns: int
    end_ns: int


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


def _occurrences(calendar: Calendar, start_ns: int, end_ns: int) -> Iterator[_Occurrence]:
    """Shift occurrences that may overlap [start, end): a shift lasts under 24 h of wall clock,
    so one starting the day before the first date is the earliest that can reach into it."""
    zone = calendar.zone
    days_off = set(calendar.days_off)
    for day in _dates(start_ns, end_ns, zone, before=1):
        if day in days_off:
            continue
        for shift in calendar.shifts:
            if WEEKDAYS[day.weekday()] not in shift.days:
                continue
            wall = datetime.combine(day, shift.start)
            yield _Occurrence(
                shift,
                day,
                _instant(wall, zone),
                _instant(wall + timedelta(minutes=shift.minutes), zone),
            )


def _shift_windows(calendar: Calendar, start_ns: int, end_ns: int) -> Iterator[Window]:
    for occ in _occurrences(calendar, start_ns, end_ns):
        name = f"{occ.day.isoformat()}/{occ.shift.name}"
        yield Window("shift", name, occ.start_ns, occ.end_ns)


def windows(
    calendar: Calendar | None,
    start_ns: int,
    end_ns: int,
    kinds: Collection[str] = KINDS,
) -> list[Window]:
    """Every window of `kinds` overlapping [start_ns, end_ns), sorted by (start, kind).

    Hours and days are local to the calendar's time zone (UTC without a calendar); shifts come
    only from a calendar with shifts.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown window kind(s) {sorted(unknown)}: use hour, shift or day")
    if end_ns <= start_ns:
        return []
    zone = _zone(calendar)
    found: list[Window] = []
    if "hour" in kinds:
        found += _hour_windows(start_ns, end_ns, zone)
    if "day" in kinds:
        found += _day_windows(start_ns, end_ns, zone)
    if "shift" in kinds and calendar is not None:
        found += _shift_windows(calendar, start_ns, end_ns)
    hits = {w for w in found if w.start_ns < end_ns and w.end_ns > start_ns}
    return sorted(hits, key=lambda w: (w.start_ns, _KIND_ORDER[w.kind], w.name))


def window_at(calendar: Calendar | None, kind: str, t_ns: int) -> Window | None:
    """The window of `kind` holding instant t_ns; None when no shift runs at t_ns. Where shifts
    overlap (a handover), the one that started first wins."""
    for w in windows(calendar, t_ns, t_ns + 1, (kind,)):
        if w.start_ns <= t_ns < w.end_ns:
            return w
    return None


def merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-empty, non-overlapping intervals covering the same instants."""
    merged: list[tuple[int, int]] = []
    for begin, finish in sorted(i for i in intervals if i[1] > i[0]):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
        else:
            merged.append((begin, finish))
    return merged


def _worked(calendar: Calendar, occ: _Occurrence) -> list[tuple[int, int]]:
    """One shift occurrence minus its breaks."""
    zone = calendar.zone
    wall = datetime.combine(occ.day, occ.shift.start)
    pieces = [(occ.start_ns, occ.end_ns)]
    for brk in occ.shift.breaks:
        # Offsets from the shift start, so a break after midnight falls on the next date.
        begin = (_minutes(brk.start) - _minutes(occ.shift.start)) % 1440
        finish = (_minutes(brk.end) - _minutes(occ.shift.start)) % 1440
        b0 = _instant(wall + timedelta(minutes=begin), zone)
        # A break lasts its length on the clock: one inside the repeated autumn hour is 30 min,
        # not the 90 min between the first 02:30 and the (single) 03:00.
        b1 = b0 + ((finish - begin) % 1440) * 60 * 1_000_000_000
        pieces = [piece for p in pieces for piece in _minus(p, (b0, b1))]
    return pieces


def _minus(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    if b[0] > a[0]:
        out.append((a[0], min(a[1], b[0])))
    if b[1] < a[1]:
        out.append((max(a[0], b[1]), a[1]))
    return [p for p in out if p[1] > p[0]]


def planned_intervals(
    calendar: Calendar | None, start_ns: int, end_ns: int
) -> list[tuple[int, int]]:
    """The planned production time inside [start_ns, end_ns): shift time minus breaks, on the
    days the shifts run and not on days off. No calendar, or one without shifts, plans every
    instant (24/7). Half-open, sorted, merged."""
    if end_ns <= start_ns:
        return []
    if calendar is None or not calendar.shifts:
        return [(start_ns, end_ns)]
    pieces = (
        (max(b, start_ns), min(e, end_ns))
        for occ in _occurrences(calendar, start_ns, end_ns)
        for b, e in _worked(calendar, occ)
    )
    return merge(pieces)


def overlap_ns(a: tuple[int, int], intervals: Sequence[tuple[int, int]]) -> int:
    """How much of `a` the intervals cover; they must not overlap each other (merge() them)."""
    return sum(max(0, min(a[1], e) - max(a[0], b)) for b, e in intervals)


def split(start_ns: int, end_ns: int, cuts: Iterable[int]) -> list[tuple[int, int]]:
    """[start, end) cut at every boundary strictly inside it; the pieces tile it exactly."""
    if end_ns < start_ns:
        raise ValueError(f"interval ends before it starts: [{start_ns}, {end_ns})")
    inner = sorted({c for c in cuts if start_ns < c < end_ns})
    edges = [start_ns, *inner, end_ns]
    return [(b, e) for b, e in pairwise(edges) if e > b]

"""Shift calendar: planned time, hour/shift/day windows, exact splitting, DST."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import Calendar
from agent.kpi.calendar import (
    Window,
    overlap_ns,
    planned_intervals,
    split,
    window_at,
    windows,
)

H = 3600 * 10**9
MIN = 60 * 10**9
BERLIN = ZoneInfo("Europe/Berlin")


def local(y: int, mo: int, d: int, h: int = 0, mi: int = 0, zone: ZoneInfo = BERLIN) -> int:
    """UTC ns of a local wall-clock time (first occurrence if ambiguous)."""
    return int(datetime(y, mo, d, h, mi, tzinfo=zone).timestamp()) * 10**9


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()) * 10**9


def calendar(**kw: object) -> Calendar:
    return Calendar.model_validate({"timezone": "Europe/Berlin", **kw})


# Two shifts Mon-Fri; the night shift crosses midnight and has a break after midnight.
PLANT = calendar(
    shifts=[
        {
            "name": "early",
            "start": "06:00",
            "end": "14:00",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            # oee.com: 2 x 15 min breaks and a 30 min meal in 480 min -> 420 min planned
            "breaks": [
                {"start": "08:00", "end": "08:15"},
                {"start": "10:00", "end": "10:30"},
                {"start": "12:00", "end": "12:15"},
            ],
        },
        {
            "name": "night",
            "start": "22:00",
            "end": "06:00",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "breaks": [{"start": "02:00", "end": "02:30"}],
        },
    ],
    days_off=["2026-12-25"],
)


def planned_ns(cal: Calendar | None, start: int, end: int) -> int:
    return sum(e - b for b, e in planned_intervals(cal, start, end))


def test_breaks_leave_planned_production_time() -> None:
    # Friday 2026-11-27, early shift: 480 - 60 = 420 min (the oee.com vector's PPT)
    start, end = local(2026, 11, 27, 6), local(2026, 11, 27, 14)
    assert planned_ns(PLANT, start, end) == 420 * MIN
    assert planned_intervals(PLANT, start, end) == [
        (start, local(2026, 11, 27, 8)),
        (local(2026, 11, 27, 8, 15), local(2026, 11, 27, 10)),
        (local(2026, 11, 27, 10, 30), local(2026, 11, 27, 12)),
        (local(2026, 11, 27, 12, 15), end),
    ]


def test_shift_across_midnight() -> None:
    # Friday's night shift runs into Saturday; it belongs to Friday's date.
    w = window_at(PLANT, "shift", local(2026, 11, 28, 3))
    assert w == Window("shift", "2026-11-27/night", local(2026, 11, 27, 22), local(2026, 11, 28, 6))
    # 8 h minus the 02:00-02:30 break, which falls on the next calendar date
    assert planned_ns(PLANT, w.start_ns, w.end_ns) == 450 * MIN
    assert planned_intervals(PLANT, local(2026, 11, 28, 0), local(2026, 11, 28, 12)) == [
        (local(2026, 11, 28, 0), local(2026, 11, 28, 2)),
        (local(2026, 11, 28, 2, 30), local(2026, 11, 28, 6)),
    ]


def test_no_shift_between_shifts_and_on_weekends() -> None:
    assert window_at(PLANT, "shift", local(2026, 11, 27, 15)) is None
    assert window_at(PLANT, "shift", local(2026, 11, 28, 10)) is None  # Saturday
    assert window_at(PLANT, "shift", local(2026, 11, 28, 23)) is None
    # Saturday: only the tail of Friday's night shift is planned
    assert planned_ns(PLANT, local(2026, 11, 28), local(2026, 11, 29)) == 330 * MIN
    assert planned_ns(PLANT, local(2026, 11, 29), local(2026, 11, 30)) == 0


def test_days_off() -> None:
    # 2026-12-25 (Friday) is off: no early or night shift that starts on it...
    assert window_at(PLANT, "shift", local(2026, 12, 25, 9)) is None
    assert windows(PLANT, local(2026, 12, 25), local(2026, 12, 26), ["shift"]) == [
        Window("shift", "2026-12-24/night", local(2026, 12, 24, 22), local(2026, 12, 25, 6))
    ]
    # ...but Thursday's night shift, starting the evening before, is worked.
    assert planned_ns(PLANT, local(2026, 12, 25), local(2026, 12, 26)) == 330 * MIN
    # a full working Thursday: 420 (early) + 120 (night until midnight) + 330 (Wed night tail)
    assert planned_ns(PLANT, local(2026, 12, 24), local(2026, 12, 25)) == (420 + 120 + 330) * MIN


def test_dst_autumn_day_is_25_hours() -> None:
    # Europe/Berlin, last Sunday of October 2026: 03:00 CEST -> 02:00 CET
    cal = calendar()
    day = window_at(cal, "day", local(2026, 10, 25, 12))
    assert day == Window("day", "2026-10-25", utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert day.end_ns - day.start_ns == 25 * H
    hours = windows(cal, day.start_ns, day.end_ns, ["hour"])
    assert len(hours) == 25
    assert all(h.end_ns - h.start_ns == H for h in hours)
    names = [h.name for h in hours]
    assert len(set(names)) == 25  # the repeated hour is named apart
    assert names[1:5] == [
        "2026-10-25T01",
        "2026-10-25T02+02:00",
        "2026-10-25T02+01:00",
        "2026-10-25T03",
    ]


def test_dst_spring_day_is_23_hours() -> None:
    cal = calendar()
    day = window_at(cal, "day", local(2026, 3, 29, 12))
    assert day is not None and day.end_ns - day.start_ns == 23 * H
    hours = windows(cal, day.start_ns, day.end_ns, ["hour"])
    assert [h.name[-2:] for h in hours][:4] == ["00", "01", "03", "04"]  # 02:xx never happens


def test_night_shift_across_dst_change() -> None:
    # Saturday night 24/25 Oct: a night shift of 8 wall-clock hours lasts 9 real hours.
    cal = calendar(shifts=[{"name": "night", "start": "22:00", "end": "06:00"}])
    w = window_at(cal, "shift", utc(2026, 10, 25, 0, 30))
    assert w == Window("shift", "2026-10-24/night", utc(2026, 10, 24, 20), utc(2026, 10, 25, 5))
    assert planned_ns(cal, w.start_ns, w.end_ns) == 9 * H
    # in spring the same shift lasts 7 hours
    w = window_at(cal, "shift", local(2026, 3, 29, 4))
    assert w is not None and w.end_ns - w.start_ns == 7 * H


def test_no_calendar_is_utc_and_24_7() -> None:
    start, end = utc(2026, 11, 27, 22, 30), utc(2026, 11, 28, 1, 15)
    assert windows(None, start, end) == [
        Window("day", "2026-11-27", utc(2026, 11, 27), utc(2026, 11, 28)),
        Window("hour", "2026-11-27T22", utc(2026, 11, 27, 22), utc(2026, 11, 27, 23)),
        Window("hour", "2026-11-27T23", utc(2026, 11, 27, 23), utc(2026, 11, 28)),
        Window("hour", "2026-11-28T00", utc(2026, 11, 28), utc(2026, 11, 28, 1)),
        Window("day", "2026-11-28", utc(2026, 11, 28), utc(2026, 11, 29)),
        Window("hour", "2026-11-28T01", utc(2026, 11, 28, 1), utc(2026, 11, 28, 2)),
    ]
    assert window_at(None, "shift", start) is None
    assert planned_intervals(None, start, end) == [(start, end)]
    # a calendar without shifts plans every instant too, but days are local
    assert planned_intervals(calendar(), start, end) == [(start, end)]
    assert window_at(calendar(), "day", start) == Window(
        "day", "2026-11-27", local(2026, 11, 27), local(2026, 11, 28)
    )


def test_windows_sorted_by_start_then_kind() -> None:
    ws = windows(PLANT, local(2026, 11, 27, 5, 30), local(2026, 11, 27, 6, 30))
    assert [(w.kind, w.name) for w in ws] == [
        ("shift", "2026-11-26/night"),  # from 22:00 the day before
        ("day", "2026-11-27"),
        ("hour", "2026-11-27T05"),
        ("hour", "2026-11-27T06"),  # same start as the early shift: hour first
        ("shift", "2026-11-27/early"),
    ]
    all_kinds = windows(PLANT, local(2026, 11, 27), local(2026, 11, 27, 0, 1))
    assert [w.kind for w in all_kinds] == ["shift", "hour", "day"]


def test_bad_window_requests() -> None:
    with pytest.raises(ValueError, match="week"):
        windows(PLANT, 0, H, ["week"])
    with pytest.raises(ValueError, match="week"):
        window_at(PLANT, "week", 0)
    assert windows(PLANT, H, H) == []
    assert windows(PLANT, 2 * H, H) == []
    assert planned_intervals(PLANT, 2 * H, H) == []
    with pytest.raises(ValueError):
        split(2, 1, [])


@pytest.mark.parametrize(
    ("a", "intervals", "expected"),
    [
        ((0, 10), [], 0),
        ((0, 10), [(0, 10)], 10),
        ((0, 10), [(-5, 3), (8, 20)], 5),
        ((0, 10), [(10, 20)], 0),  # half-open: touching is no overlap
        ((5, 5), [(0, 10)], 0),
        ((0, 10), [(2, 4), (6, 7)], 3),
    ],
)
def test_overlap_ns(a: tuple[int, int], intervals: list[tuple[int, int]], expected: int) -> None:
    assert overlap_ns(a, intervals) == expected


@pytest.mark.parametrize(
    ("start", "end", "cuts", "expected"),
    [
        (0, 10, [], [(0, 10)]),
        (0, 10, [5], [(0, 5), (5, 10)]),
        (0, 10, [7, 3, 3, 0, 10, -4, 12], [(0, 3), (3, 7), (7, 10)]),
        (4, 4, [4], []),
    ],
)
def test_split(start: int, end: int, cuts: list[int], expected: list[tuple[int, int]]) -> None:
    assert split(start, end, cuts) == expected


@given(
    start=st.integers(-(10**12), 10**12),
    length=st.integers(0, 10**12),
    cuts=st.lists(st.integers(-(2 * 10**12), 2 * 10**12), max_size=20),
)
def test_split_pieces_tile_the_interval(start: int, length: int, cuts: list[int]) -> None:
    pieces = split(start, start + length, cuts)
    assert sum(e - b for b, e in pieces) == length
    assert all(e > b for b, e in pieces)
    assert all(p[1] == q[0] for p, q in pairwise(pieces))
    if pieces:
        assert pieces[0][0] == start and pieces[-1][1] == start + length


# Instants from 2026-01-01 to 2027-01-01, both DST changes included.
_YEAR = st.integers(utc(2026, 1, 1), utc(2027, 1, 1))


@given(start=_YEAR, length=st.integers(1, 3 * 24 * H), kind=st.sampled_from(["hour", "day"]))
def test_hours_and_days_tile_any_range(start: int, length: int, kind: str) -> None:
    # Clipped to the range, the windows of one kind cover it exactly, without gaps or overlaps.
    end = start + length
    ws = windows(PLANT, start, end, [kind])
    clipped = [(max(w.start_ns, start), min(w.end_ns, end)) for w in ws]
    assert clipped[0][0] == start and clipped[-1][1] == end
    assert all(p[1] == q[0] for p, q in pairwise(clipped))
    assert sum(e - b for b, e in clipped) == length
    assert len({w.name for w in ws}) == len(ws)


@given(start=_YEAR, length=st.integers(1, 3 * 24 * H))
def test_planned_time_splits_exactly_at_shift_boundaries(start: int, length: int) -> None:
    # Planned time of a range = the sum over its pieces cut at every window boundary.
    end = start + length
    ws = windows(PLANT, start, end)
    cuts = [t for w in ws for t in (w.start_ns, w.end_ns)]
    pieces = split(start, end, cuts)
    assert sum(planned_ns(PLANT, b, e) for b, e in pieces) == planned_ns(PLANT, start, end)
    # planned time inside shift windows only, and merged
    planned = planned_intervals(PLANT, start, end)
    assert all(p[1] < q[0] for p, q in pairwise(planned))
    shifts = [(w.start_ns, w.end_ns) for w in ws if w.kind == "shift"]
    assert sum(overlap_ns(p, shifts) for p in planned) == planned_ns(PLANT, start, end)


def test_day_names_follow_local_date() -> None:
    # 23:30 UTC on 27 Nov is already 28 Nov in Berlin; in Shanghai (UTC+8, no DST) 07:30.
    t = utc(2026, 11, 27, 23, 30)
    names = [
        w.name if w else None
        for w in (
            window_at(calendar(), "day", t),
            window_at(Calendar(timezone="Asia/Shanghai"), "hour", t),
            window_at(None, "day", t),
        )
    ]
    assert names == ["2026-11-28", "2026-11-28T07", "2026-11-27"]

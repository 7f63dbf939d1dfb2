"""Times on the command line: ISO-8601, today, yesterday, now, -2h, in the plant's zone."""

from datetime import UTC, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from agent.export import parse_time
from agent.timerange import parse_moment, plant_zone, zone_name

BERLIN = ZoneInfo("Europe/Berlin")
# 2026-11-26 01:30 in Berlin (00:30 UTC): "today" there began at 2026-11-25T23:00Z.
NOW = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
NOW_NS = int(NOW.timestamp()) * 1_000_000_000


def ns(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp()) * 1_000_000_000


def test_days_start_at_midnight_in_the_zone() -> None:
    assert parse_moment("today", BERLIN, NOW_NS, parse_time) == ns("2026-11-25T23:00:00+00:00")
    assert parse_moment("yesterday", BERLIN, NOW_NS, parse_time) == ns("2026-11-24T23:00:00Z")
    assert parse_moment("today", UTC, NOW_NS, parse_time) == ns("2026-11-26T00:00:00Z")
    assert parse_moment("now", UTC, NOW_NS, parse_time) == NOW_NS


def test_back_from_now_in_the_config_form() -> None:
    assert parse_moment("-2h", UTC, NOW_NS, parse_time) == NOW_NS - 7200 * 1_000_000_000
    assert parse_moment("-1m30s", UTC, NOW_NS, parse_time) == NOW_NS - 90 * 1_000_000_000
    with pytest.raises(ValueError, match=r'a time back from now is written like "-2h"'):
        parse_moment("-2x", UTC, NOW_NS, parse_time)


def test_an_iso_time_without_offset_is_read_in_the_zone() -> None:
    assert parse_moment("2026-11-26T06:00", BERLIN, NOW_NS, parse_time) == ns(
        "2026-11-26T05:00:00Z"
    )
    assert parse_moment("2026-11-26T06:00Z", BERLIN, NOW_NS, parse_time) == ns(
        "2026-11-26T06:00:00Z"
    )


def test_the_zone_is_the_plant_calendars_else_utc() -> None:
    assert plant_zone(None) is UTC
    assert plant_zone(SimpleNamespace(calendar=None)) is UTC
    assert plant_zone(SimpleNamespace(calendar=SimpleNamespace(zone=BERLIN))) is BERLIN
    assert zone_name(BERLIN) == "Europe/Berlin" and zone_name(UTC) == "UTC"

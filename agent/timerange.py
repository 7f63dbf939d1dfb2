"""Times on the command line (`export --from/--to`): ISO-8601, `today`, `yesterday`, `now` or
a time back from now (`-2h`, `-30m`, in the config's duration form).

A time without an offset, and the start of a day, are read in one zone for every command that
takes times (`export`, `oee`, `report`): the plant calendar's (`[calendar] zone`), UTC without
a calendar or without a config. The commands say which zone they read times in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from agent.duration import parse_duration

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WORDS = ("today", "yesterday", "now")


def plant_zone(config: Any | None) -> tzinfo:
    """The zone times are read in: the plant calendar's, else UTC."""
    calendar = getattr(config, "calendar", None) if config is not None else None
    return calendar.zone if calendar is not None else UTC


def zone_name(zone: tzinfo) -> str:
    """ "Europe/Berlin", "UTC": how the output names the zone."""
    return str(getattr(zone, "key", None) or zone.tzname(None) or zone)


def _ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def parse_moment(text: str, zone: tzinfo, now_ns: int, parse_iso: Any) -> int:
    """`text` as nanoseconds since the epoch; `parse_iso(text, zone)` reads the ISO forms.

    ValueError (one line, naming the forms) for anything else."""
    word = text.strip().lower()
    now = _EPOCH + timedelta(microseconds=now_ns // 1000)
    if word == "now":
        return now_ns
    if word in ("today", "yesterday"):
        midnight = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        day = midnight.date() - timedelta(days=1 if word == "yesterday" else 0)
        start = datetime(day.year, day.month, day.day, tzinfo=zone)
        return _ns(start)
    if word.startswith("-") and word[1:2].isdigit():
        try:
            back = parse_duration(word[1:])
        except ValueError:
            raise ValueError(
                f'{text!r}: a time back from now is written like "-2h" or "-30m"'
            ) from None
        return now_ns - round(back * 1e9)
    try:
        return int(parse_iso(text, zone))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: write an ISO-8601 time (2026-03-01T06:00), "
            'today, yesterday, now, or a time back from now ("-2h")'
        ) from None

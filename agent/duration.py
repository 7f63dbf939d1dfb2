"""Durations written with units, as in `"250ms"`, `"5s"` or `"1m30s"`, read into float seconds.

A bare number is refused on purpose: `timeout = 5` could mean seconds or milliseconds depending
on who wrote the config, and a wrong guess polls a PLC a thousand times too fast.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

UNITS: dict[str, float] = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

NEED_UNIT = 'durations need a unit, e.g. "500ms" or "5s"'

# One or more <number><unit> parts, largest first by convention ("1h30m", "1m30s", "1.5s").
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)")
_WHOLE = re.compile(r"-?(?:\d+(?:\.\d+)?(?:us|ms|s|m|h|d))+")


def parse_duration(text: str) -> float:
    """`"250ms"` → 0.25; `"1m30s"` → 90.0; a leading `-` gives a negative duration.

    Raises ValueError with a message fit for a config problem line.
    """
    cleaned = text.strip().replace(" ", "")
    if not cleaned:
        raise ValueError(f"empty duration; {NEED_UNIT}")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", cleaned):
        raise ValueError(f"{NEED_UNIT}, got {text!r}")
    if not _WHOLE.fullmatch(cleaned):
        raise ValueError(
            f'bad duration {text!r}: write a number and a unit (us, ms, s, m, h, d), e.g. "500ms"'
        )
    sign = -1.0 if cleaned.startswith("-") else 1.0
    total = sum(float(n) * UNITS[u] for n, u in _PART.findall(cleaned))
    return sign * total


def format_duration(seconds: float) -> str:
    """The shortest common spelling: 0.25 → "250ms", 90 → "90s", 3600 → "1h"."""
    if seconds == 0:
        return "0s"
    units = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3), ("us", 1e-6))
    for unit, size in units:
        count = seconds / size
        if abs(count) >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def _duration(value: object) -> float:
    # Numbers are refused before pydantic could coerce them: see the module docstring.
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"{NEED_UNIT}, got {value!r}")
        raise ValueError(f'expected a duration like "500ms", got {value!r}')
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def _positive_duration(value: object) -> float:
    seconds = _duration(value)
    if seconds == 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


# Seconds as float once validated; serialised back to the short spelling.
Duration = Annotated[
    float, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]
PositiveDuration = Annotated[
    float, BeforeValidator(_positive_duration), PlainSerializer(format_duration, return_type=str)
]


def parse_cli_duration(text: str) -> float:
    """A duration on the command line: the config's form ("30s", "1m30s"), or a bare number
    of seconds as earlier versions took it (a command line has one obvious unit)."""
    try:
        seconds = float(text)
    except ValueError:
        return parse_duration(text)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f'expected a duration like "30s", got {text!r}')
    return seconds

"""Sizes written with units, as in `"500MB"` or `"2GiB"`, read into bytes.

Like durations, a bare number is refused: `max_size = 500` is more likely a typo for 500 MB
than a request for a 500-byte store.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

UNITS: dict[str, int] = {
    "B": 1,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]+)")


def parse_size(text: str) -> int:
    """`"500MB"` → 500_000_000; `"2GiB"` → 2_147_483_648. Raises ValueError."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'bad size {text!r}: write a number and a unit, e.g. "500MB" or "2GiB"')
    number, unit = match.groups()
    if unit not in UNITS:
        raise ValueError(f"unknown size unit {unit!r} (known: {', '.join(UNITS)})")
    return round(float(number) * UNITS[unit])


def format_size(size: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "kB"):
        if size >= UNITS[unit] and size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return f"{size}B"


def _size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f'sizes need a unit, e.g. "500MB", got {value!r}')
    size = parse_size(value)
    if size <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return size


Size = Annotated[int, BeforeValidator(_size), PlainSerializer(format_size, return_type=str)]

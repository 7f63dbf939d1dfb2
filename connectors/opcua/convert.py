"""OPC UA values, status codes and timestamps as the columns of a `ReadingBatch` (pure).

- Quality comes from the two severity bits of the status code (Part 4, 7.39): 00 Good,
  01 Uncertain, 10 and 11 Bad.
- Values become float64: Boolean as 0/1, every integer width (SByte .. UInt64; beyond 2**53 a
  64-bit integer loses its low bits, as any float64 would), Float, Double, and DateTime as
  seconds since the Unix epoch. Text, byte strings and structures have no float64: they are
  `Unsupported` (the caller reads the tag bad and reports it once).
- Text tags (`type = "string"`) take `to_text` instead: a String as it is, a LocalizedText's
  text (its locale dropped), a ByteString in base64 (as OPC UA's JSON encoding writes it),
  a number or a Boolean as its text.
- Arrays are flattened only when the tag declares `array_length`: element i goes to row i,
  missing elements read bad. An array where a scalar was expected is `Unsupported`.
- The reading's time is the source timestamp by default (when the value was sampled at the
  device), the server's when configured, each falling back to the other, then to arrival.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.model import Quality

TimestampChoice = Literal["source", "server"]

_SEVERITY = np.array([Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD], dtype=np.uint8)


class Unsupported(ValueError):
    """A value that has no float64 reading (text, bytes, structure, undeclared array)."""


def quality_of(status: int) -> Quality:
    """Good / Uncertain / Bad from the severity bits (30-31) of an OPC UA status code."""
    return Quality(int(_SEVERITY[(status >> 30) & 0b11]))


def qualities(statuses: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint8]:
    """`quality_of` for a column of status codes."""
    severity: npt.NDArray[np.uint8] = _SEVERITY[(statuses >> np.uint32(30)) & np.uint32(0b11)]
    return severity


def datetime_ns(value: datetime | None) -> int:
    """Nanoseconds since the Unix epoch; 0 for a missing or pre-1970 ("null") timestamp."""
    if value is None:
        return 0
    if value.tzinfo is None:  # asyncua hands out aware UTC; a naive one is UTC too
        value = value.replace(tzinfo=UTC)
    # timestamp() is C code; datetimes carry microseconds, which a float64 holds exactly here.
    ns = round(value.timestamp() * 1e6) * 1000
    return ns if ns > 0 else 0


def to_float(value: object) -> float:
    """One scalar as float64, or `Unsupported`. None (no value) is NaN."""
    # bool before int: bool is an int subclass, and the order keeps the intent visible.
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if value is None:
        return math.nan
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, list | tuple):
        raise Unsupported(f"an array of {len(value)} where a scalar was expected")
    raise Unsupported(f"{type(value).__name__} values are not representable as float64")


def flatten(value: object, length: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """A declared array as `length` floats and a mask of the elements present.

    A shorter array leaves its missing elements NaN and absent (they read bad); extra elements
    are ignored. A scalar is `Unsupported`. An element that is not numeric is `Unsupported`.
    """
    values = np.full(length, math.nan, dtype=np.float64)
    present = np.zeros(length, dtype=np.bool_)
    if value is None:
        return values, present
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise Unsupported(f"a scalar where an array of {length} was declared")
    n = min(length, len(value))
    for i in range(n):
        values[i] = to_float(value[i])
    present[:n] = True
    return values, present


def to_text(value: object) -> str:
    """A text tag's value as its string; `Unsupported` for what has none (null, a structure,
    an array)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    text = getattr(value, "Text", _NO_TEXT)  # ua.LocalizedText, without importing asyncua
    if text is not _NO_TEXT and getattr(value, "Locale", _NO_TEXT) is not _NO_TEXT:
        return "" if text is None else str(text)
    if isinstance(value, bool | int | float):
        return str(value)
    raise Unsupported(f"a {type(value).__name__} value has no text")


_NO_TEXT = object()


def reading_time_ns(
    source_ns: int, server_ns: int, choice: TimestampChoice, arrival_ns: int
) -> int:
    """The reading's time: the chosen timestamp, else the other one, else arrival."""
    first, second = (source_ns, server_ns) if choice == "source" else (server_ns, source_ns)
    return first or second or arrival_ns

"""How a reading is printed and sent: the shortest text that round-trips the tag's stored type.

The store keeps every reading as a float64, so a float32 register (806.864) comes back as
806.864013671875 and a scaled integer (237 * 0.1) as 23.700000000000003. Both are noise the
device never meant: a float32 is shown as the shortest decimal that reads back to the same
float32, a scaled integer to the decimals of its scale, integers and booleans as such.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

_INTEGER_TYPES = frozenset(
    {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "byte", "word"}
    | {"dword", "int", "dint", "sint", "usint", "uint", "udint", "lint", "ulint"}
)
_FLOAT32_TYPES = frozenset({"float32", "float", "real"})


Plain = bool | int | float | None


def _decimals(step: float) -> int:
    """The decimals a multiple of `step` needs: 0.1 -> 1, 0.25 -> 2, 2 -> 0."""
    exponent = Decimal(repr(abs(step))).normalize().as_tuple().exponent
    return max(0, -int(exponent))


def plain(value: float, tag: object | None = None) -> Plain:
    """The reading as JSON wants it: None for a missing or non-finite value, a bool or an int
    for a boolean or integer tag, else a float rounded to what its type can say."""
    if value != value or not math.isfinite(value):
        return None
    kind = str(getattr(tag, "type", None) or "").lower()
    scale = float(getattr(tag, "scale", 1.0) or 1.0)
    offset = float(getattr(tag, "offset", 0.0) or 0.0)
    if kind == "bool":
        return bool(value)
    if kind in _INTEGER_TYPES:
        if scale == 1.0 and offset == 0.0:
            # A whole number as such; anything else came scaled by a config we do not see.
            return int(value) if value == int(value) else float(value)
        places = max(_decimals(scale), _decimals(offset))
        rounded = round(value, places)
        return int(rounded) if places == 0 else rounded
    if kind in _FLOAT32_TYPES:
        # The shortest decimal that reads back to the same float32 (numpy's repr does that).
        return float(np.format_float_positional(np.float32(value), trim="-"))
    return float(value)


def text(value: float, tag: object | None = None) -> str:
    """The reading as printed: "23.7", "806.864", "42", "true"; "-" when there is none."""
    shown = plain(value, tag)
    if shown is None:
        return "-"
    if isinstance(shown, bool):
        return "true" if shown else "false"
    if isinstance(shown, int):
        return str(shown)
    if shown == int(shown) and abs(shown) < 1e16:
        return str(int(shown))
    return repr(shown)


def models_by_path(config: Any) -> dict[str, Any]:
    """Tag path -> the tag's config model (its `type`, `scale`, `offset`), for formatting."""
    out: dict[str, Any] = {}
    for source in config.sources:
        for machine in source.machines():
            for tag in source.tags_of(machine):
                out[config.tag_path(machine, tag.name)] = tag
    return out


def is_text(tag: object | None) -> bool:
    """A text tag: its readings are strings, carried beside the batches (agent/texts.py)."""
    return str(getattr(tag, "type", None) or "").lower() == "string"


def shaper(tag: object | None) -> Callable[[float], Plain] | None:
    """`plain` for one tag, or None when its values go as they are (float64: nothing to do),
    so a hot loop pays only for the tags that need it. Tags shaped alike share one function
    (no closure per tag: 200 bytes each, 4 MB for 20,000 tags in two sinks)."""
    kind = str(getattr(tag, "type", None) or "").lower()
    if kind == "bool":
        return as_bool
    if kind in _FLOAT32_TYPES:
        return as_float32
    if kind not in _INTEGER_TYPES:
        return None
    scale = float(getattr(tag, "scale", 1.0) or 1.0)
    offset = float(getattr(tag, "offset", 0.0) or 0.0)
    if scale == 1.0 and offset == 0.0:
        return as_whole
    return _rounded(max(_decimals(scale), _decimals(offset)))


def as_bool(value: float) -> Plain:
    return plain(value, _BOOL)


def as_float32(value: float) -> Plain:
    return plain(value, _FLOAT32)


def as_whole(value: float) -> Plain:
    return plain(value, _WHOLE)


@functools.cache
def _rounded(places: int) -> Callable[[float], Plain]:
    """`plain` of a scaled integer tag whose scale and offset need `places` decimals: one
    function per number of decimals, whatever the tags."""

    def shaped(value: float) -> Plain:  # as `plain` does it for such a tag
        if value != value or not math.isfinite(value):
            return None
        rounded = round(value, places)
        return int(rounded) if places == 0 else rounded

    return shaped


@dataclass(frozen=True, slots=True)
class _Shape:
    """A stand-in tag for `plain`: what it reads of one (its type, scale and offset)."""

    type: str
    scale: float = 1.0
    offset: float = 0.0


_BOOL = _Shape("bool")
_FLOAT32 = _Shape("float32")
_WHOLE = _Shape("int32")

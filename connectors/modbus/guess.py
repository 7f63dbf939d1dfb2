"""Guesses of what registers hold, from their values read twice (`lineside discover modbus`).

A register map is numbers without types. Two reads a moment apart say more than one:

- a float32 over two registers is plausible in one word order when it reads as a short decimal
  of a sensible size (`806.864`, `23.7`) and not in the other; random bits rarely do;
- a register that rose between the reads is likely a counter (a uint32 counter's low word is
  the one that moves: the register before it in CDAB, after it in ABCD).

These are guesses, written as such (`guess: float32 ABCD = 806.864`); the engineer confirms them
against the device's documentation. Pure functions of the values; nothing here does I/O.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping

import numpy as np

# A plausible float: a size a process value has, and few significant digits.
FLOAT_MIN, FLOAT_MAX, FLOAT_DIGITS = 1e-3, 1e7, 7


def _float(high: int, low: int) -> float:
    return float(struct.unpack(">f", struct.pack(">HH", high, low))[0])


def plausible_float(value: float) -> bool:
    """Whether `value` looks like a process value rather than reinterpreted bits."""
    if not math.isfinite(value) or not FLOAT_MIN <= abs(value) <= FLOAT_MAX:
        return False
    text = np.format_float_positional(np.float32(value), trim="-").lstrip("-")
    digits = text.replace(".", "").strip("0")
    return len(digits) <= FLOAT_DIGITS


def _short(value: float) -> str:
    return str(np.format_float_positional(np.float32(value), trim="-"))


def guesses(first: Mapping[int, int], second: Mapping[int, int] | None = None) -> dict[int, str]:
    """Address -> a guess for the registers read (`first`, and `second` a moment later).

    A float32 guess is given at its first register and covers the next one too."""
    later = second or {}
    out: dict[int, str] = {}
    skip = -1
    for address in sorted(first):
        if address <= skip:
            continue
        value = first[address]
        following = first.get(address + 1)
        # A float first: its low word moves too, and would pass for a counter.
        if following is not None and (value, following) != (0, 0):
            abcd, cdab = _float(value, following), _float(following, value)
            if plausible_float(abcd) and not plausible_float(cdab):
                out[address] = f"guess: float32 ABCD = {_short(abcd)}"
                skip = address + 1
                continue
            if plausible_float(cdab) and not plausible_float(abcd):
                out[address] = f"guess: float32 CDAB = {_short(cdab)}"
                skip = address + 1
                continue
        moved = later.get(address, value) - value
        if moved > 0:
            out[address] = f"guess: counter (rose by {moved} between two reads)"
    return out

"""Counter deltas that survive register rollover and PLC resets (docs/kpi.md, "Counters").

Counts are taken as deltas of monotonic counters (standards.md §1.6). Two things make a counter
go down: it wrapped at its register width, or it was reset (a rebooted PLC, a new job). Neither
may produce a negative or a huge delta, since one bad step would wreck a whole shift's OEE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

WIDTHS = (16, 32, 64)

# A decrease is taken as a rollover only if the wrapped delta is below this share of the
# counter's range: a 16-bit counter must have been within 16384 counts of the top and come back
# as a small number. Between two polls no real machine advances a quarter of the range, so a
# larger "wrap" is a reset (the counter started again from 0) and never 49 000 phantom parts.
ROLLOVER_SHARE = 0.25


# The plausibility bound: no machine makes more than its ideal rate, so a step above
# ideal rate x (elapsed time x PLAUSIBLE_MARGIN + PLAUSIBLE_SLACK_S) + PLAUSIBLE_SLACK units
# cannot be true. The slack covers timestamps that are not exactly when the value was read (a
# slow answer, a stalled poller). It tells a PLC reboot from a rollover (the wrapped delta is far
# above it) and caps any other impossible step.
PLAUSIBLE_MARGIN = 2.0
PLAUSIBLE_SLACK_S = 60.0
PLAUSIBLE_SLACK = 2.0


@dataclass(frozen=True, slots=True)
class CounterStep:
    delta: float
    kind: Literal["normal", "rollover", "reset", "first"]
    capped: bool = False  # the step was above the plausibility bound and cut to it


def plausible_limit(rate_per_s: float, elapsed_s: float) -> float:
    """The largest count a machine of ideal `rate_per_s` can add in `elapsed_s` (raw units)."""
    span = max(elapsed_s, 0.0) * PLAUSIBLE_MARGIN + PLAUSIBLE_SLACK_S
    return rate_per_s * span + PLAUSIBLE_SLACK


def counter_step(
    previous: float | None, current: float, bits: int | None, limit: float | None = None
) -> CounterStep:
    """The increase from `previous` to `current` of a counter `bits` wide (None: a float counter
    such as tonnes or kWh, which never wraps).

    - previous None: the first reading, delta 0 (a counter's absolute value is not a count).
    - current >= previous: normal, delta = current - previous.
    - a decrease whose wrapped delta ((current - previous) mod 2**bits) is below
      ROLLOVER_SHARE of the range: rollover, delta = the wrapped delta. Modular arithmetic
      makes this right for signed registers too (Int32 2147483647 -> -2147483648 is +1).
    - any other decrease: reset, delta = current (counted from 0 since the reset), or 0 if
      current is negative.
    - `limit` (plausible_limit: ideal rate x elapsed time, with margin): a decrease whose
      wrapped delta exceeds it is a reset, not a rollover (a uint16 at 60000 -> 30 after a
      reboot is 30 parts, not 5566); any delta still above it is capped to it (`capped`).
    Raises ValueError for a width other than 16/32/64/None or a non-finite value: a bad reading
    must be dropped before it gets here, not counted.
    """
    if bits is not None and bits not in WIDTHS:
        raise ValueError(f"counter width must be 16, 32, 64 or None, got {bits!r}")
    if not math.isfinite(current) or (previous is not None and not math.isfinite(previous)):
        raise ValueError(f"counter values must be finite, got {previous!r} -> {current!r}")
    if previous is None:
        return CounterStep(0.0, "first")
    if current >= previous:
        return _capped(float(current - previous), "normal", limit)
    if bits is not None:
        span = 1 << bits
        # Exact integer arithmetic: a 64-bit counter does not fit a float's 53-bit mantissa.
        wrapped = (round(current) - round(previous)) % span
        if wrapped < span * ROLLOVER_SHARE and (limit is None or wrapped <= limit):
            return CounterStep(float(wrapped), "rollover")
    return _capped(float(max(current, 0.0)), "reset", limit)


def _capped(
    delta: float, kind: Literal["normal", "rollover", "reset", "first"], limit: float | None
) -> CounterStep:
    if limit is not None and delta > limit:
        return CounterStep(limit, kind, capped=True)
    return CounterStep(delta, kind)

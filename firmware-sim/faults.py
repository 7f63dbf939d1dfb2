"""Fault injection for one simulated Modbus unit, switchable while clients are connected.

A unit shows at most one fault at a time. The servers ask `Faults` what to do, per connection
(`refusing()`) and per request (`action()`); the plant reads `frozen` and listens for reboots.

| mode        | effect                                                                    |
|-------------|---------------------------------------------------------------------------|
| `none`      | normal service                                                            |
| `refuse`    | new connections are closed at once (TCP); the unit is silent (RTU)        |
| `drop`      | the connection is closed when a request arrives (RTU: no answer)          |
| `slow`      | the answer is sent `delay` seconds late                                   |
| `exception` | the answer is an exception response with `code` (default 04)              |
| `malformed` | the answer is garbage: wrong protocol id, wrong length or bad function    |
| `truncated` | part of the answer is sent, then nothing more on that connection          |
| `freeze`    | the plant stops updating the unit's values; the server serves as usual    |
| `reboot`    | listeners run (the plant resets counters, servers drop connections), then |
|             | the unit refuses for `down_time` seconds and comes back in mode `none`    |

The request-level modes (drop, slow, exception, malformed, truncated) take a `probability`
(default 1); draws come from a `random.Random` seeded at construction, so a run replays exactly.
Time comes from an injectable monotonic clock, so tests move a reboot's down time by hand.

From configuration: `Faults.from_dict({"mode": "slow", "delay": "200ms", "probability": 0.5})`
or `faults.apply({...})`; unknown modes, unknown keys and bad values raise `FaultError`
naming the problem.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any


class FaultError(ValueError):
    """A fault setting that cannot be used (unknown mode or key, bad value)."""


class FaultMode(StrEnum):
    NONE = "none"
    REFUSE = "refuse"
    DROP = "drop"
    SLOW = "slow"
    EXCEPTION = "exception"
    MALFORMED = "malformed"
    TRUNCATED = "truncated"
    FREEZE = "freeze"
    REBOOT = "reboot"


# Which parameters each mode accepts; `seed` is accepted with any mode.
_PARAMS: dict[FaultMode, frozenset[str]] = {
    FaultMode.NONE: frozenset(),
    FaultMode.REFUSE: frozenset(),
    FaultMode.DROP: frozenset({"probability"}),
    FaultMode.SLOW: frozenset({"delay", "probability"}),
    FaultMode.EXCEPTION: frozenset({"code", "probability"}),
    FaultMode.MALFORMED: frozenset({"probability"}),
    FaultMode.TRUNCATED: frozenset({"probability"}),
    FaultMode.FREEZE: frozenset(),
    FaultMode.REBOOT: frozenset({"down_time"}),
}
# Modes decided per request; the others act on connections or on the plant.
REQUEST_MODES = frozenset(
    {FaultMode.DROP, FaultMode.SLOW, FaultMode.EXCEPTION, FaultMode.MALFORMED, FaultMode.TRUNCATED}
)

DEFAULT_DELAY = 1.0
DEFAULT_DOWN_TIME = 1.0
DEFAULT_EXCEPTION_CODE = 0x04  # server device failure

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|min)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "min": 60.0, None: 1.0}


def parse_duration(value: object, key: str = "duration") -> float:
    """Seconds from a number (seconds) or a string with a unit: "200ms", "1.5s", "2min"."""
    if isinstance(value, bool):
        raise FaultError(f"{key}: expected a duration such as '200ms', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise FaultError(f"{key}: expected a duration such as '200ms', got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise FaultError(f"{key}: must be a non-negative duration, got {value!r}")
    return seconds


def _probability(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"probability: expected a number in 0..1, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise FaultError(f"probability: must be in 0..1, got {value!r}")
    return float(value)


def _code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
        raise FaultError(f"code: expected an exception code 1..255, got {value!r}")
    return value


def _mode(value: object) -> FaultMode:
    if isinstance(value, str) and value in FaultMode.__members__.values():
        return FaultMode(value)
    known = ", ".join(m.value for m in FaultMode)
    raise FaultError(f"mode: unknown fault mode {value!r} (known: {known})")


class Faults:
    """The fault state of one unit; change it at any time with `set`, `clear` or `apply`."""

    def __init__(self, seed: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rng = random.Random(seed)
        self._listeners: list[Callable[[], None]] = []
        self.mode = FaultMode.NONE
        self.delay = DEFAULT_DELAY
        self.probability = 1.0
        self.code = DEFAULT_EXCEPTION_CODE
        self.down_time = DEFAULT_DOWN_TIME
        self.reboots = 0
        self._down_until = -math.inf

    def __repr__(self) -> str:
        return f"Faults(mode={self.mode.value!r}, probability={self.probability})"

    @classmethod
    def from_dict(
        cls, config: Mapping[str, Any], clock: Callable[[], float] = time.monotonic
    ) -> Faults:
        """A new fault state from a config table, e.g. `{"mode": "drop", "seed": 7}`."""
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FaultError(f"seed: expected an integer, got {seed!r}")
        faults = cls(seed=seed, clock=clock)
        faults.apply(config)
        return faults

    def apply(self, config: Mapping[str, Any]) -> None:
        """Set the fault from a config table: `mode` plus that mode's parameters."""
        if "mode" not in config:
            raise FaultError("mode: missing (a fault needs a mode)")
        mode = _mode(config["mode"])
        params = {k: v for k, v in config.items() if k not in ("mode", "seed")}
        if "seed" in config:
            seed = config["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise FaultError(f"seed: expected an integer, got {seed!r}")
            self._rng.seed(seed)
        self.set(mode, **params)

    def set(self, mode: FaultMode | str, **params: Any) -> None:
        """Switch to `mode`; parameters not given take their defaults.

        delay (slow) and down_time (reboot) are durations; probability is 0..1; code is the
        exception code. Setting `reboot` runs the reboot listeners at once.
        """
        mode = _mode(mode)
        unknown = sorted(set(params) - _PARAMS[mode])
        if unknown:
            allowed = ", ".join(sorted(_PARAMS[mode])) or "none"
            raise FaultError(f"{unknown[0]}: not a parameter of mode {mode.value!r} ({allowed})")
        # Validate everything before changing anything, so a bad call leaves the state as it was.
        delay = parse_duration(params.get("delay", DEFAULT_DELAY), "delay")
        down_time = parse_duration(params.get("down_time", DEFAULT_DOWN_TIME), "down_time")
        probability = _probability(params.get("probability", 1.0))
        code = _code(params.get("code", DEFAULT_EXCEPTION_CODE))
        self.mode, self.delay, self.probability = mode, delay, probability
        self.code, self.down_time = code, down_time
        if mode is FaultMode.REBOOT:
            self._reboot()
        else:
            self._down_until = -math.inf

    def clear(self) -> None:
        """Back to normal service (also ends a reboot's down time early)."""
        self.set(FaultMode.NONE)

    def add_reboot_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def remove_reboot_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _reboot(self) -> None:
        self.reboots += 1
        self._down_until = self._clock() + self.down_time
        for listener in list(self._listeners):
            listener()

    def _settle(self) -> None:
        # A reboot ends by itself once the down time has passed.
        if self.mode is FaultMode.REBOOT and self._clock() >= self._down_until:
            self.mode = FaultMode.NONE
            self._down_until = -math.inf

    @property
    def frozen(self) -> bool:
        """True while the unit's values must not change (read by the plant)."""
        return self.mode is FaultMode.FREEZE

    @property
    def down(self) -> bool:
        """True during a reboot's down time."""
        self._settle()
        return self.mode is FaultMode.REBOOT

    def refusing(self) -> bool:
        """True if the unit accepts no connection (or, on a bus, answers nothing) right now."""
        self._settle()
        return self.mode in (FaultMode.REFUSE, FaultMode.REBOOT)

    def action(self) -> FaultMode:
        """The fault to apply to the request at hand: a request-level mode, or NONE.

        Only a request-level mode with a probability below 1 draws from the RNG, so a run
        without probabilistic faults uses no random numbers at all.
        """
        mode = self.mode
        if mode is FaultMode.NONE:
            return mode
        if self.refusing():
            return FaultMode.REFUSE
        if mode not in REQUEST_MODES:
            return FaultMode.NONE
        if self.probability < 1.0 and self._rng.random() >= self.probability:
            return FaultMode.NONE
        return mode

    def choice(self, n: int) -> int:
        """A seeded draw in 0..n-1 (which kind of garbage a malformed answer is)."""
        return self._rng.randrange(n)

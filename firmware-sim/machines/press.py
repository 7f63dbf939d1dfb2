"""Servo stamping press for auto body panels, serving PackML state numbers (standards.md §2.3).

Output is discrete: one part per stroke; each part is rejected with `reject_probability`.
PackML mapping of the ground-truth states, the inverse of the agent's PackML -> category table
(agent/kpi/states.py, docs/kpi.md), so the agent's OEE of this press can match its ground truth:
running -> Execute (6); idle (micro-stops and starved of blanks: the press is available but not
producing) -> Suspended (5); down (breakdowns) -> Held (11) with the reason as alarm code, all
in Production mode; die change -> Stopped (2) in Manual mode; planned breaks -> Idle (4) in
Maintenance mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from firmware_sim.machines.base import (
    SimulatedMachine,
    TimelineSpec,
    Value,
    check_rates,
    shared_causes,
    timeline_spec,
)
from firmware_sim.machines.truth import State
from firmware_sim.profile import load_profile

STOP_REASONS: dict[int, str] = {
    0: "none (running)",
    101: "die jam",
    102: "hydraulic overload",
    103: "feeder fault",
    104: "servo drive fault",
    201: "misfeed",
    202: "starved of blanks",
    203: "double blank",
    301: "die change",
    401: "scheduled break",
}
_BREAKDOWNS = ((101, 0.4), (102, 0.2), (103, 0.3), (104, 0.1))  # reason, share of breakdowns
_MICRO_STOPS = ((201, 0.5), (202, 0.3), (203, 0.2))

# PackML StateCurrent
EXECUTE, HELD, SUSPENDED, STOPPED, IDLE = 6, 11, 5, 2, 4
PRODUCTION, MAINTENANCE, MANUAL = 1, 2, 3

DIES = ("DR-HOOD-01", "DR-DOOR-LH", "DR-DOOR-RH", "DR-ROOF-02")


@dataclass(frozen=True, slots=True)
class PressRates:
    ideal_spm: float = 24.0  # strokes per minute at 100 % speed
    speed_loss: float = 0.08
    reject_probability: float = 0.015  # per part
    mtbf_s: float = 4 * 3600.0  # mean running time between breakdowns
    mttr_s: float = 1200.0
    micro_stop_every_s: float = 600.0  # mean running time between micro-stops
    micro_stop_s: float = 40.0
    changeover_every_s: float = 3 * 3600.0  # running time between die changes
    changeover_s: float = 1200.0
    shift_s: float = 8 * 3600.0
    # (offset from shift start, duration): two 15 min breaks and a 30 min meal
    planned_stops: tuple[tuple[float, float], ...] = ((7200.0, 900.0), (14400.0, 1800.0),
                                                      (21600.0, 900.0))  # fmt: skip
    nominal_tonnage: float = 800.0

    def __post_init__(self) -> None:
        check_rates(self)

    def spec(self) -> TimelineSpec:
        causes = shared_causes("down", self.mtbf_s, self.mttr_s, _BREAKDOWNS)
        causes += shared_causes("idle", self.micro_stop_every_s, self.micro_stop_s, _MICRO_STOPS)
        return timeline_spec(
            self,
            ideal_rate=self.ideal_spm / 60.0,
            discrete=True,
            period_s=self.shift_s,
            causes=causes,
        )


class Press(SimulatedMachine):
    kind = "press"
    unit = "parts"
    ambient_c = 22.0
    thermal_tau_s = 1500.0

    def __init__(self, name: str, seed: int, rates: PressRates | None = None) -> None:
        self.rates = rates or PressRates()
        super().__init__(name, seed, self.rates.spec(), load_profile("press"))

    def temp_target(self, state: State) -> float:
        # Forming heats the die; it cools towards the hall temperature when the press stops.
        return 58.0 if state == "running" else self.ambient_c

    def values(self) -> Mapping[str, Value]:
        iv = self.segment.iv
        c = self.counters()
        running = iv.state == "running"
        state, mode = _packml(iv.state)
        parts = int(c.units)
        # Peak force varies stroke to stroke: a pure function of the part number.
        jitter = ((parts * 2654435761) % 1000) / 1000.0 - 0.5
        progress = iv.phase + (self.now - iv.start) * iv.rate
        return {
            "state": state,
            "unit_mode": mode,
            "strokes_per_min": iv.rate * 60.0 if running else 0.0,
            "part_count": int(self.wrap("part_count", c.units)),
            "good_count": int(self.wrap("good_count", c.units - c.rejects)),
            "reject_count": int(self.wrap("reject_count", c.rejects)),
            "die_temp": round(self.temperature() + 0.3 * self.ripple(97.0), 1),
            "tonnage": self.rates.nominal_tonnage * (1.0 + 0.03 * jitter) if parts else 0.0,
            "alarm_code": iv.reason if iv.state == "down" else 0,
            "stop_reason": iv.reason,
            "guard_closed": iv.state not in ("down", "setup"),
            "die_id": DIES[self.segment.changeovers % len(DIES)],
            "running": running,
            "part_present": running and progress - math.floor(progress) < 0.5,
        }


def _packml(state: State) -> tuple[int, int]:
    """(StateCurrent, UnitModeCurrent) for a ground-truth state. The stop reason is served on its
    own tag: the state and mode alone carry the category."""
    if state == "running":
        return EXECUTE, PRODUCTION
    if state == "idle":
        return SUSPENDED, PRODUCTION
    if state == "down":
        return HELD, PRODUCTION
    if state == "setup":
        return STOPPED, MANUAL
    return IDLE, MAINTENANCE

"""Cement ball mill (finish grinding) with a dynamic separator and a main-drive energy meter.

Output is continuous: tonnes at the feed rate while running. A ball mill draws most of its power
lifting the charge, feed or no feed, so the drive stays near its no-load power when the feed
stops (micro-stops, grade changes): lost output costs energy, which is what kWh per good tonne
shows. The energy meter integrates the drive power exactly over time. Quality: a running stretch
is off spec as a whole (the lab sample failed; the cement goes to the reject silo) with
`reject_probability`. The planned stop is the daily peak-tariff stop common in cement grinding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firmware_sim.machines.base import (
    STATE_CODES,
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
    101: "main drive trip",
    102: "bucket elevator trip",
    103: "bag filter fault",
    104: "separator fault",
    201: "clinker hopper bridging",
    202: "feeder belt slip",
    301: "grade change",
    401: "peak-tariff stop",
}
_BREAKDOWNS = ((101, 0.25), (102, 0.35), (103, 0.2), (104, 0.2))
_MICRO_STOPS = ((201, 0.6), (202, 0.4))

GRADES = ("P.O 42.5", "P.C 42.5R", "P.O 52.5")


@dataclass(frozen=True, slots=True)
class MillRates:
    ideal_tph: float = 160.0  # tonnes per hour at 100 % feed
    speed_loss: float = 0.10
    reject_probability: float = 0.03  # per running stretch (off-spec batch)
    mtbf_s: float = 24 * 3600.0
    mttr_s: float = 9000.0
    micro_stop_every_s: float = 2700.0  # feed interruptions
    micro_stop_s: float = 180.0
    changeover_every_s: float = 12 * 3600.0
    changeover_s: float = 2400.0
    day_s: float = 86400.0
    # (offset from midnight, duration): 18:00-20:00 peak electricity tariff
    planned_stops: tuple[tuple[float, float], ...] = ((64800.0, 7200.0),)
    no_load_kw: float = 3100.0
    kw_per_tph: float = 2.8

    def __post_init__(self) -> None:
        check_rates(self)

    def spec(self) -> TimelineSpec:
        causes = shared_causes("down", self.mtbf_s, self.mttr_s, _BREAKDOWNS)
        causes += shared_causes("idle", self.micro_stop_every_s, self.micro_stop_s, _MICRO_STOPS)
        return timeline_spec(
            self,
            ideal_rate=self.ideal_tph / 3600.0,
            discrete=False,
            period_s=self.day_s,
            causes=causes,
        )


class Mill(SimulatedMachine):
    kind = "mill"
    unit = "t"
    ambient_c = 30.0
    thermal_tau_s = 1800.0

    def __init__(self, name: str, seed: int, rates: MillRates | None = None) -> None:
        self.rates = rates or MillRates()
        super().__init__(name, seed, self.rates.spec(), load_profile("mill"))

    def power_kw(self, state: State, rate: float) -> float:
        if state == "running":
            return self.rates.no_load_kw + self.rates.kw_per_tph * rate * 3600.0
        if state in ("idle", "setup"):
            return self.rates.no_load_kw
        return 0.0

    def temp_target(self, state: State) -> float:
        # Without feed to absorb the grinding heat the outlet runs hotter.
        if state == "running":
            return 105.0
        if state in ("idle", "setup"):
            return 115.0
        return self.ambient_c

    def values(self) -> Mapping[str, Value]:
        iv = self.segment.iv
        c = self.counters()
        turning = iv.state in ("running", "idle", "setup")
        separator = 0.0
        if turning:
            separator = 920.0 + 8.0 * self.ripple(53.0, 1) if iv.state == "running" else 900.0
        return {
            "state": STATE_CODES[iv.state],
            "stop_reason": iv.reason,
            "feed_rate": iv.rate * 3600.0,
            "motor_power": iv.power_kw * (1.0 + 0.004 * self.ripple(11.0)),
            "energy_kwh": c.energy_kwh,
            "produced_t": self.wrap("produced_t", c.units),
            "offspec_t": self.wrap("offspec_t", c.rejects),
            "separator_speed": round(separator, 1),
            "outlet_temp": round(self.temperature() + 0.5 * self.ripple(127.0, 2), 1),
            "cement_grade": GRADES[self.segment.changeovers % len(GRADES)],
            "running": turning,
            "feed_on": iv.state == "running",
        }

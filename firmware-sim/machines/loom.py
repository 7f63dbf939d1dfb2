"""Air-jet weaving loom.

The produced quantity is picks (weft insertions); metres woven follow from the pick density.
Warp and weft breaks trip the stop motions and stop the loom until the weaver repairs them
(ground-truth state "down", each with its own rate and repair time); false stops of the stop
motion are micro-stops; doffing the cloth roll is the changeover. Quality: each pick lies in a
faulty stretch of cloth with `reject_probability`. Weaving runs round the clock, so there are
no planned stops unless configured.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

from firmware_sim.machines.base import (
    STATE_CODES,
    SimulatedMachine,
    StopCause,
    TimelineSpec,
    Value,
    check_rates,
    timeline_spec,
)
from firmware_sim.profile import load_profile

WARP_BREAK, WEFT_BREAK = 101, 102
STOP_REASONS: dict[int, str] = {
    0: "none (running)",
    WARP_BREAK: "warp break",
    WEFT_BREAK: "weft break",
    103: "mechanical fault",
    201: "false stop",
    301: "cloth roll doffing",
    401: "planned stop",
}


@dataclass(frozen=True, slots=True)
class LoomRates:
    ideal_ppm: float = 800.0  # picks per minute at 100 % speed
    speed_loss: float = 0.05
    reject_probability: float = 0.004  # per pick
    warp_break_every_s: float = 3 * 3600.0
    warp_repair_s: float = 420.0
    weft_break_every_s: float = 3600.0
    weft_repair_s: float = 90.0
    mtbf_s: float = 48 * 3600.0  # mechanical and electrical faults
    mttr_s: float = 5400.0
    micro_stop_every_s: float = 900.0
    micro_stop_s: float = 20.0
    changeover_every_s: float = 6 * 3600.0
    changeover_s: float = 900.0
    pick_density_per_cm: float = 28.0
    shift_s: float = 8 * 3600.0
    planned_stops: tuple[tuple[float, float], ...] = ()
    article: str = "DNM-1208"

    def __post_init__(self) -> None:
        check_rates(self)
        if not self.pick_density_per_cm > 0:
            raise ValueError("pick_density_per_cm must be > 0")

    def spec(self) -> TimelineSpec:
        causes = [
            StopCause(WARP_BREAK, "down", self.warp_break_every_s, self.warp_repair_s),
            StopCause(WEFT_BREAK, "down", self.weft_break_every_s, self.weft_repair_s),
            StopCause(103, "down", self.mtbf_s, self.mttr_s),
            StopCause(201, "idle", self.micro_stop_every_s, self.micro_stop_s),
        ]
        return timeline_spec(
            self,
            ideal_rate=self.ideal_ppm / 60.0,
            discrete=True,
            period_s=self.shift_s,
            causes=causes,
        )


class Loom(SimulatedMachine):
    kind = "loom"
    unit = "picks"

    def __init__(self, name: str, seed: int, rates: LoomRates | None = None) -> None:
        self.rates = rates or LoomRates()
        super().__init__(name, seed, self.rates.spec(), load_profile("loom"))

    @property
    def picks_per_metre(self) -> float:
        return self.rates.pick_density_per_cm * 100.0

    def values(self) -> Mapping[str, Value]:
        iv = self.segment.iv
        c = self.counters()
        running = iv.state == "running"
        down = iv.state == "down"
        done = iv.produced_by(self.now)
        return {
            "state": STATE_CODES[iv.state],
            "picks_per_min": round(iv.rate * 60.0),
            "metres_woven": self.wrap("metres_woven", c.units / self.picks_per_metre),
            "pick_count": int(self.wrap("pick_count", c.units)),
            "faulty_picks": int(self.wrap("faulty_picks", c.rejects)),
            "warp_breaks": int(self.wrap("warp_breaks", c.stops.get(WARP_BREAK, 0))),
            "weft_breaks": int(self.wrap("weft_breaks", c.stops.get(WEFT_BREAK, 0))),
            "stop_reason": iv.reason,
            "warp_stop": down and iv.reason == WARP_BREAK,
            "weft_stop": down and iv.reason == WEFT_BREAK,
            # Running draws air down from the 6 bar ring main.
            "air_pressure": 5.2 + 0.08 * self.ripple(7.0) if running else 6.0,
            "article": self.rates.article,
            # The let-off holds the warp under slightly lower tension while the loom stands.
            "warp_tension": round(3.2 + 0.05 * self.ripple(0.75, 1), 2) if running else 2.8,
            "running": running,
            "defect_flag": done > 0 and _contains(iv.reject_units, int(done)),
        }


def _contains(sorted_units: tuple[int, ...], k: int) -> bool:
    i = bisect_left(sorted_units, k)
    return i < len(sorted_units) and sorted_units[i] == k

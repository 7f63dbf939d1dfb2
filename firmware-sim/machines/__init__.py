"""Machine models of the simulated plant: a stamping press, a cement mill and a loom.

`make_machine(kind, name, seed, **rates)` builds one; rate keywords override the defaults of the
kind's rates dataclass (`PressRates`, `MillRates`, `LoomRates`).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from firmware_sim.machines.base import STATE_CODES, MachineModel, SimulatedMachine
from firmware_sim.machines.loom import Loom, LoomRates
from firmware_sim.machines.mill import Mill, MillRates
from firmware_sim.machines.press import Press, PressRates
from firmware_sim.machines.truth import GroundTruth, Interval, Oee, Summary

__all__ = [
    "STATE_CODES",
    "GroundTruth",
    "Interval",
    "Loom",
    "LoomRates",
    "MachineModel",
    "Mill",
    "MillRates",
    "Oee",
    "Press",
    "PressRates",
    "SimulatedMachine",
    "Summary",
    "make_machine",
]


def make_machine(kind: str, name: str, seed: int, **rates: Any) -> MachineModel:
    """A machine of `kind` with the default rates, overridden by keyword (unknown: ValueError)."""
    defaults: PressRates | MillRates | LoomRates
    if kind == "press":
        defaults = PressRates()
    elif kind == "mill":
        defaults = MillRates()
    elif kind == "loom":
        defaults = LoomRates()
    else:
        raise ValueError(f"unknown machine kind {kind!r}; known: press, mill, loom")
    known = [f.name for f in fields(defaults)]
    unknown = sorted(set(rates) - set(known))
    if unknown:
        raise ValueError(
            f"unknown {kind} rate {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    try:
        chosen = replace(defaults, **rates)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise ValueError(f"bad {kind} rate: {exc}") from exc
    if isinstance(chosen, PressRates):
        return Press(name, seed, chosen)
    if isinstance(chosen, MillRates):
        return Mill(name, seed, chosen)
    return Loom(name, seed, chosen)

"""The six big losses (Nakajima) and the downtime Pareto of a window (docs/kpi.md, "Losses").

Losses are in seconds of planned time, so they add up across windows and machines like the
components they come from.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.kpi.formulas import Components


def six_big_losses(c: Components) -> dict[str, float]:
    """Seconds lost per Nakajima loss (standards.md §1.5):

    - breakdowns (availability): time "down" (ADET).
    - setup_adjustments (availability): time in "setup" (ASUT).
    - small_stops (the state signal tells us, so measured as stop time): time "idle" (ADOT):
      starved, blocked, waiting, short stops the machine reports.
    - reduced_speed (performance): run time minus net run time (running_s - ideal_s); short
      stops the state signal does not show also land here. 0 when P >= 1.
    - process_defects (quality): net run time spent on parts that were not good,
      ideal_s x (total - good) / total, i.e. (rejects + rework) at the mean ideal cycle time.
    - reduced_yield (startup rejects): 0. Counters do not tell startup rejects from steady-state
      ones, so every reject is a process defect and the quality loss is counted once.
    """
    if not c.units:  # a roll-up of machines: by ideal time, counts do not add
        defects = c.ideal_s - c.good_ideal_s
    else:
        defects = c.ideal_s * (c.total - c.good) / c.total if c.total > 0 else 0.0
    return {
        "breakdowns": c.down_s,
        "setup_adjustments": c.setup_s,
        "small_stops": c.idle_s,
        "reduced_speed": max(0.0, c.running_s - c.ideal_s),
        "process_defects": max(0.0, defects),
        "reduced_yield": 0.0,
    }


def pareto(
    down_by_reason: Mapping[str, float], top: int | None = None
) -> list[tuple[str, float, float]]:
    """(reason, seconds, cumulative share of all the time) by descending seconds, ties by name.

    With `top`, only the first `top` reasons are listed; their shares stay relative to all the
    time, so the last share tells how much the list covers. Reasons with no time are left out.
    """
    if any(s < 0 for s in down_by_reason.values()):
        raise ValueError("downtime per reason must not be negative")
    if top is not None and top < 0:
        raise ValueError(f"top must not be negative, got {top}")
    ranked = sorted(
        ((r, s) for r, s in down_by_reason.items() if s > 0), key=lambda x: (-x[1], x[0])
    )
    total = sum(s for _, s in ranked)
    out: list[tuple[str, float, float]] = []
    running = 0.0
    for reason, seconds in ranked[:top]:
        running += seconds
        out.append((reason, seconds, running / total))
    return out

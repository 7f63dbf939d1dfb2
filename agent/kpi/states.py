"""Machine states to the time categories of the KPI time model (docs/kpi.md, "Time model").

A machine reports its state as a number: either a code from its own table (mapped in config) or
a PackML StateCurrent (+ UnitModeCurrent), numbered as in ISA-TR88.00.02 / OPC 30050 PackTags
(standards.md §2.2, §2.3). Anything we cannot place is "unknown", never guessed: unknown time is
reported and excluded from availability's denominator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

Category = Literal["running", "idle", "down", "setup", "planned_stop", "unknown"]
CATEGORIES: tuple[Category, ...] = ("running", "idle", "down", "setup", "planned_stop", "unknown")


def map_code(code: float, table: Mapping[int, Category]) -> Category:
    """The category of a raw state code; a code missing from the table (or not a whole number,
    e.g. a NaN from a bad reading) is "unknown"."""
    if not math.isfinite(code) or code != int(code):
        return "unknown"
    return table.get(int(code), "unknown")


# PackML StateCurrent (standards.md §2.3), Production unit mode. ISO 22400 element in brackets.
# - Execute and the acting states that lead into or out of it while the machine is producing
#   (Starting, Unholding, Unsuspending, Completing) are run time [APT]: slow running there is a
#   performance loss, as §2.7 says.
# - Suspending / Suspended: waiting for *external* conditions (starved or blocked) [ADOT].
# - Holding / Held: an internal problem being corrected [ADET].
# - Aborting / Aborted / Clearing: §2.7 lists them with the waiting states, but PackML enters
#   Aborting on a machine fault or an emergency stop and Clearing clears those faults, so we
#   count them as failures [ADET]; a planned stop is signalled by the unit mode, not by Abort.
# - Stopping / Stopped / Resetting / Idle / Complete: available, not producing [ADOT].
# - Undefined (0) and the composite parents Running (18) / Cleared (19) say nothing: "unknown".
PACKML_PRODUCTION: dict[int, Category] = {
    1: "down",  # Clearing
    2: "idle",  # Stopped
    3: "running",  # Starting
    4: "idle",  # Idle
    5: "idle",  # Suspended
    6: "running",  # Execute
    7: "idle",  # Stopping
    8: "down",  # Aborting
    9: "down",  # Aborted
    10: "down",  # Holding
    11: "down",  # Held
    12: "running",  # Unholding
    13: "idle",  # Suspending
    14: "running",  # Unsuspending
    15: "idle",  # Resetting
    16: "running",  # Completing
    17: "idle",  # Complete
}

# PackML UnitModeCurrent (standards.md §2.2).
PRODUCTION, MAINTENANCE, MANUAL = 1, 2, 3


def packml_category(state: int, unit_mode: int | None = None) -> Category:
    """The category of a PackML StateCurrent in a UnitModeCurrent (None: Production assumed).

    | unit mode            | state                                             | category     |
    |----------------------|---------------------------------------------------|--------------|
    | Production (1)/None  | Execute, Starting, Unholding, Unsuspending,       | running      |
    |                      | Completing                                        |              |
    | Production (1)/None  | Suspending, Suspended, Stopping, Stopped,         | idle         |
    |                      | Resetting, Idle, Complete                         |              |
    | Production (1)/None  | Holding, Held, Aborting, Aborted, Clearing        | down         |
    | Maintenance (2)      | any known state                                   | planned_stop |
    | Manual (3)           | any known state                                   | setup        |
    | any                  | Undefined (0), Running (18), Cleared (19), other  | unknown      |
    | Invalid (0), 4-31    | any (user-defined modes mean what the plant says) | unknown      |

    Maintenance mode is planned maintenance (PDOT): the machine is taken out of production on
    purpose; Manual mode is setup and adjustment (ASUT), standards.md §2.7. Whether that time
    was planned by the calendar is the calendar's call, not the machine's.
    """
    if state not in PACKML_PRODUCTION:
        return "unknown"
    if unit_mode is None or unit_mode == PRODUCTION:
        return PACKML_PRODUCTION[state]
    if unit_mode == MAINTENANCE:
        return "planned_stop"
    if unit_mode == MANUAL:
        return "setup"
    return "unknown"

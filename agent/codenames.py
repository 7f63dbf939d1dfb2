"""The names of coded values: what `state 6`, `unit_mode 1` and `stop_reason 101` mean.

A machine's `[machines.kpi]` says which tags carry codes and what they mean: `packml = true`
(PackML StateCurrent and UnitModeCurrent, ISA-TR88.00.02 names), `states` (a category per
raw code), `reasons` (stop reasons) and `product_names`. Every reader that shows a value
(`read`, `export`, the page, the MQTT payloads, the report) asks `name(path, value)` here, so
a code is named the same everywhere; a code the config does not name has no name (None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# PackML StateCurrent (standards.md §2.3) and UnitModeCurrent (§2.2), numbered as in OPC 30050.
PACKML_STATES: dict[int, str] = {
    0: "Undefined",
    1: "Clearing",
    2: "Stopped",
    3: "Starting",
    4: "Idle",
    5: "Suspended",
    6: "Execute",
    7: "Stopping",
    8: "Aborting",
    9: "Aborted",
    10: "Holding",
    11: "Held",
    12: "Unholding",
    13: "Suspending",
    14: "Unsuspending",
    15: "Resetting",
    16: "Completing",
    17: "Complete",
}
PACKML_UNIT_MODES: dict[int, str] = {0: "Invalid", 1: "Production", 2: "Maintenance", 3: "Manual"}


def _by_code(table: Mapping[str, str]) -> dict[int, str]:
    return {int(code): name for code, name in table.items()}


class CodeNames:
    """Tag path -> (code -> name), for the tags the config names the codes of."""

    def __init__(self, tables: Mapping[str, Mapping[int, str]] | None = None) -> None:
        self.tables: dict[str, dict[int, str]] = {p: dict(t) for p, t in (tables or {}).items()}

    @classmethod
    def of(cls, config: Any) -> CodeNames:
        """The named codes of every machine's `[machines.kpi]` in `config`."""
        tables: dict[str, dict[int, str]] = {}
        for machine in getattr(config, "machines", ()):
            kpi = machine.kpi
            if kpi is None:
                continue

            def add(tag: str | None, table: Mapping[int, str], machine: str = machine.name) -> None:
                if tag is not None and table:
                    tables.setdefault(config.tag_path(machine, tag), {}).update(table)

            if kpi.packml:
                add(kpi.state, PACKML_STATES)
                add(kpi.unit_mode, PACKML_UNIT_MODES)
            else:
                add(
                    kpi.state,
                    {code: state for state, codes in (kpi.states or {}).items() for code in codes},
                )
            add(kpi.reason, {0: "none", **_by_code(kpi.reasons)} if kpi.reasons else {})
            add(kpi.product, _by_code(kpi.product_names))
        return cls(tables)

    def name(self, path: str, value: float | None) -> str | None:
        """The name of `value` on the tag at `path`; None when it has none."""
        table = self.tables.get(path)
        if table is None or value is None or not math.isfinite(value) or value != int(value):
            return None
        return table.get(int(value))

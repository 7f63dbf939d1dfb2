"""The roll-ups of the KPI engine: a line's, an area's and the site's windows (docs/kpi.md,
"Lines, areas and the site: by ideal time").

A roll-up's window closes once every machine of it has closed that window, and again, revised,
when one of them revises it; its components are the machines' summed (`line_rollup`), never
averaged. Its counts are added only when all its machines count in the one unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.kpi.calendar import Window
from agent.kpi.formulas import Components, line_rollup
from agent.kpi.machine import MachineState, WindowKey, window_key
from agent.kpi.records import Group, Place, RecordKey, window_events
from agent.model import Event


class Rollups:
    """What each machine closed of every roll-up's windows, and the revision each roll-up
    window last emitted."""

    def __init__(self, machines: Sequence[MachineState]) -> None:
        self._machines = machines
        self.groups: dict[Group, list[str]] = {}  # roll-up -> its machines, in config order
        for m in machines:
            for group in m.groups:
                self.groups.setdefault(group, []).append(m.name)
        self._parts: dict[tuple[Group, WindowKey], dict[str, Components]] = {}
        self.revision: dict[tuple[Group, WindowKey], int] = {}
        # The count unit of each roll-up: the one unit all its machines declare, else None.
        self._unit: dict[Group, str | None] = {}
        for group, names in self.groups.items():
            units = {m.unit for m in machines if m.name in names}
            self._unit[group] = units.pop() if len(units) == 1 and "" not in units else None

    def close(self, group: Group, m: MachineState, w: Window, done: Components) -> list[Event]:
        """Machine `m` closed (or revised) window `w`: the roll-up's events once every machine
        of it has closed it, else none."""
        key = (group, window_key(w))
        parts = self._parts.setdefault(key, {})
        parts[m.name] = done
        names = self.groups[group]
        if len(parts) < len(names):
            return []
        revision = self.revision.get(key, -1) + 1
        self.revision[key] = revision
        total = line_rollup(parts[name] for name in names)
        return window_events(w, total, revision, self.place(group, m))

    def place(self, group: Group, m: MachineState) -> Place:
        """Whose record a roll-up's is (its path from machine `m` of it) and its count unit."""
        scope, _ = group
        unit = self._unit[group]
        notes: tuple[str, ...] = ()
        if unit is None:
            units = sorted(
                {o.unit or "undeclared" for o in self._machines if o.name in self.groups[group]}
            )
            notes = (
                "counts not added: the machines count in different or undeclared units"
                f" ({', '.join(units)})",
            )
        return Place(
            scope,
            None,
            m.line if scope == "line" else None,
            m.area if scope in ("line", "area") else None,
            m.site,
            unit,
            notes,
        )

    def forget(self, m: MachineState, key: WindowKey) -> None:
        """A window of machine `m` left the retained time: its roll-ups keep nothing of it."""
        for group in m.groups:
            self._parts.pop((group, key), None)
            self.revision.pop((group, key), None)

    def adopt_revisions(self, held: Mapping[RecordKey, int]) -> None:
        """Number revisions on from the stored ones (`KpiEngine.adopt_revisions`)."""
        for ((scope, who), key), revision in self.revision.items():
            stored = held.get((scope, who, *key))
            if stored is not None and stored > revision:
                self.revision[((scope, who), key)] = stored

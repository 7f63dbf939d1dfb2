"""The checks across entries of one config, once each entry is valid on its own: unique names,
machines and tags that exist where they are named, KPI tags, alarms and inspections.

Each check yields (WHERE, MESSAGE) pairs for the loader to report; none raises. Names declared in
the raw file count as declared, so an entry with a problem of its own is not also reported as
unknown wherever it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agent.config.fields import Loc
from agent.config.protocols import SourceModel
from agent.config.sections import AlarmSection, Machine
from agent.kpi.config import problems as kpi_problems
from agent.source import WritesToPlc

if TYPE_CHECKING:
    from vision.config import InspectionConfig

Found = Iterator[tuple[str, str]]  # (WHERE, MESSAGE) of each problem


def _declared(doc: dict[str, Any], key: str) -> list[Any]:
    raw = doc.get(key)
    return [e for e in (raw if isinstance(raw, list) else []) if isinstance(e, dict)]


def _tags(sources: list[tuple[int, BaseModel]]) -> set[tuple[str, str]]:
    """(machine, tag) of every tag of the valid sources."""
    return {
        (machine, tag)
        for _, source in sources
        if isinstance(source, SourceModel)
        for _, machine, tag in source.tag_places()
    }


def names_and_machines(
    doc: dict[str, Any],
    machines: list[tuple[int, Machine]],
    sources: list[tuple[int, BaseModel]],
    sinks: list[tuple[int, BaseModel]],
    where: Callable[[Loc], str],
) -> Found:
    """Unique machine, source and sink names; sources name declared machines; one tag name per
    machine across its sources."""
    for key, valid in (("machines", machines), ("sources", sources), ("sinks", sinks)):
        first: dict[str, int] = {}
        for i, item in valid:
            name = str(getattr(item, "name", ""))
            if name in first:
                yield (
                    f"{key}[{i}].name",
                    f"duplicate {key[:-1]} name {name!r} (also {key}[{first[name]}])",
                )
            else:
                first[name] = i
    declared = [m["name"] for m in _declared(doc, "machines") if isinstance(m.get("name"), str)]
    tag_seen: dict[tuple[str, str], str] = {}
    for i, source in sources:
        assert isinstance(source, SourceModel)
        for loc, machine in source.machine_refs():
            if machine not in declared:
                known = ", ".join(dict.fromkeys(declared)) or "none"
                yield (
                    where(("sources", i, *loc)),
                    f"unknown machine {machine!r} (declared in [[machines]]: {known})",
                )
        for loc, machine, tag in source.tag_places():
            at = where(("sources", i, *loc))
            if (machine, tag) in tag_seen:
                yield (
                    at,
                    f"duplicate tag name {tag!r} for machine {machine!r} "
                    f"(also at {tag_seen[machine, tag]})",
                )
            else:
                tag_seen[machine, tag] = at


def kpi_tags(
    machines: list[tuple[int, Machine]], sources: list[tuple[int, BaseModel]], heartbeat_s: float
) -> Found:
    """The tags a `[machines.kpi]` section names exist on its machine and are numeric."""
    for i, machine in machines:
        if machine.kpi is None:
            continue
        tags = {
            t.name: t
            for _, source in sources
            if isinstance(source, SourceModel)
            for t in source.tags_of(machine.name)
        }
        for key, message in kpi_problems(machine.kpi, tags, heartbeat_s):
            yield f"machines[{i}].kpi.{key}", message


def kpi_inspections(doc: dict[str, Any], machines: list[tuple[int, Machine]]) -> Found:
    """`[machines.kpi] inspection` names an `[[inspections]]` entry of the same machine."""
    owner = {
        e["name"]: e.get("machine")
        for e in _declared(doc, "inspections")
        if isinstance(e.get("name"), str)
    }
    for i, machine in machines:
        name = machine.kpi.inspection if machine.kpi is not None else None
        if name is None:
            continue
        where = f"machines[{i}].kpi.inspection"
        if name not in owner:
            known = ", ".join(owner) or "none"
            yield where, f"no [[inspections]] entry {name!r} (the entries: {known})"
        elif owner[name] != machine.name:
            yield (
                where,
                f"inspection {name!r} inspects machine {owner[name]!r}, not {machine.name!r}",
            )


def alarms(
    valid: list[tuple[int, AlarmSection]],
    machines: list[tuple[int, Machine]],
    sources: list[tuple[int, BaseModel]],
) -> Found:
    """The `[[alarms]]` entries: unique names, each on a tag its machine has."""
    kpis = {m.name: m.kpi for _, m in machines if m.kpi is not None}
    tags = _tags(sources)
    first: dict[str, int] = {}
    for i, alarm in valid:
        if alarm.name in first:
            yield (
                f"alarms[{i}].name",
                f"duplicate alarm name {alarm.name!r} (also alarms[{first[alarm.name]}])",
            )
        first.setdefault(alarm.name, i)
        if alarm.state is not None:
            kpi = kpis.get(alarm.machine)
            if kpi is None:
                yield (
                    f"alarms[{i}].state",
                    f"machine {alarm.machine!r} has no [machines.kpi] state tag to watch",
                )
            elif kpi.packml and alarm.state in ("setup", "planned_stop"):
                yield (
                    f"alarms[{i}].state",
                    f"a PackML machine is in {alarm.state} by its unit mode: watch the "
                    f"{kpi.unit_mode or 'unit mode'} tag with equals instead",
                )
            continue
        if (alarm.machine, alarm.tag) not in tags:
            known = sorted(t for m, t in tags if m == alarm.machine)
            hint = f" (its tags: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})"
            yield (
                f"alarms[{i}].tag",
                f"machine {alarm.machine!r} has no tag {alarm.tag!r}" + (hint if known else ""),
            )


def inspections(
    doc: dict[str, Any],
    valid: list[tuple[int, InspectionConfig]],
    sources: list[tuple[int, BaseModel]],
    allow: list[str],
) -> Found:
    """The `[[inspections]]` entries: unique names, a declared machine, a trigger tag it has,
    and a write-back to a source that writes, on the `write_allow` list."""
    tags = _tags(sources)
    declared = {m.get("name") for m in _declared(doc, "machines")}
    names: dict[str, int] = {}
    for i, inspection in valid:
        if inspection.name in names:
            first = names[inspection.name]
            yield (
                f"inspections[{i}].name",
                f"duplicate inspection name {inspection.name!r} (also inspections[{first}])",
            )
        names.setdefault(inspection.name, i)
        if inspection.machine not in declared:
            yield f"inspections[{i}].machine", f"unknown machine {inspection.machine!r}"
            continue
        trigger = inspection.trigger
        if trigger.type == "tag" and (inspection.machine, trigger.tag) not in tags:
            yield (
                f"inspections[{i}].trigger.tag",
                f"machine {inspection.machine!r} has no tag {trigger.tag!r}",
            )
        if inspection.write_back is not None:
            served = any(
                isinstance(source, WritesToPlc)
                and source.write_target(inspection.machine) is not None
                for _, source in sources
            )
            if not served:
                yield (
                    f"inspections[{i}].write_back",
                    f"machine {inspection.machine!r} has no modbus_tcp source to write to",
                )
            target = f"{inspection.machine}:{inspection.write_back.address}"
            if target not in allow:
                yield (
                    f"inspections[{i}].write_back.address",
                    f"{target} is not on the write_allow list (add it there to allow writes)",
                )

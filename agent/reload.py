"""A config reload (SIGHUP): what changed between the running config and the file, and the config
the agent runs with afterwards.

Pure functions; the agent applies the result (`Agent.reload`). A reload changes sources, sinks
and their tags and `[[alarms]]`, and adds machines. Everything else is fixed for a run: a
change there is named ("needs a restart: store.max_size") and the running value kept, so the
rest still applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agent.config.sections import Config, Machine
from agent.tags import Register, Tag, TagTable, config_tags

# Sections a running agent cannot change: the store and its bounds are open, the page is bound,
# the KPI engine's windows and the tag paths (plant, machines) are built, vision is loaded.
FIXED_SECTIONS = (
    "config_version",
    "agent",
    "plant",
    "calendar",
    "store",
    "forward",
    "inspections",
    "web",
    "log",
    "write_allow",
)


@dataclass(frozen=True)
class ConfigChange:
    """The difference between two configs, by source and sink name and model equality."""

    sources_added: tuple[str, ...] = ()
    sources_removed: tuple[str, ...] = ()
    sources_changed: tuple[str, ...] = ()
    sinks_added: tuple[str, ...] = ()
    sinks_removed: tuple[str, ...] = ()
    sinks_changed: tuple[str, ...] = ()
    machines_added: tuple[str, ...] = ()
    alarms_added: tuple[str, ...] = ()
    alarms_removed: tuple[str, ...] = ()
    alarms_changed: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()  # dotted keys whose running value is kept

    @property
    def empty(self) -> bool:
        return not (
            self.sources_added
            or self.sources_removed
            or self.sources_changed
            or self.sinks_added
            or self.sinks_removed
            or self.sinks_changed
            or self.machines_added
            or self.alarms_added
            or self.alarms_removed
            or self.alarms_changed
        )


def _by_name(old: dict[str, Any], new: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    added = tuple(n for n in new if n not in old)
    removed = tuple(n for n in old if n not in new)
    changed = tuple(n for n in new if n in old and new[n] != old[n])
    return added, removed, changed


def _fixed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys of the fixed sections that differ (a section's fields, one level deep)."""
    keys = []
    for section in FIXED_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        fields = getattr(type(before), "model_fields", None)
        if fields is None or type(before) is not type(after):
            keys.append(section)
            continue
        keys += [f"{section}.{k}" for k in fields if getattr(before, k) != getattr(after, k)]
    return keys


def difference(old: Config, new: Config) -> ConfigChange:
    s_added, s_removed, s_changed = _by_name(old.sources_by_name, new.sources_by_name)
    k_added, k_removed, k_changed = _by_name(old.sinks_by_name, new.sinks_by_name)
    m_added, m_removed, m_changed = _by_name(old.machines_by_name, new.machines_by_name)
    a_added, a_removed, a_changed = _by_name(
        {a.name: a for a in old.alarms}, {a.name: a for a in new.alarms}
    )
    restart = _fixed_keys(old, new)
    restart += [f"machines.{m}" for m in (*m_removed, *m_changed)]
    restart += [f"machines.{m}.kpi" for m in m_added if new.machines_by_name[m].kpi is not None]
    return ConfigChange(
        sources_added=s_added,
        sources_removed=s_removed,
        sources_changed=s_changed,
        sinks_added=k_added,
        sinks_removed=k_removed,
        sinks_changed=k_changed,
        machines_added=m_added,
        alarms_added=a_added,
        alarms_removed=a_removed,
        alarms_changed=a_changed,
        needs_restart=tuple(restart),
    )


def effective(old: Config, new: Config, change: ConfigChange) -> Config:
    """The config the agent runs with after the reload: the new sources and sinks; the running
    fixed sections and machines, plus the machines added (without KPIs until a restart: the
    KPI engine's windows are built at start-up)."""
    added = new.machines_by_name
    machines: tuple[Machine, ...] = old.machines + tuple(
        added[m].model_copy(update={"kpi": None}) for m in change.machines_added
    )
    kept = {section: getattr(old, section) for section in FIXED_SECTIONS}
    return new.model_copy(update={**kept, "machines": machines, "file": old.file})


def merged_tags(
    running: TagTable, config: Config, register: Register | None = None
) -> tuple[TagTable, int]:
    """The tag table after the reload, and how many tags it added.

    Every running tag keeps its id, so the sources that do not change keep polling with the ids
    they were built with; a tag the config still has takes its new settings (unit, deadband,
    source); one it no longer has keeps its id with no source (nothing polls it) until a
    restart; new tags get the ids `register` gives them (`Store.register_tags`: the store's
    ids; without it the next ids after the running table's)."""
    fresh = {(t.machine, t.name): t for t in config_tags(config)}
    tags: list[Tag] = []
    for tag in running:
        now = fresh.pop((tag.machine, tag.name), None)
        tags.append(replace(tag, source="") if now is None else replace(now, id=tag.id))
    new = list(fresh.values())
    if register is None:
        ids = {t.path: running.size + i for i, t in enumerate(new)}
    else:
        ids = dict(register(new))
    added = [replace(t, id=ids[t.path]) for t in new]
    return TagTable([*tags, *added]), len(added)


Names = Sequence[str]


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def summary(change: ConfigChange, tags_added: int) -> str:
    """One line: "reload: +1 source, -0, ~1 changed; sinks unchanged; 3 tags added"."""

    def part(added: Names, removed: Names, changed: Names, what: str) -> str:
        if not (added or removed or changed):
            return f"{what}s unchanged"
        return f"+{_count(len(added), what)}, -{len(removed)}, ~{len(changed)} changed"

    parts = [
        part(change.sources_added, change.sources_removed, change.sources_changed, "source"),
        part(change.sinks_added, change.sinks_removed, change.sinks_changed, "sink"),
        f"{_count(tags_added, 'tag')} added",
    ]
    if change.machines_added:
        parts.append(f"{_count(len(change.machines_added), 'machine')} added")
    if change.alarms_added or change.alarms_removed or change.alarms_changed:
        parts.append(
            part(change.alarms_added, change.alarms_removed, change.alarms_changed, "alarm")
        )
    return "reload: " + "; ".join(parts)


def audit_data(change: ConfigChange, tags_added: int, line: str) -> dict[str, Any]:
    """The data of the reload's audit event (stored and forwarded like every event)."""
    return {
        "action": "config reload",
        "summary": line,
        "sources": {
            "added": list(change.sources_added),
            "removed": list(change.sources_removed),
            "changed": list(change.sources_changed),
        },
        "sinks": {
            "added": list(change.sinks_added),
            "removed": list(change.sinks_removed),
            "changed": list(change.sinks_changed),
        },
        "alarms": {
            "added": list(change.alarms_added),
            "removed": list(change.alarms_removed),
            "changed": list(change.alarms_changed),
        },
        "tags_added": tags_added,
        "needs_restart": list(change.needs_restart),
    }

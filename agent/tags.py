"""The agent's tags: one frozen `Tag` record per tag, and the table of this run's tags.

A `Tag` is built once, when the agent registers its config's tags with the store
(`Agent.__init__`): its `id` is the store's id for the tag's path, stable across restarts and
config edits, and the one id a `ReadingBatch` carries everywhere (sources, the pipeline, the
store, the KPI engine, the sinks). The store, the sinks, the KPI engine and the page all read
the same record; the store makes a `Tag` of its own only for a path this config no longer has
(records of it may still wait to be sent).

Ids index the per-tag numpy arrays of the hot path (deadband state, the latest values), so
the loop never looks a tag up by name; arrays are `TagTable.size` long (the largest id + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from agent.model import DataType

if TYPE_CHECKING:
    from agent.config.sections import Config

# `Store.register_tags`: the tags in, the store's id of each path out.
Register = Callable[[Sequence["Tag"]], Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag: its id, its identity `site/area/line/machine/name` (`path`, with the levels
    apart), where it is read from and what the config declares of it."""

    id: int = -1  # the store's id; -1 until the tag is registered
    path: str = ""  # site/area/line/machine/tag
    machine: str = ""
    name: str = ""
    source: str = ""
    unit: str = ""
    deadband_abs: float = 0.0  # report when the value moved by more than this (0: any change)
    deadband_pct: float = 0.0  # ... or by more than this percent of the last reported value
    type: DataType = "float64"  # as declared; values travel as float64 whatever it is
    scale: float = 1.0  # as declared (the KPI engine reads counters in raw units)
    site: str = ""
    area: str = ""
    line: str = ""

    @classmethod
    def from_path(cls, path: str, *, id: int = -1, unit: str = "", source: str = "") -> Tag:
        """A tag known only by its path (the store's tags of an earlier config)."""
        site, area, line, machine, name = path.split("/", 4)
        return cls(id, path, machine, name, source, unit, site=site, area=area, line=line)


def config_tags(config: Config) -> list[Tag]:
    """The config's tags in its order (sources, their machines, their tags), not registered."""
    tags: list[Tag] = []
    site = config.plant.site
    for source in config.sources:
        for machine in source.machines():
            place = config.machines_by_name[machine]
            for tag in source.tags_of(machine):
                band = tag.deadband
                tags.append(
                    Tag(
                        path=config.tag_path(machine, tag.name),
                        machine=machine,
                        name=tag.name,
                        source=source.name,
                        unit=tag.unit,
                        type=tag.type or "float64",
                        scale=tag.scale,
                        deadband_abs=band.amount if band and not band.relative else 0.0,
                        deadband_pct=band.amount if band and band.relative else 0.0,
                        site=site,
                        area=place.area,
                        line=place.line,
                    )
                )
    return tags


class TagTable:
    """Tag ids ↔ tags, and the per-tag arrays the pipeline needs."""

    def __init__(self, tags: Sequence[Tag]) -> None:
        self.tags = tuple(tags)
        self._by_id = {t.id: t for t in self.tags}
        if len(self._by_id) != len(self.tags) or any(t.id < 0 for t in self.tags):
            raise ValueError("every tag needs an id of its own (0 or more)")
        # Machine, then name: a (machine, name) tuple key per tag cost 1 MB at 20,000 tags.
        self._ids: dict[str, dict[str, int]] = {}
        for t in self.tags:
            self._ids.setdefault(t.machine, {})[t.name] = t.id
        if sum(map(len, self._ids.values())) != len(self.tags):
            raise ValueError("two tags share a machine and a name")
        self.size = max(self._by_id, default=-1) + 1  # the length of per-tag arrays

    @classmethod
    def from_config(cls, config: Config) -> TagTable:
        """The config's tags with ids 0..n-1 in its order (`plan`, `read`: no store)."""
        tags = config_tags(config)
        return cls.registered(tags, lambda ts: {t.path: i for i, t in enumerate(ts)})

    @classmethod
    def registered(cls, tags: Sequence[Tag], register: Register) -> TagTable:
        """The table of `tags` with the ids `register` (`Store.register_tags`) gives them."""
        ids = register(tags)
        return cls([replace(t, id=ids[t.path]) for t in tags])

    def __len__(self) -> int:
        return len(self.tags)

    def __iter__(self) -> Iterator[Tag]:
        return iter(self.tags)

    def by_id(self, tag_id: int) -> Tag:
        return self._by_id[tag_id]

    def id_of(self, machine: str, name: str) -> int:
        try:
            return self._ids[machine][name]
        except KeyError:
            raise KeyError(f"no tag {name!r} on machine {machine!r}") from None

    def of_source(self, source: str) -> tuple[Tag, ...]:
        return tuple(t for t in self.tags if t.source == source)

    def deadbands(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(absolute, percent) deadband per tag id, for the report-by-exception filter."""
        absolute = np.zeros(self.size, dtype=np.float64)
        percent = np.zeros(self.size, dtype=np.float64)
        at = np.array([t.id for t in self.tags], dtype=np.intp)
        absolute[at] = [t.deadband_abs for t in self.tags]
        percent[at] = [t.deadband_pct for t in self.tags]
        return absolute, percent

"""The agent's tag table: every configured tag gets a small integer id at start-up.

Ids index the per-tag numpy arrays of the hot path (`ReadingBatch.tag_ids`, deadband state),
so the loop never looks a tag up by name. The order is the config's order (sources, their
machines, their tags), so the same config always gives the same ids; the store maps ids to
ISA-95 paths (`site/area/line/machine/tag`) and keeps them stable across restarts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.config import Config
from agent.model import DataType


@dataclass(frozen=True, slots=True)
class TagInfo:
    id: int
    path: str  # site/area/line/machine/tag
    machine: str
    name: str
    source: str
    unit: str
    deadband_abs: float  # report when the value moved by more than this (0: any change)
    deadband_pct: float  # ... or by more than this percent of the last reported value
    type: DataType = "float64"  # as declared; values travel as float64 whatever it is


class TagTable:
    """Tag ids ↔ tags, and the per-tag arrays the pipeline needs."""

    def __init__(self, tags: Sequence[TagInfo]) -> None:
        for i, tag in enumerate(tags):
            if tag.id != i:
                raise ValueError(f"tag ids must be 0..n-1 in order; {tag.path} has id {tag.id}")
        self.tags = tuple(tags)
        self._ids = {(t.machine, t.name): t.id for t in self.tags}
        if len(self._ids) != len(self.tags):
            raise ValueError("two tags share a machine and a name")

    @classmethod
    def from_config(cls, config: Config) -> TagTable:
        tags: list[TagInfo] = []
        for source in config.sources:
            for machine in source.machines():
                for tag in source.tags_of(machine):
                    band = tag.deadband
                    tags.append(
                        TagInfo(
                            id=len(tags),
                            path=config.tag_path(machine, tag.name),
                            machine=machine,
                            name=tag.name,
                            source=source.name,
                            unit=tag.unit,
                            type=getattr(tag, "type", None) or "float64",
                            deadband_abs=band.amount if band and not band.relative else 0.0,
                            deadband_pct=band.amount if band and band.relative else 0.0,
                        )
                    )
        return cls(tags)

    def __len__(self) -> int:
        return len(self.tags)

    def __iter__(self) -> Iterator[TagInfo]:
        return iter(self.tags)

    def id_of(self, machine: str, name: str) -> int:
        try:
            return self._ids[(machine, name)]
        except KeyError:
            raise KeyError(f"no tag {name!r} on machine {machine!r}") from None

    def of_source(self, source: str) -> tuple[TagInfo, ...]:
        return tuple(t for t in self.tags if t.source == source)

    def deadbands(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(absolute, percent) deadband per tag id, for the report-by-exception filter."""
        absolute = np.array([t.deadband_abs for t in self.tags], dtype=np.float64)
        percent = np.array([t.deadband_pct for t in self.tags], dtype=np.float64)
        return absolute, percent

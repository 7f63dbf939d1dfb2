"""What the agent needs of any source, sink, tag and inspection entry, whatever its protocol.

Source and sink entries are dispatched on their `type` through `agent.registry` (one `type` → one
config model in connectors/*/config.py); these protocols are what every such model offers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from agent.config.fields import Deadband, Loc
from agent.model import DataType


@runtime_checkable
class TagModel(Protocol):
    """What the agent needs to know of any tag, whatever its protocol."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def deadband(self) -> Deadband | None: ...
    @property
    def type(self) -> DataType | None:
        """The declared data type; None: the protocol tells at run time (float64 for the KPI
        checks)."""
        ...

    @property
    def scale(self) -> float: ...


@runtime_checkable
class SourceModel(Protocol):
    """What every source config model offers the agent (see connectors/*/config.py)."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    def unit_ids(self) -> tuple[int, ...]: ...
    def machines(self) -> tuple[str, ...]: ...
    def tags_of(self, machine: str) -> tuple[TagModel, ...]: ...
    def poll_intervals(self) -> tuple[float, ...]: ...
    def poll_groups(self) -> tuple[tuple[float, int], ...]:
        """(interval in seconds, readings) per poll group: each poll stores one record."""
        ...

    def machine_refs(self) -> Iterator[tuple[Loc, str]]:
        """(key path of a `machine` key, relative to the source; the machine it names)."""
        ...

    def tag_places(self) -> Iterator[tuple[Loc, str, str]]:
        """(key path of a tag, relative to the source; its machine; its name)."""
        ...


@runtime_checkable
class InspectionModel(Protocol):
    """An `[[inspections]]` entry (vision/config.py), loaded only when a config has one."""

    @property
    def name(self) -> str: ...
    @property
    def machine(self) -> str: ...


@runtime_checkable
class SinkModel(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def endpoint(self) -> str: ...

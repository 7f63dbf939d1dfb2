"""What the agent needs of any source, sink, tag and inspection entry, whatever its protocol.

Source and sink entries are dispatched on their `type` through `agent.registry` (one `type` → one
config model in connectors/*/config.py); these protocols are what every such model offers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
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


class _PolledTag(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def interval(self) -> float | None: ...


class _OneMachine(Protocol):
    @property
    def machine(self) -> str: ...
    @property
    def poll_interval(self) -> float: ...
    @property
    def tags(self) -> Sequence[_PolledTag]: ...


class OneMachineSource:
    """The `SourceModel` methods of a source that reads one machine's flat `tags`, each polled at
    the source's `poll_interval` or its own `interval` (S7, MC): mixed into their models."""

    def unit_ids(self) -> tuple[int, ...]:
        return ()

    def machines(self: _OneMachine) -> tuple[str, ...]:
        return (self.machine,)

    def poll_intervals(self: _OneMachine) -> tuple[float, ...]:
        found = {self.poll_interval} | {t.interval for t in self.tags if t.interval is not None}
        return tuple(sorted(found))

    def poll_groups(self: _OneMachine) -> tuple[tuple[float, int], ...]:
        """(interval in seconds, readings) per poll group: each poll stores one record."""
        readings = Counter(
            self.poll_interval if t.interval is None else t.interval for t in self.tags
        )
        return tuple(sorted(readings.items()))

    def machine_refs(self: _OneMachine) -> Iterator[tuple[Loc, str]]:
        yield ("machine",), self.machine

    def tag_places(self: _OneMachine) -> Iterator[tuple[Loc, str, str]]:
        for j, tag in enumerate(self.tags):
            yield ("tags", j), self.machine, tag.name

"""What the agent expects of a source runtime (Modbus TCP, Modbus RTU, OPC UA, ...).

A source owns one physical link (a TCP connection, a serial bus, an OPC UA session) and the
poll groups on it. It does one attempt at a time and raises; the agent's link loop
(`agent/poller.py`) owns scheduling, reconnection with back-off and state logging.

What a source can do beyond polling is declared by the protocols below, never found out from
its type name or its config's attributes: `ReportsChanges` (emits on change, repeats on a
heartbeat), `WritesToPlc` (its config names where the agent may write a verdict),
`PlansReads` (its runtime shows its read plan, `lineside plan`).

A source should also keep `reasons` (an `agent.reasons.Reasons`): why its tags read bad, per
block of tags (a request, a subscription), set after every attempt. The agent's views read it
through `agent.reasons.reasons_of`; without one, only the link's error is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agent.model import ReadingBatch
from agent.statistics import SourceStatistics


class Source(Protocol):
    name: str

    def poll_groups(self) -> Mapping[str, float]:
        """Poll group name → interval in seconds; fixed once the source is built."""
        ...

    async def connect(self) -> None:
        """One connection attempt; raises `ConnectError` (or `RequestTimeout`)."""
        ...

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        """Read every request of the due groups and return their readings.

        A request that fails (timeout, exception response, malformed answer) gives its tags bad
        quality in the returned batches; it is counted, not raised. Raises `ConnectError` when
        the link itself is gone, so the loop reconnects.
        """
        ...

    def bad_batches(self, groups: Sequence[str], ts_ns: int) -> list[ReadingBatch]:
        """Bad-quality readings for every tag of the groups: what a poll gives while down."""
        ...

    async def close(self) -> None: ...

    def statistics(self) -> SourceStatistics:
        """Counters and gauges: requests, errors by kind, bytes, latency, reconnects."""
        ...


@runtime_checkable
class ReportsChanges(Protocol):
    """A source that emits a tag only when it changes (OPC UA subscriptions) and so repeats an
    unchanged one every `heartbeat` seconds (0: never), which the agent sets from
    `agent.heartbeat`: a quiet tag must still reach the store, to be told from a dead one."""

    heartbeat: float


@dataclass(frozen=True, slots=True)
class WriteTarget:
    """Where verdicts of a machine are written: a Modbus TCP device and unit."""

    host: str
    port: int
    unit_id: int


@runtime_checkable
class WritesToPlc(Protocol):
    """A source config whose link can take the agent's writes (vision write-back)."""

    def write_target(self, machine: str) -> WriteTarget | None:
        """Where to write for `machine`; None when this source does not serve it."""
        ...


@runtime_checkable
class PlansReads(Protocol):
    """A source runtime that plans its reads ahead (Modbus, MC): `lineside plan` shows the plan."""

    def poll_groups(self) -> Mapping[str, float]: ...

    def unit_groups(self, group: str) -> tuple[Any, ...]:
        """The planned reads of one poll group, unit by unit."""
        ...

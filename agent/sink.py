"""What the agent hands to a sink (MQTT, Sparkplug B, HTTP), and what it expects back.

The forwarder (`agent/forward.py`) reads records after a sink's cursor in the store and calls
`send(records)`. `send` returns only when the far side acknowledged every record (MQTT PUBACK
at QoS 1, HTTP 2xx); only then does the cursor move. Delivery is therefore at least once, and
every record carries `(agent_id, stream, seq)` so the receiver can drop duplicates.

Errors: `ConnectError` / `RequestTimeout` / other `ConnectorError`s are retried with back-off;
`SinkRejected` (the far side refused a record as invalid) quarantines that record (or the whole
batch when its `index` is None) so it never blocks the queue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.model import DataType, Event, ReadingBatch


@dataclass(frozen=True, slots=True)
class TagMeta:
    """A tag as sinks need it: its ISA-95 place and its unit. Keyed by the store's tag id."""

    path: str  # site/area/line/machine/tag
    site: str
    area: str
    line: str
    machine: str
    name: str
    unit: str
    type: DataType = "float64"  # as declared in the config (values travel as float64)


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    seq: int
    batch: ReadingBatch  # tag_ids are the store's ids: look them up in SinkContext.tags
    historical: bool = False  # replayed after an outage rather than sent live
    stream: str = "telemetry"


@dataclass(frozen=True, slots=True)
class EventRecord:
    seq: int
    event: Event
    historical: bool = False
    stream: str = "events"


@dataclass(frozen=True, slots=True)
class GapRecord:
    """Records of `of_stream` dropped before this sink had them: first..last seq, count."""

    seq: int
    of_stream: str
    first_seq: int | None
    last_seq: int | None
    count: int
    readings: int
    ts_ns: int
    reason: str
    historical: bool = False
    stream: str = "gaps"

    def describe(self) -> dict[str, object]:
        """What was lost, as every sink's payload carries it (JSON-ready)."""
        return {
            "of_stream": self.of_stream,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "count": self.count,
            "readings": self.readings,
            "reason": self.reason,
        }


Record = TelemetryRecord | EventRecord | GapRecord


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What every sink runtime is built with, besides its own config model."""

    agent_id: str
    tags: Mapping[int, TagMeta]


class Sink(Protocol):
    name: str

    async def connect(self) -> None:
        """One attempt; raises `ConnectError` (unreachable, refused, TLS or auth failure)."""
        ...

    async def send(self, records: Sequence[Record]) -> None:
        """Deliver `records` (one stream, in seq order); return once all are acknowledged."""
        ...

    async def close(self) -> None: ...

    def statistics(self) -> Mapping[str, float]: ...

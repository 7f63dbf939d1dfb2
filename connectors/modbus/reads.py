"""The planned reads of a Modbus unit and what a poll fills in with their answers.

For each unit and poll group the source plans its tags into coalesced reads (`planner.py`),
each with its decoder (`codec.py`) and its rows in the group's batch; a poll fills a
`UnitBatch` read by read. The isolation state of a unit and the source's counters live here
too: the TCP and RTU sources (`tcp_source.py`, `rtu_source.py`) share all of it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.duration import format_duration
from agent.errors import DeviceError
from agent.histogram import Histogram
from agent.model import Quality, ReadingBatch
from connectors.modbus.codec import RequestDecoder
from connectors.modbus.config import (
    ModbusTag,
)
from connectors.modbus.pdu import exception_reason
from connectors.modbus.planner import PlanTag, ReadPlan, tag_width

# Exception codes that mean "ask again later" (standards.md §7 item 26): retried, others not.
RETRIED_CODES = frozenset({0x05, 0x06})
LATENCY_SAMPLES = 1024  # recent read latencies kept for p50/p99
GOOD = np.uint8(Quality.GOOD)
MALFORMED = "malformed answer"
BAD = np.uint8(Quality.BAD)

Reader = Callable[[int, int, int, int, float], Awaitable[bytes]]


def device_reason(exc: DeviceError) -> str:
    return exception_reason(exc.code) if exc.code is not None else str(exc)


def group_name(interval: float) -> str:
    return format_duration(interval)


def plan_tag(tag: ModbusTag, tag_id: int) -> PlanTag:
    table = tag.address.table
    length = tag.length or 0
    return PlanTag(
        tag_id=tag_id,
        table=table,
        offset=tag.address.offset,
        width=tag_width(table, tag.type, length),
        type=tag.type,
        order=tag.order,
        bit=tag.address.bit,
        length=length,
        scale=tag.scale,
        offset_value=tag.offset,
    )


@dataclass(frozen=True, slots=True)
class Read:
    """One request of a unit-group and the rows of the batch its tags fill."""

    decoder: RequestDecoder
    rows: slice
    frame: tuple[int, int, int, int]  # (unit_id, function, start, count), as the link sends it
    block: int  # its index in the source's `reasons`

    @property
    def function(self) -> int:
        return self.decoder.request.function_code


@dataclass(frozen=True, slots=True)
class UnitGroup:
    """The reads of one unit for one poll group, planned once."""

    unit_id: int
    machine: str
    group: str
    plan: ReadPlan
    reads: tuple[Read, ...]
    tag_ids: npt.NDArray[np.int32]


@dataclass(slots=True)
class UnitState:
    """Isolation of one unit: skipped until `until` (monotonic) after a failure."""

    backoff: float
    initial: float
    until: float = -math.inf
    isolations: int = 0
    reason: str = ""  # why it was isolated: its skipped requests read bad for this

    @property
    def suspect(self) -> bool:
        """It failed and has not answered since (isolated, or due for its probe)."""
        return self.backoff > self.initial

    def answered(self) -> None:
        if self.backoff != self.initial:
            self.backoff = self.initial
            self.until = -math.inf


@dataclass(slots=True)
class UnitBatch:
    """One unit-group's readings while a poll fills them in.

    Made once and reused by every poll of its groups (`PollBatches`): `begin` gives it fresh
    arrays, as those of the last poll went on in its `ReadingBatch`.
    """

    unit: UnitGroup
    state: UnitState
    values: npt.NDArray[np.float64] = field(init=False)
    quality: npt.NDArray[np.uint8] = field(init=False)
    ts_ns: int = 0

    def begin(self) -> None:
        n = self.unit.tag_ids.shape[0]
        self.values = np.empty(n, dtype=np.float64)
        self.quality = np.empty(n, dtype=np.uint8)
        self.ts_ns = 0

    def bad(self, read: Read) -> None:
        self.values[read.rows] = math.nan
        self.quality[read.rows] = BAD

    def batch(self, source: str, fallback_ns: int) -> ReadingBatch:
        ts_ns = np.array([self.ts_ns or fallback_ns], dtype=np.int64)
        return ReadingBatch(source, self.unit.tag_ids, self.values, self.quality, ts_ns)


@dataclass(frozen=True, slots=True)
class PollBatches:
    """The batches a poll of some groups fills, unit by unit, and their reads in plan order.

    Made once per set of groups and reused by each poll of it: the poll loop's cost, as the
    batches and the jobs of a 100 ms poll are otherwise built again ten times a second. (A
    source runs one poll at a time: the link loop never overlaps two.)
    """

    batches: tuple[UnitBatch, ...]
    jobs: tuple[tuple[UnitBatch, Read], ...]


@dataclass(slots=True)
class Counters:
    polls: int = 0
    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    exceptions: int = 0
    malformed: int = 0
    aborted: int = 0  # reads not sent: the link closed mid-poll
    connects: int = 0
    latency: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(LATENCY_SAMPLES, dtype=np.float64)
    )
    latency_count: int = 0
    latency_last: float = math.nan
    # Every request since start, for /metrics (the ring above only keeps the recent ones).
    latency_histogram: Histogram = field(default_factory=Histogram)

    def record_latency(self, seconds: float) -> None:
        self.latency[self.latency_count % LATENCY_SAMPLES] = seconds
        self.latency_count += 1
        self.latency_last = seconds
        self.latency_histogram.observe(seconds)


class ReadFailed(Exception):
    """A read failed for good (timeout, exception or malformed); already counted."""

    def __init__(self, cause: Exception, reason: str) -> None:
        self.cause = cause
        self.reason = reason
        super().__init__(str(cause))

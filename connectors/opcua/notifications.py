"""What subscriptions deliver, kept until the next poll: the notifications of a subscribe
group as C arrays (`Inbox`, the hot path), the callback asyncua's publish loop calls
(`Receiver`), and per row what was last emitted (for `heartbeat`). See source.py."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from asyncua import ua

from agent.histogram import Histogram
from agent.model import Quality

if TYPE_CHECKING:
    from connectors.opcua.subscribe import Subscribing

GOOD = np.uint8(Quality.GOOD)
BAD = np.uint8(Quality.BAD)
QUALITY = (int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD), int(Quality.BAD))
BAD_STATUS = 0x80000000


@dataclass(slots=True)
class LastEmitted:
    """Per row of a subscribe group: what was last emitted and when (the source's clock)."""

    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    emitted_ns: npt.NDArray[np.int64]
    seen: npt.NDArray[np.bool_]  # emitted this session: a heartbeat may repeat it

    @classmethod
    def of(cls, n: int) -> LastEmitted:
        return cls(
            np.full(n, math.nan),
            np.full(n, BAD, dtype=np.uint8),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.bool_),
        )


@dataclass(slots=True)
class Counters:
    polls: int = 0
    requests: int = 0  # Reads of poll groups
    request_errors: int = 0
    notifications: int = 0
    publishes: int = 0
    drains: int = 0
    connects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    subscriptions: int = 0
    monitored_items: int = 0
    reclaimed: int = 0
    heartbeats: int = 0  # unchanged subscribed values repeated (`heartbeat`)
    latency: Histogram = field(default_factory=Histogram)  # Reads that answered, seconds

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Inbox:
    """Notifications of one subscribe group since the last drain, as C arrays."""

    __slots__ = ("_source", "quality", "rows", "ts", "values")

    def __init__(self, source: Subscribing) -> None:
        self._source = source
        self.rows = array("i")
        self.values = array("d")
        self.quality = array("B")
        self.ts = array("q")

    def take(self, items: Iterable[ua.MonitoredItemNotification], arrival_ns: int) -> int:
        """Append one DataChangeNotification's items; returns how many. The hot path."""
        src = self._source
        row_of = src._handle_row
        rows, values, quality, ts = self.rows, self.values, self.quality, self.ts
        use_source = src._timestamp == "source"
        n = 0
        for item in items:
            n += 1
            handle = item.ClientHandle
            dv = item.Value
            variant = dv.Value
            value: Any = variant.Value if variant is not None else None
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            stamp = dv.SourceTimestamp if use_source else dv.ServerTimestamp
            if stamp is None:
                stamp = dv.ServerTimestamp if use_source else dv.SourceTimestamp
            at = round(stamp.timestamp() * 1e6) * 1000 if stamp is not None else 0
            if at <= 0:  # missing or "null" (1601) timestamp
                at = arrival_ns
            row = row_of[handle] if 0 <= handle < len(row_of) else -1
            kind = type(value)
            if row >= 0 and code < BAD_STATUS and (kind is float or kind is int or kind is bool):
                rows.append(row)
                values.append(float(value))
                quality.append(QUALITY[code >> 30])
                ts.append(at)
            else:
                src._take_slow(self, handle, value, code, at)
        return n

    def put(self, first_row: int, values: Sequence[float], quality: Sequence[int], at: int) -> None:
        for i, (v, q) in enumerate(zip(values, quality, strict=True)):
            self.rows.append(first_row + i)
            self.values.append(v)
            self.quality.append(q)
            self.ts.append(at)

    def drain(
        self,
    ) -> tuple[
        npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
    ]:
        out = (
            np.frombuffer(self.rows, dtype=np.int32).copy(),
            np.frombuffer(self.values, dtype=np.float64).copy(),
            np.frombuffer(self.quality, dtype=np.uint8).copy(),
            np.frombuffer(self.ts, dtype=np.int64).copy(),
        )
        del self.rows[:], self.values[:], self.quality[:], self.ts[:]
        return out


class Receiver:
    """The callback asyncua's publish loop calls with each PublishResult of one subscription."""

    __slots__ = ("inbox", "source", "subscription")

    def __init__(self, source: Subscribing, inbox: Inbox) -> None:
        self.source = source
        self.inbox = inbox
        self.subscription: Subscription | None = None

    def __call__(self, result: ua.PublishResult) -> None:
        self.source._on_publish(result, self.inbox, self.subscription)


@dataclass(slots=True)
class Subscription:
    id: int
    group: str
    silence_limit: float  # seconds without any publish response before the link is dead
    last_seen: float  # monotonic

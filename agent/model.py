"""The types every layer shares.

The hot path is columnar: one `ReadingBatch` carries one poll of one source as numpy arrays, so
acquisition never creates a Python object per tag. Low-rate records (a machine changing state,
an alarm, an inspection verdict, a KPI window) are `Event`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

# The value types a tag may declare, whatever the protocol. ReadingBatch values are float64:
# "string" tags travel beside the batches, as `text` events (agent/texts.py).
DataType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]
DATA_TYPES: tuple[str, ...] = get_args(DataType)


class Quality(IntEnum):
    """Quality of one reading, stored as a uint8 in `ReadingBatch.quality`."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


# The dtypes of (tag_ids, values, quality, ts_ns).
_DTYPES = tuple(np.dtype(t) for t in (np.int32, np.float64, np.uint8, np.int64))


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """One poll of one source, column by column.

    `tag_ids` index the agent's tag table (assigned once at start-up). `ts_ns` holds either one
    timestamp for the whole batch (shape (1,)) or one per row; use `timestamps()` to get one per
    row either way.
    """

    source: str
    tag_ids: npt.NDArray[np.int32]
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    ts_ns: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        # The usual batch, checked in one go: a batch is made per unit and poll, and tuples
        # compare their dtypes by identity first, which is cheap.
        n = self.tag_ids.shape[0]
        dtypes = (self.tag_ids.dtype, self.values.dtype, self.quality.dtype, self.ts_ns.dtype)
        shapes = (self.values.shape, self.quality.shape)
        if dtypes == _DTYPES and shapes == ((n,), (n,)) and self.ts_ns.shape in ((1,), (n,)):
            return
        if self.tag_ids.dtype != np.int32:
            raise TypeError(f"tag_ids must be int32, not {self.tag_ids.dtype}")
        if self.values.dtype != np.float64:
            raise TypeError(f"values must be float64, not {self.values.dtype}")
        if self.quality.dtype != np.uint8:
            raise TypeError(f"quality must be uint8, not {self.quality.dtype}")
        if self.ts_ns.dtype != np.int64:
            raise TypeError(f"ts_ns must be int64, not {self.ts_ns.dtype}")
        if self.values.shape != (n,) or self.quality.shape != (n,):
            raise ValueError("tag_ids, values and quality must be 1-D and of one length")
        if self.ts_ns.shape not in ((1,), (n,)):
            raise ValueError("ts_ns holds one timestamp per batch or one per row")

    @classmethod
    def from_columns(
        cls,
        source: str,
        tag_ids: npt.ArrayLike,
        values: npt.ArrayLike,
        quality: npt.ArrayLike | Quality,
        ts_ns: int | npt.ArrayLike,
    ) -> ReadingBatch:
        """Build a batch, converting columns to their dtypes; a scalar quality or time fills all."""
        ids = np.asarray(tag_ids, dtype=np.int32)
        vals = np.asarray(values, dtype=np.float64)
        if isinstance(quality, Quality):
            qual = np.full(ids.shape[0], quality.value, dtype=np.uint8)
        else:
            qual = np.asarray(quality, dtype=np.uint8)
        ts = np.atleast_1d(np.asarray(ts_ns, dtype=np.int64))
        return cls(source=source, tag_ids=ids, values=vals, quality=qual, ts_ns=ts)

    def __len__(self) -> int:
        return int(self.tag_ids.shape[0])

    def timestamps(self) -> npt.NDArray[np.int64]:
        """One timestamp per row (broadcast when the batch carries a single one)."""
        if self.ts_ns.shape[0] == len(self):
            return self.ts_ns
        return np.broadcast_to(self.ts_ns, (len(self),))

    def select(self, mask: npt.NDArray[np.bool_]) -> ReadingBatch:
        """The rows where `mask` is true, as a new batch (deadband, report-by-exception)."""
        ts = self.ts_ns if self.ts_ns.shape[0] == 1 and len(self) != 1 else self.ts_ns[mask]
        return ReadingBatch(
            source=self.source,
            tag_ids=self.tag_ids[mask],
            values=self.values[mask],
            quality=self.quality[mask],
            ts_ns=ts,
        )


class EventKind(StrEnum):
    """What an `Event` records; the stream it is stored and forwarded in."""

    STATE = "state"  # a machine changed state (running, down, ...)
    ALARM = "alarm"
    INSPECTION = "inspection"  # a vision verdict
    KPI = "kpi"  # a closed or live KPI window
    CONNECTION = "connection"  # a source or sink connected, lost, restored
    GAP = "gap"  # records dropped from the store, by sequence range
    # A write lineside made to a PLC (a verdict write-back), refused or failed ones too. Last, so
    # the kinds before it keep their place (Sparkplug numbers its event aliases in this order).
    AUDIT = "audit"
    # Why a source's tags read bad, each time that changed (agent/reasonlog.py): export joins
    # a bad reading to its reason by time. Last, for the same reason as AUDIT.
    REASONS = "reasons"
    # A text tag's string, each time it changed (agent/texts.py): strings are not float64, so
    # they travel beside the batches. Last, for the same reason as AUDIT.
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class Event:
    """A low-rate, typed record. `seq` is assigned by the store when the event is written."""

    kind: EventKind
    ts_ns: int
    machine: str | None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None


class Verdict(StrEnum):
    """An inspection's verdict: stored and sent as its value ("OK", "NotOK", "NotDecidable"),
    written to a PLC register as its `code` (vision write-back), and counted by the KPI engine
    (OK good, NotOK reject, NotDecidable neither)."""

    OK = "OK"
    NOT_OK = "NotOK"
    NOT_DECIDABLE = "NotDecidable"

    @property
    def code(self) -> int:
        """The register value of a verdict write-back: 1 OK, 2 NotOK, 3 NotDecidable."""
        return _VERDICT_CODES[self]

    @classmethod
    def parse(cls, value: object) -> Verdict | None:
        """The verdict `value` names, or None (a verdict this version does not know)."""
        try:
            return cls(str(value))
        except ValueError:
            return None


_VERDICT_CODES = {Verdict.OK: 1, Verdict.NOT_OK: 2, Verdict.NOT_DECIDABLE: 3}


# ---------------------------------------------------------------------------------------------
# Typed payloads of the events the agent reads back itself. Each keeps the stored JSON (`data`)
# exactly as it was, so stored rows and every sink's wire format stay the same.


@dataclass(frozen=True, slots=True)
class InspectionVerdict:
    """What counts of an inspection event: which inspection, what verdict."""

    inspection: str
    verdict: Verdict

    @classmethod
    def of(cls, event: Event) -> InspectionVerdict | None:
        """The verdict of an inspection event; None for any other event, for a write-back
        audit that older stores keep as an inspection event (it repeats a verdict), and for a
        verdict this version does not know."""
        data = event.data
        if event.kind is not EventKind.INSPECTION or "audit" in data:
            return None
        verdict = Verdict.parse(data.get("verdict"))
        if verdict is None:
            return None
        return cls(str(data.get("inspection")), verdict)


OUTAGE = "outage"  # the `state` of a connection event that records an agent outage


@dataclass(frozen=True, slots=True)
class Outage:
    """The fact that the agent saw nothing from `start_ns` (its last stored reading) to
    `end_ns`, stored as a connection event of the source "agent"."""

    start_ns: int
    end_ns: int
    cause: str

    def event(self) -> Event:
        data = {"source": "agent", "state": OUTAGE, "detail": self.cause, "cause": self.cause,
                "start_ns": self.start_ns, "end_ns": self.end_ns}  # fmt: skip
        return Event(EventKind.CONNECTION, self.start_ns, None, data)

    @classmethod
    def of(cls, event: Event) -> Outage | None:
        d = event.data
        if event.kind is not EventKind.CONNECTION or (d.get("source"), d.get("state")) != (
            "agent",
            OUTAGE,
        ):
            return None
        return cls(int(d.get("start_ns", event.ts_ns)), int(d.get("end_ns", event.ts_ns)),
                   str(d.get("cause", "")))  # fmt: skip

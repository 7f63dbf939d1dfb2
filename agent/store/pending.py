"""The store writer's queue: what was submitted and is not committed yet, and its accounting.

`StoreWriter` touches it under its lock only; the writer thread takes a snapshot (`take`) for a
commit and, once that commit is in, removes what it wrote (`settle`). What arrived meanwhile
stays for the next commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent.model import ReadingBatch
from agent.store.transaction import EventRow, QuarantineRow, Work

log = logging.getLogger("lineside.store")


@dataclass(slots=True)
class Pending:
    # Batches as submitted: encoded into records on the writer thread, at commit time.
    telemetry: list[ReadingBatch] = field(default_factory=list)
    readings: int = 0
    events: list[EventRow] = field(default_factory=list)
    acks: dict[tuple[str, str], int] = field(default_factory=dict)
    # When (monotonic) the first acknowledgement since the writer last took the queue came:
    # acknowledgements alone wait `ACK_INTERVAL` from then for records to ride with.
    acks_since: float | None = None
    quarantine: list[QuarantineRow] = field(default_factory=list)
    releases: list[int] = field(default_factory=list)
    # telemetry dropped in memory since the last gap record about it: (batches, readings)
    unstored_drops: tuple[int, int] = (0, 0)
    submitted: int = 0  # submissions so far; flush() waits for `committed` to reach it

    def drop(self, readings: int) -> None:
        """Count a batch of `readings` dropped because too many wait already (the gap record
        of the next commit that writes telemetry says how many)."""
        b, r = self.unstored_drops
        self.unstored_drops = (b + 1, r + readings)
        if b == 0:  # once per run of drops: the gap record that ends it has the count
            log.warning(
                "store: %d readings wait in memory (the bound); new readings are "
                "dropped and counted until the store takes them again",
                self.readings,
            )

    def has_records(self) -> bool:
        """Whether anything but acknowledgements waits (a record, a quarantine row, a gap)."""
        return bool(
            self.telemetry
            or self.events
            or self.quarantine
            or self.releases
            or self.unstored_drops != (0, 0)
        )

    def take(self, full: bool, page_count: int | None) -> Work:
        """A snapshot of what is pending; it leaves the queue only once committed (`settle`).

        While the store is `full`, records wait here; acknowledgements still go through,
        because they are what frees space.
        """
        self.acks_since = None  # those that come from now on are due from their own arrival
        return Work(
            telemetry=[] if full else list(self.telemetry),
            events=[] if full else list(self.events),
            acks=dict(self.acks),
            unstored_drops=(0, 0) if full else self.unstored_drops,
            submitted=self.submitted,
            held=full and bool(self.telemetry or self.events),
            page_count=page_count,
            quarantine=list(self.quarantine),
            releases=list(self.releases),
        )

    def settle(self, work: Work) -> int:
        """Remove what the committed `work` wrote; the number of readings it held."""
        del self.telemetry[: len(work.telemetry)]
        written = sum(len(b) for b in work.telemetry)
        self.readings -= written
        del self.events[: len(work.events)]
        for key, seq in work.acks.items():
            if self.acks.get(key) == seq:
                del self.acks[key]
        del self.quarantine[: len(work.quarantine)]
        del self.releases[: len(work.releases)]
        if work.unstored_drops != (0, 0):
            b, r = self.unstored_drops
            self.unstored_drops = (b - work.unstored_drops[0], r - work.unstored_drops[1])
        return written

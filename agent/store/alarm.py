"""The store-full state and its alarm: why the store takes no records, and since when.

The store is full when the disk (or SQLite's page limit) refuses a commit, or when `max_bytes`
is reached with events no sink has acknowledged. `StoreWriter` keeps one `FullState`, under
its lock; each change raises or clears the alarm once: a log line here, and the data of an
alarm event for the writer to queue.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("lineside.store")

MAX_SIZE_REASON = "max_size reached with events no sink has acknowledged"


@dataclass(frozen=True, slots=True)
class Alarm:
    reason: str
    since: float  # time.monotonic() when it was raised
    dropped_readings: int  # the drop counter then


@dataclass(slots=True)
class FullState:
    store_full: bool = False  # max_bytes reached with unacknowledged events
    disk_full: str | None = None  # the error while the disk refuses commits
    alarm: Alarm | None = None  # raised while either holds

    @property
    def reason(self) -> str | None:
        """Why the store is full now; None when it is not."""
        if self.disk_full is not None:
            return self.disk_full
        if self.store_full:
            return MAX_SIZE_REASON
        return None

    def update(
        self, path: Path, max_pending_readings: int, dropped_readings: int
    ) -> dict[str, object] | None:
        """Raise or clear the alarm after `store_full` or `disk_full` changed: a log line and
        the data of the alarm event to store per change; None when the alarm stays as it was.

        `dropped_readings` is the writer's drop counter now (the clearing event says how many
        were dropped while the store was full).
        """
        reason = self.reason
        alarm = self.alarm
        if reason is not None and alarm is None:
            self.alarm = Alarm(reason, time.monotonic(), dropped_readings)
            remedy = (
                f"free space on the disk of {path}"
                if self.disk_full is not None
                else "the sinks free it as they catch up"
            )
            log.error(
                "store: full: %s; polling goes on, readings wait in memory (up to %d, then "
                "new ones are dropped and counted), events wait; %s",
                reason,
                max_pending_readings,
                remedy,
            )
            return {"alarm": "store_full", "active": True, "reason": reason}
        if reason is None and alarm is not None:
            self.alarm = None
            seconds = round(time.monotonic() - alarm.since, 1)
            dropped = dropped_readings - alarm.dropped_readings
            log.warning(
                "store: takes writes again after %.1f s full; %d readings were dropped "
                "meanwhile (a gap record counts them)",
                seconds,
                dropped,
            )
            data = {"alarm": "store_full", "active": False, "reason": alarm.reason}
            return {**data, "full_s": seconds, "dropped_readings": dropped}
        return None

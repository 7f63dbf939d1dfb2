"""When the store writer commits (docs/decisions/0008-group-commit-and-live-forwarding.md).

Group commit, acknowledgements alone, the bounds on their interval, the back-off after a
failed commit and the retries while the full store holds records back. Pure: the writer thread
asks under its lock, with the state it keeps (agent/store/writer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store.pending import Pending

# Acknowledgements alone (no record waiting) are committed at most this often: a sink's cursor
# may lag its deliveries by this much (a crash then resends, never skips), and a delivery does
# not cost an fsync of its own. They ride with the next commit of records in any case.
ACK_INTERVAL = 0.1
# While the store is full and holds records back, commits (each with the bounds) are retried
# this often at most, however short the flush interval.
FULL_RETRY = 0.1


@dataclass(frozen=True, slots=True)
class Schedule:
    flush_interval: float  # a record waits at most this long (plus a commit under way)
    flush_rows: int  # this many pending readings are committed at once
    housekeeping_interval: float  # the bounds are enforced this often
    retry_initial: float  # the back-off after a first failure, doubled after each next one
    retry_max: float  # up to this

    def due(
        self,
        pending: Pending,
        now: float,
        last_start: float,
        retry_at: float,
        next_housekeeping: float,
        *,
        urgent: bool,
        stopping: bool,
    ) -> float:
        """When the next commit is due (monotonic), `last_start` being when the last one
        started.

        After a failure, and while the store is full, only a flush request or a new page
        limit (`urgent`) cuts the wait short (not even close(): it would spin on a disk that
        keeps failing). Else: at once when `stopping` or `flush_rows` readings wait; records
        one `flush_interval` after the last commit started (at once when that is past: the
        writer was idle); acknowledgements alone `ACK_INTERVAL` after the first of them came
        (and not within `flush_interval` of the last commit); the bounds alone (on their
        interval) at most every `ACK_INTERVAL`.
        """
        if urgent:
            return now
        if retry_at > now:
            return retry_at
        if stopping or pending.readings >= self.flush_rows:
            return now
        # The bounds alone, like acknowledgements alone, every ACK_INTERVAL at most (a
        # housekeeping interval of 0 means "with every commit", not a commit loop): each
        # commit grows the WAL, which the size bound counts.
        due = max(next_housekeeping, last_start + max(self.flush_interval, ACK_INTERVAL))
        if pending.has_records():
            due = min(due, last_start + self.flush_interval)
        elif pending.acks:
            # From the first acknowledgement's arrival, not from the last commit: at a poll
            # period of about ACK_INTERVAL the acknowledgements of one commit would otherwise
            # race the next poll's records and often win, costing a commit (an fsync) of
            # their own and making those records wait a `flush_interval` behind it.
            since = max(last_start, pending.acks_since or last_start)
            due = min(due, max(last_start + self.flush_interval, since + ACK_INTERVAL))
        return due

    def backoff(self, previous: float) -> float:
        """The wait before retrying a commit that failed, `previous` being the wait before
        this try (0 after a commit that worked)."""
        return min(self.retry_max, max(self.retry_initial, previous * 2))

    @property
    def full_retry(self) -> float:
        """The wait between commits while the full store holds records back."""
        return max(self.flush_interval, FULL_RETRY)

"""A store holding a backlog to drain: N telemetry records of one machine's poll.

Each record is one `ReadingBatch` of `TAGS_PER_RECORD` float64 readings with one timestamp,
written through the real `StoreWriter` (the way the agent stores a poll). The timestamps lie an
hour back, 100 ms apart, and the writer's clock stores them an hour back: after an outage that
long every record is older than the forwarder's live window, so the drain is a historical
replay, the case where rate matters.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from agent.model import Quality, ReadingBatch
from agent.runtime import sink_tags
from agent.sink import SinkContext
from agent.store import Store, StoreWriter
from agent.tags import Tag

AGENT_ID = "bench-drain"
SITE, AREA, LINE, MACHINE = "bench", "a", "l", "m000"
TAGS_PER_RECORD = 50
POLL_SPACING_NS = 100_000_000  # 100 ms between the backlog's polls
BACKLOG_AGE_NS = 3600 * 1_000_000_000  # the first record is an hour old
SUBMIT_CHUNK = 2000  # records between flushes while filling (stays under the pending bound)


def tag_infos(n: int = TAGS_PER_RECORD) -> list[Tag]:
    return [
        Tag(
            path=f"{SITE}/{AREA}/{LINE}/{MACHINE}/f{i:03d}",
            machine=MACHINE,
            name=f"f{i:03d}",
            unit="bar",
            source="plc000",
        )
        for i in range(n)
    ]


def fill(data_dir: Path, records: int, tags: int = TAGS_PER_RECORD) -> None:
    """Create a store in `data_dir` holding `records` telemetry records of `tags` readings."""
    if records <= 0 or tags <= 0:
        raise ValueError("a backlog needs at least one record of at least one tag")
    with Store(data_dir, synchronous="NORMAL") as store:
        ids = store.register_tags(tag_infos(tags))
    tag_ids = np.array(list(ids.values()), dtype=np.int32)
    base = 1000.0 + np.arange(tags, dtype=np.float64)
    quality = np.full(tags, Quality.GOOD, dtype=np.uint8)
    first_ns = time.time_ns() - BACKLOG_AGE_NS
    # Stored an hour ago too: the forwarder tells a backlog by when the agent stored a record.
    writer = StoreWriter(
        data_dir,
        synchronous="NORMAL",
        flush_rows=100_000,
        clock=lambda: time.time_ns() - BACKLOG_AGE_NS,
    )
    try:
        for k in range(records):
            values = base + np.sin(np.arange(tags) + k * 0.01)  # values that move, as a PLC's
            ts = np.array([first_ns + k * POLL_SPACING_NS], dtype=np.int64)
            if not writer.submit_readings(ReadingBatch("plc000", tag_ids, values, quality, ts)):
                raise RuntimeError("the store writer dropped a batch while filling")
            if (k + 1) % SUBMIT_CHUNK == 0 and not writer.flush_blocking(60):
                raise RuntimeError("the store writer did not commit within 60 s")
    finally:
        writer.close(60)


def context(store: Store) -> SinkContext:
    """What a sink is built with for this store's tags (as the agent builds it)."""
    return SinkContext(AGENT_ID, sink_tags(store.tags()))

"""Per-sink drops: telemetry the store's bounds dropped before a sink acknowledged it.

Counted by the store writer inside the transaction that drops (the cursors it reads there are
the ones the drop passed over); shown on the page and in /metrics per sink.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.model import ReadingBatch
from agent.store import Store, StoreWriter
from agent.store.bounds import unsent_dropped

NOW = 1_700_000_000_000_000_000


def poll(i: int, n: int = 100) -> ReadingBatch:
    return ReadingBatch.from_columns(
        "plc", np.arange(n), np.full(n, float(i)), np.zeros(n), NOW + i
    )


@pytest.mark.parametrize(
    ("cursors", "first", "last", "count", "expected"),
    [
        ({"a": 0, "b": 0}, 1, 10, 10, {"a": 10, "b": 10}),  # nobody had any
        ({"a": 4, "b": 0}, 1, 10, 10, {"a": 6, "b": 10}),  # a had 1..4
        ({"a": 10, "b": 0}, 1, 10, 10, {"a": 0, "b": 10}),  # a had them all
        ({"a": 25, "b": 7}, 5, 12, 8, {"a": 0, "b": 5}),
        ({"a": 3}, 5, 12, 8, {"a": 8}),  # a cursor below the range: all 8, not 9
        ({"a": 0, "b": 9}, None, None, 3, {"a": 3, "b": 3}),  # never stored: nobody had them
        ({}, 1, 10, 10, {}),  # no sink, nobody to count for
    ],
)
def test_unsent_dropped(
    cursors: dict[str, int],
    first: int | None,
    last: int | None,
    count: int,
    expected: dict[str, int],
) -> None:
    assert unsent_dropped(cursors, first, last, count) == expected


async def test_the_writer_counts_drops_per_sink_cursor(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_sinks(["mqtt", "http"])
        writer = StoreWriter(tmp_path, max_bytes=200_000, housekeeping_interval=0)
        for i in range(300):  # about twice what fits
            writer.submit_readings(poll(i))
            if i == 49:
                await writer.flush()
                writer.submit_ack("mqtt", "telemetry", 40)  # mqtt had the first 40, http none
            if i % 50 == 49:
                await writer.flush()
        await writer.flush()
        stats = writer.statistics()
        writer.close()
        gaps = store.read_gaps(0, 100)
    dropped = stats.dropped_batches
    assert dropped > 40 and sum(g.count for g in gaps) == dropped
    assert stats.dropped_by_sink == {"http": dropped, "mqtt": dropped - 40}


async def test_telemetry_never_stored_is_dropped_for_every_sink(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_sinks(["mqtt", "http"])
        writer = StoreWriter(tmp_path, flush_interval=30, max_pending_readings=250)
        accepted = [writer.submit_readings(poll(i)) for i in range(4)]
        await writer.flush()
        stats = writer.statistics()
        writer.close()
    assert accepted == [True, True, False, False]
    assert stats.dropped_by_sink == {"mqtt": 2, "http": 2}


async def test_no_drop_no_count(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.register_sinks(["mqtt"])
        writer = StoreWriter(tmp_path, housekeeping_interval=0)
        for i in range(20):
            writer.submit_readings(poll(i))
        await writer.flush()
        stats = writer.statistics()
        writer.close()
    assert stats.dropped_batches == 0 and stats.dropped_by_sink == {}

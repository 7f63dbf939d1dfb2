"""`/api/trend` from a real store: the window, the tags asked, min/max/last per bucket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.model import Quality, ReadingBatch
from agent.store import Store, StoreWriter
from agent.tags import Tag
from agent.web.trend import TrendError, TrendQuery, buckets, read_trend

NS = 1_000_000_000
NOW = 1_800_000_000 * NS  # the writer stamps records with this clock: the window is real


def filled_store(tmp_path: Path) -> tuple[Store, dict[str, int]]:
    clock = [NOW - 7200 * NS]
    store = Store(tmp_path, clock=lambda: clock[0])
    ids = store.register_tags(
        Tag(path=f"s/a/l/press1/{n}", machine="press1", name=n, unit=u, source="plc")
        for n, u in (("temp", "degC"), ("speed", "1/min"), ("count", ""))
    )
    temp, speed, count = (ids[f"s/a/l/press1/{n}"] for n in ("temp", "speed", "count"))
    writer = StoreWriter(tmp_path, clock=lambda: clock[0])
    # Two hours, a poll every 10 s: temp = minute of the poll, speed = -that, count bad.
    for k in range(720):
        ts = NOW - 7200 * NS + k * 10 * NS
        clock[0] = ts
        batch = ReadingBatch.from_columns(
            "plc",
            [temp, speed, count],
            [k / 6, -k / 6, k],
            [Quality.GOOD, Quality.GOOD, Quality.BAD],
            ts,
        )
        writer.submit_readings(batch)
        if k % 100 == 0:
            assert writer.flush_blocking(10)
    assert writer.flush_blocking(10)
    writer.close(10)
    return store, {"temp": temp, "speed": speed, "count": count}


def test_trend_of_the_last_hour_from_the_store(tmp_path: Path) -> None:
    store, _ = filled_store(tmp_path)
    query = TrendQuery.parse("press1", ["temp", "speed", "count"], "60", "12")
    with store:
        trend = read_trend(store, query, NOW)
    temp = trend["tags"]["temp"]
    assert temp["unit"] == "degC"
    assert len(temp["t"]) == 12  # 360 readings in the hour, 30 per 5-minute bucket
    assert temp["t"][0] == (NOW - 3600 * NS) // 1_000_000
    assert temp["t"][1] - temp["t"][0] == 300_000  # ms
    # The hour began at poll 360 (minute 60): the first bucket holds minutes 60 to 64.83.
    assert temp["min"][0] == 60.0 and temp["max"][0] == pytest.approx(64 + 5 / 6)
    assert temp["last"][0] == temp["max"][0]  # rising: the last is the largest
    assert temp["last"][-1] == pytest.approx(119 + 5 / 6)
    speed = trend["tags"]["speed"]
    assert speed["min"][0] == pytest.approx(-(64 + 5 / 6)) and speed["max"][0] == -60.0
    assert speed["last"][0] == speed["min"][0]
    assert trend["tags"]["count"]["t"] == []  # bad readings are not drawn


def test_trend_window_is_the_minutes_asked(tmp_path: Path) -> None:
    store, _ = filled_store(tmp_path)
    with store:
        trend = read_trend(store, TrendQuery.parse("press1", ["temp"], "5", "300"), NOW)
    temp = trend["tags"]["temp"]
    assert len(temp["t"]) == 30  # a reading every 10 s for 5 minutes, one per bucket
    assert temp["min"] == temp["max"] == temp["last"]


def test_unknown_tag_and_bad_numbers_are_one_line(tmp_path: Path) -> None:
    store, _ = filled_store(tmp_path)
    with store, pytest.raises(TrendError, match="machine 'press1' has no stored tag 'nope'"):
        read_trend(store, TrendQuery.parse("press1", ["nope"], None, None), NOW)
    with pytest.raises(TrendError, match="name at least one tag"):
        TrendQuery.parse("press1", [], None, None)
    with pytest.raises(TrendError, match="points must be from 2"):
        TrendQuery.parse("press1", ["temp"], None, "1")
    with pytest.raises(TrendError, match="minutes and points must be numbers"):
        TrendQuery.parse("press1", ["temp"], "an hour", None)


def test_buckets_keep_the_latest_as_last_even_out_of_order() -> None:
    ts = np.array([5, 1, 3, 12, 11], dtype=np.int64) * NS
    values = np.array([50.0, 10.0, 30.0, 2.0, 1.0])
    got = buckets(ts, values, 0, 20 * NS, 2)
    assert got == {"t": [0, 10_000], "min": [10.0, 1.0], "max": [50.0, 2.0], "last": [50.0, 2.0]}


def test_readings_stamped_one_by_one_keep_their_own_time(tmp_path: Path) -> None:
    """A run mixing records with one stamp and records with a stamp per reading (OPC UA)."""
    clock = [NOW - 60 * NS]
    store = Store(tmp_path, clock=lambda: clock[0])
    ids = store.register_tags(
        Tag(path=f"s/a/l/m/{n}", machine="m", name=n, source="plc") for n in ("a", "b")
    )
    a, b = ids["s/a/l/m/a"], ids["s/a/l/m/b"]
    writer = StoreWriter(tmp_path, clock=lambda: clock[0])
    one = ReadingBatch.from_columns("plc", [a, b], [1.0, 2.0], Quality.GOOD, NOW - 50 * NS)
    each = ReadingBatch.from_columns(
        "plc", [a, b], [3.0, 4.0], Quality.GOOD, [NOW - 40 * NS, NOW - 5 * NS]
    )
    writer.submit_readings(one)
    writer.submit_readings(each)
    assert writer.flush_blocking(10)
    writer.close(10)
    with store:
        trend = read_trend(store, TrendQuery.parse("m", ["a", "b"], "1", "6"), NOW)
    ms = (NOW - 60 * NS) // 1_000_000
    assert trend["tags"]["a"]["t"] == [ms + 10_000, ms + 20_000]  # 50 s and 40 s ago
    assert trend["tags"]["b"]["t"] == [ms + 10_000, ms + 50_000]  # 50 s and 5 s ago
    assert trend["tags"]["b"]["last"] == [2.0, 4.0]

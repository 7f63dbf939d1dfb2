"""`lineside export`: one row per reading, time order, filters, csv and jsonl (real store)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agent.codenames import CodeNames
from agent.errors import StoreError
from agent.export import (
    TIME_MAX_NS,
    TIME_MIN_NS,
    ExportRow,
    Labels,
    export_readings,
    parse_time,
    write_csv,
    write_jsonl,
)
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.store import Store, StoreWriter
from agent.tags import Tag

T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
S = 1_000_000_000


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """Two sources whose polls interleave in time; one batch has a timestamp per row."""
    with Store(tmp_path) as store:
        ids = store.register_tags(
            [
                Tag.from_path("site/a/l1/press/speed"),
                Tag.from_path("site/a/l1/press/count"),
                Tag.from_path("site/a/l2/loom/speed"),
            ]
        )
    press = [ids["site/a/l1/press/speed"], ids["site/a/l1/press/count"]]
    loom = [ids["site/a/l2/loom/speed"]]
    writer = StoreWriter(tmp_path)
    writer.submit_readings(ReadingBatch.from_columns("plc1", press, [1.0, 10.0], Quality.GOOD, T0))
    writer.submit_readings(
        ReadingBatch.from_columns("plc1", press, [2.0, 11.0], [0, 2], [T0 + 2 * S, T0 + 4 * S])
    )
    writer.submit_readings(ReadingBatch.from_columns("plc2", loom, [7.0], Quality.GOOD, T0 + S))
    writer.submit_readings(
        ReadingBatch.from_columns("plc2", loom, [np.nan], Quality.BAD, T0 + 3 * S)
    )
    writer.close()
    return tmp_path


def test_one_row_per_reading_in_time_order(store_dir: Path) -> None:
    rows = list(export_readings(store_dir))
    assert [(r.ts_ns - T0) // S for r in rows] == [0, 0, 1, 2, 3, 4]
    assert [r.path.split("/")[-2:] for r in rows][:3] == [
        ["press", "speed"],
        ["press", "count"],
        ["loom", "speed"],
    ]
    assert rows[3] == ExportRow(T0 + 2 * S, "site/a/l1/press/speed", 2.0, Quality.GOOD)
    assert rows[5] == ExportRow(T0 + 4 * S, "site/a/l1/press/count", 11.0, Quality.BAD)


def test_time_range_is_start_inclusive_end_exclusive(store_dir: Path) -> None:
    rows = list(export_readings(store_dir, start_ns=T0 + S, end_ns=T0 + 4 * S))
    assert [(r.ts_ns - T0) // S for r in rows] == [1, 2, 3]
    assert list(export_readings(store_dir, start_ns=T0 + 5 * S)) == []


def test_tag_glob_filters_by_path(store_dir: Path) -> None:
    rows = list(export_readings(store_dir, tag_glob="site/*/*/*/speed"))
    assert [r.value for r in rows][:3] == [1.0, 7.0, 2.0] and len(rows) == 4
    assert list(export_readings(store_dir, tag_glob="nothing/*")) == []


def test_csv_and_jsonl(store_dir: Path) -> None:
    out = io.StringIO()
    assert write_csv(export_readings(store_dir), out) == 6
    lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert lines[0] == ["time", "ts_ns", "path", "value", "quality", "unit", "name", "reason"]
    assert lines[1] == [
        "2025-01-01T00:00:00.000000000Z",
        str(T0),
        "site/a/l1/press/speed",
        "1.0",
        "good",
        "",
        "",
        "",
    ]
    out = io.StringIO()
    assert write_jsonl(export_readings(store_dir), out) == 6
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    nan_row = records[4]
    assert nan_row["value"] is None and nan_row["quality"] == "bad"
    assert records[5]["time"] == "2025-01-01T00:00:04.000000000Z"


def test_a_missing_store_is_an_error_and_export_never_creates_one(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store here"):
        list(export_readings(tmp_path / "nope"))
    assert not (tmp_path / "nope").exists()


def test_parse_time() -> None:
    assert parse_time("2025-01-01T00:00:00Z") == T0
    assert parse_time("2025-01-01T01:00:00+01:00") == T0
    assert parse_time("2025-01-01T00:00:01.5Z") == T0 + 1_500_000_000
    assert parse_time("2025-01-01", tz=UTC) == T0
    assert parse_time("2025-01-01T02:00", tz=timezone(timedelta(hours=2))) == T0
    for bad in ("yesterday", "2025-13-01", ""):
        with pytest.raises(ValueError, match="not an ISO-8601 time"):
            parse_time(bad)


@pytest.mark.parametrize("tz", [None, UTC, timezone(timedelta(hours=14))])
def test_parse_time_clamps_to_the_store_range(tz: timezone | None) -> None:
    """Year 1 and year 9999 are outside what 64-bit nanoseconds hold (1677 to 2262); in a zone
    east of UTC, local midnight of year 1 is not even a date."""
    assert parse_time("0001-01-01", tz=tz) == TIME_MIN_NS
    assert parse_time("0001-01-01T00:00+14:00") == TIME_MIN_NS
    assert parse_time("9999-12-31T23:59:59", tz=tz) == TIME_MAX_NS
    assert parse_time("1677-09-21T00:12:43.145224192Z") == TIME_MIN_NS
    assert parse_time("1677-09-21T00:12:43.145225Z") == -9_223_372_036_854_775_000  # inside


def test_export_readings_clamps_the_range(store_dir: Path) -> None:
    assert len(list(export_readings(store_dir, start_ns=-(10**30), end_ns=10**30))) == 6


def test_rows_carry_the_unit_the_typed_value_and_the_code_name(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        ids = store.register_tags(
            [
                Tag.from_path("site/a/l1/press/force", unit="kN"),
                Tag.from_path("site/a/l1/press/state"),
                Tag.from_path("site/a/l1/press/temp", unit="degC"),
            ]
        )
    writer = StoreWriter(tmp_path)
    tag_ids = [ids["site/a/l1/press/force"], ids["site/a/l1/press/state"]]
    tag_ids.append(ids["site/a/l1/press/temp"])
    values = [806.864013671875, 6.0, 237 * 0.1]
    writer.submit_readings(ReadingBatch.from_columns("plc1", tag_ids, values, Quality.GOOD, T0))
    writer.close()
    labels = Labels(
        {
            "site/a/l1/press/force": SimpleNamespace(type="float32"),
            "site/a/l1/press/state": SimpleNamespace(type="uint16"),
            "site/a/l1/press/temp": SimpleNamespace(type="int16", scale=0.1),
        },
        CodeNames({"site/a/l1/press/state": {6: "Execute"}}),
    )
    out = io.StringIO()
    write_csv(export_readings(tmp_path), out, labels)
    lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert [line[2:] for line in lines[1:]] == [
        ["site/a/l1/press/force", "806.864", "good", "kN", "", ""],
        ["site/a/l1/press/state", "6", "good", "", "Execute", ""],
        ["site/a/l1/press/temp", "23.7", "good", "degC", "", ""],
    ]
    out = io.StringIO()
    write_jsonl(export_readings(tmp_path), out, labels)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["value"] for r in records] == [806.864, 6, 23.7]
    assert records[1]["name"] == "Execute" and "name" not in records[0]
    assert records[0]["unit"] == "kN"


def test_a_bad_row_gets_the_reason_its_source_had_at_its_time(tmp_path: Path) -> None:
    speed, count = "site/a/l1/press/speed", "site/a/l1/press/count"
    with Store(tmp_path) as store:
        ids = store.register_tags([Tag.from_path(speed), Tag.from_path(count)])
    writer = StoreWriter(tmp_path)
    tags = [ids[speed], ids[count]]
    for k in range(4):
        writer.submit_readings(
            ReadingBatch.from_columns("plc1", tags, [np.nan, 1.0], [2, 0], T0 + k * S)
        )
    timeout = {"source": "plc1", "bad": {speed: "timeout after 1s"}}
    address = {"source": "plc1", "bad": {speed: "illegal data address (02)"}}
    writer.submit_event(Event(EventKind.REASONS, T0 - S, None, timeout))
    writer.submit_event(Event(EventKind.REASONS, T0 + 2 * S, None, address))
    writer.submit_event(Event(EventKind.REASONS, T0 + 3 * S, None, {"source": "plc1", "bad": {}}))
    writer.close()
    rows = [r for r in export_readings(tmp_path) if r.path == speed]
    assert [r.reason for r in rows] == [
        "timeout after 1s",
        "timeout after 1s",
        "illegal data address (02)",
        "",  # the source said every tag reads good again
    ]
    assert all(r.reason == "" for r in export_readings(tmp_path) if r.path == count)

"""The MES body and idempotency key (pure), the 422 contract, and the HTTP sink's config keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config import load_config
from agent.errors import ConfigError, SinkRejected
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, GapRecord, Record, TelemetryRecord
from agent.tags import Tag
from connectors.http import payload
from connectors.http.config import HttpSinkConfig
from connectors.http.sink import rejected_index

T0 = 1_714_550_400_125_999_999  # 2024-05-01T08:00:00.125999999Z
TAGS = {
    1: Tag.from_path("suzhou/stamping/line-1/press1/speed", unit="spm"),
    2: Tag.from_path("suzhou/stamping/line-1/press1/state", unit=""),
}  # fmt: skip


def telemetry(seq: int, ts: int | list[int] = T0, historical: bool = False) -> TelemetryRecord:
    batch = ReadingBatch.from_columns("plc1", [1, 2], [42.5, float("nan")], [0, 2], ts)
    return TelemetryRecord(seq, batch, historical)


def decoded(records: list[Record], agent_id: str = "edge-1") -> Any:
    return json.loads(payload.body(agent_id, records, TAGS))


@pytest.mark.parametrize(
    ("ts_ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (T0, "2024-05-01T08:00:00.125Z"),  # floored, never rounded into the next ms
        (999_999, "1970-01-01T00:00:00.000Z"),
        (1_000_000, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_rfc3339_ms(ts_ns: int, text: str) -> None:
    assert payload.rfc3339_ms(np.array([ts_ns], dtype=np.int64)) == [text]


def test_telemetry_body_exact() -> None:
    assert decoded([telemetry(41), telemetry(42, [T0, T0 + 1_000_000], historical=True)]) == {
        "schema": "lineside.mes/2",
        "agent_id": "edge-1",
        "stream": "telemetry",
        "seq": [41, 42],
        "ts": ["2024-05-01T08:00:00.125Z", "2024-05-01T08:00:00.125Z"],
        "historical": [False, True],
        "source": ["plc1", "plc1"],
        "n": [2, 2],
        "tags": ["suzhou/stamping/line-1/press1/speed", "suzhou/stamping/line-1/press1/state"],
        "units": ["spm", ""],
        "tag": [0, 1, 0, 1],
        "value": [42.5, None, 42.5, None],  # NaN is not JSON
        "quality": [0, 2, 0, 2],
        # record 42 has a stamp per reading: then every reading has one
        "reading_ts": [
            "2024-05-01T08:00:00.125Z",
            "2024-05-01T08:00:00.125Z",
            "2024-05-01T08:00:00.125Z",
            "2024-05-01T08:00:00.126Z",
        ],
    }


def test_telemetry_body_read_back_as_records_by_a_mes() -> None:
    from tests.connectors.http.mes_server import records_of

    records = records_of(decoded([telemetry(41), telemetry(42, historical=True)]))
    assert [(r["seq"], r["historical"]) for r in records] == [(41, False), (42, True)]
    assert records[1]["readings"] == [
        {"path": "suzhou/stamping/line-1/press1/speed", "value": 42.5, "quality": "good",
         "unit": "spm", "ts": "2024-05-01T08:00:00.125Z"},
        {"path": "suzhou/stamping/line-1/press1/state", "value": None, "quality": "bad",
         "unit": "", "ts": "2024-05-01T08:00:00.125Z"},
    ]  # fmt: skip
    assert "reading_ts" not in decoded([telemetry(41)])


def test_uncertain_unknown_quality_and_empty_batch() -> None:
    batch = ReadingBatch.from_columns("plc1", [1, 2], [1.0, 2.0], [Quality.UNCERTAIN, 77], T0)
    empty = ReadingBatch.from_columns("plc1", [], [], Quality.GOOD, T0)
    document = decoded([TelemetryRecord(1, batch), TelemetryRecord(2, empty)])
    assert document["quality"] == [1, 2]  # 77 is no quality we know: bad, never good
    assert document["n"] == [2, 0] and document["seq"] == [1, 2]
    assert document["ts"] == ["2024-05-01T08:00:00.125Z"] * 2


def test_columnar_records_from_the_store_give_the_same_body(tmp_path: Path) -> None:
    from agent.lane import read_records
    from agent.store import Store, StoreWriter

    with Store(tmp_path) as store:
        ids = store.register_tags(
            Tag(path=m.path, machine=m.machine, name=m.name, unit=m.unit) for m in TAGS.values()
        )
    assert sorted(ids.values()) == [1, 2]  # the store gives the ids TAGS uses
    writer = StoreWriter(tmp_path)
    for k in range(4):
        stamps: int | list[int] = T0 + k if k != 2 else [T0, T0 + 1_000_000]
        writer.submit_readings(
            ReadingBatch.from_columns("plc1", [1, 2], [k, k + 0.5], [0, 1], stamps)
        )
    assert writer.flush_blocking(10)
    writer.close()
    with Store(tmp_path) as store:
        columns = read_records(store, "telemetry", 0, 10)
    one_by_one = list(columns)
    assert payload.body("edge-1", columns, TAGS) == payload.body("edge-1", one_by_one, TAGS)
    assert payload.body("edge-1", columns[1:3], TAGS) == payload.body(
        "edge-1", one_by_one[1:3], TAGS
    )


def test_event_and_gap_bodies_exact() -> None:
    event = Event(
        EventKind.STATE, T0, "press1", {"from": "idle", "to": "execute", "n": np.int64(3)}
    )
    assert decoded([EventRecord(7, event)])["records"] == [
        {
            "stream": "events",
            "seq": 7,
            "ts": "2024-05-01T08:00:00.125Z",
            "historical": False,
            "kind": "state",
            "machine": "press1",
            "data": {"from": "idle", "to": "execute", "n": 3},
        }
    ]
    gap = GapRecord(3, "telemetry", 10, 19, 10, 400, T0, "store full", historical=True)
    assert decoded([gap]) == {
        "schema": "lineside.mes/2",
        "agent_id": "edge-1",
        "stream": "gaps",
        "records": [
            {
                "stream": "gaps",
                "seq": 3,
                "ts": "2024-05-01T08:00:00.125Z",
                "historical": True,
                "of_stream": "telemetry",
                "first_seq": 10,
                "last_seq": 19,
                "count": 10,
                "readings": 400,
                "reason": "store full",
            }
        ],
    }


def test_idempotency_key_is_stable_and_names_the_range() -> None:
    records: list[Record] = [telemetry(41), telemetry(42), telemetry(45)]
    assert payload.idempotency_key("edge-1", records) == "edge-1:telemetry:41-45"
    assert payload.idempotency_key("edge-1", records[:1]) == "edge-1:telemetry:41-41"
    assert payload.idempotency_key("edge-1", list(records)) == "edge-1:telemetry:41-45"
    with pytest.raises(ValueError, match="empty batch"):
        payload.idempotency_key("edge-1", [])


def test_unknown_tag_is_refused_by_index() -> None:
    stray = TelemetryRecord(9, ReadingBatch.from_columns("plc1", [1, 77], [1, 2], Quality.GOOD, T0))
    with pytest.raises(SinkRejected, match="seq 9: tag id 77 is not in the tag table") as caught:
        payload.body("edge-1", [telemetry(8), stray], TAGS)
    assert caught.value.index == 1


def test_event_data_that_is_not_json_is_refused_by_index() -> None:
    good = EventRecord(1, Event(EventKind.ALARM, T0, "press1", {"code": 12}))
    bad = EventRecord(2, Event(EventKind.ALARM, T0, "press1", {"blob": object()}))
    with pytest.raises(SinkRejected, match="events seq 2: data is not JSON") as caught:
        payload.body("edge-1", [good, good, bad], TAGS)
    assert caught.value.index == 2


def test_batches_that_break_the_contract() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        payload.body("edge-1", [], TAGS)
    gap = GapRecord(3, "telemetry", 1, 2, 2, 4, T0, "x")
    with pytest.raises(ValueError, match="one batch, one stream: got 'telemetry' and 'gaps'"):
        payload.body("edge-1", [telemetry(1), gap], TAGS)


@pytest.mark.parametrize(
    ("status", "content", "length", "index"),
    [
        (422, b'{"rejected": [3]}', 5, 3),
        (422, b'{"rejected": [4, 2]}', 5, 2),  # the first refused record in the batch
        (422, b'{"rejected": [0]}', 1, 0),
        (422, b'{"rejected": [5]}', 5, None),  # out of range: the batch as a whole
        (422, b'{"rejected": [-1]}', 5, None),
        (422, b'{"rejected": [true]}', 5, None),  # JSON true is not index 1
        (422, b'{"rejected": ["3"]}', 5, None),
        (422, b'{"rejected": []}', 5, None),
        (422, b'{"rejected": 3}', 5, None),
        (422, b"[3]", 5, None),
        (422, b"not json", 5, None),
        (422, b"", 5, None),
        (400, b'{"rejected": [3]}', 5, None),  # only 422 names records
    ],
)
def test_rejected_index(status: int, content: bytes, length: int, index: int | None) -> None:
    assert rejected_index(status, content, length) == index


# --- config keys ----------------------------------------------------------------------------

HEAD = (
    'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
    '[[machines]]\nname = "press1"\narea = "stamping"\nline = "line-1"\n'
    '[[sources]]\nname = "plc1"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
    '[[sources.units]]\nunit_id = 1\nmachine = "press1"\n'
    '[[sources.units.tags]]\nname = "state"\naddress = "hr:0"\n'
    '[[sinks]]\nname = "mes"\ntype = "http"\nurl = "https://mes.local/api"\n'
)


def load_sink(tmp_path: Path, extra: str) -> HttpSinkConfig:
    path = tmp_path / "lineside.toml"
    path.write_text(HEAD + extra, encoding="utf-8")
    sink = load_config(path).sinks_by_name["mes"]
    assert isinstance(sink, HttpSinkConfig)
    return sink


def test_config_defaults_verify_tls(tmp_path: Path) -> None:
    sink = load_sink(tmp_path, "")
    assert sink.verify is True and sink.ca_file is None
    assert sink.token_env is None and sink.username is None
    assert sink.batch_size == 500 and sink.timeout == 10.0


def test_config_basic_auth_and_ca_file(tmp_path: Path) -> None:
    sink = load_sink(
        tmp_path, 'username = "line"\npassword_file = "mes.pw"\nca_file = "certs/mes-ca.pem"\n'
    )
    assert sink.username == "line"
    assert sink.password_file == tmp_path / "mes.pw"  # next to the config file
    assert sink.ca_file == tmp_path / "certs/mes-ca.pem"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'token_env = "T"\nusername = "u"\npassword_env = "P"\n',
            "sinks[0].token_env: use either token_env or username (basic auth), not both",
        ),
        (
            'username = "u"\n',
            "sinks[0].password_env: basic auth needs password_env or password_file",
        ),
        (
            'username = "u"\npassword = "hunter2"\n',
            "sinks[0].password: a password in the config file is refused: "
            "use password_env (an environment variable) or password_file",
        ),
        ('password_env = "P"\n', "sinks[0].username: a password is set but no username"),
        (
            'verify = false\nca_file = "ca.pem"\n',
            "sinks[0].ca_file: ca_file is only used when verify is true",
        ),
        ('verify = "no"\n', "sinks[0].verify: expected true or false, got 'no'"),
    ],
)
def test_bad_config_keys(tmp_path: Path, extra: str, expected: str) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(HEAD + extra, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p).removeprefix(f"{path}: ") for p in caught.value.problems] == [expected]

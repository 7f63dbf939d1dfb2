"""UNS topics and JSON payloads, table-driven: records in, exact topics and payloads out."""

from __future__ import annotations

import base64
import math
from dataclasses import replace
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.codenames import CodeNames
from agent.model import DataType, Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, GapRecord, Record, TelemetryRecord
from agent.tags import Tag
from agent.values import plain
from connectors.mqtt.payload import (
    QUALITY_NAMES,
    Message,
    PayloadError,
    UnsLayout,
    binary_tags,
    binary_values,
)

T0 = 1_717_000_000_123_456_789  # ns
T0_MS = 1_717_000_000_123

TAGS = {
    1: Tag.from_path("plant1/press/line1/press1/die_temp", unit="°C"),
    2: Tag.from_path("plant1/press/line1/press1/strokes", unit=""),
    7: Tag.from_path("plant1/weaving/line2/loom1/speed", unit="rpm"),
}  # fmt: skip
PRESS = "uns/plant1/press/line1/press1"
LOOM = "uns/plant1/weaving/line2/loom1"
AGENT = "uns/plant1/_agent/edge-7"


def layout() -> UnsLayout:
    return UnsLayout("uns", "edge-7", TAGS)


def batch(
    ids: list[int], values: list[float], quality: list[int], ts: int | list[int] = T0
) -> ReadingBatch:
    return ReadingBatch.from_columns("press1-plc", ids, values, quality, ts)


def decoded(messages: list[Message]) -> list[tuple[str, dict[str, Any], int, bool]]:
    return [(m.topic, orjson.loads(m.payload), m.index, m.retain) for m in messages]


def head(stream: str, seq: int, ts: int = T0_MS, historical: bool = False) -> dict[str, Any]:
    return {"agent_id": "edge-7", "stream": stream, "seq": seq, "ts": ts, "historical": historical}


CASES: list[tuple[str, list[Record], list[tuple[str, dict[str, Any], int, bool]]]] = [
    (
        "one machine, one timestamp",
        [TelemetryRecord(17, batch([1, 2], [61.2, 1040.0], [0, 0]))],
        [
            (
                f"{PRESS}/telemetry",
                {
                    **head("telemetry", 17),
                    "values": {
                        "die_temp": {"value": 61.2, "quality": "good", "unit": "°C"},
                        "strokes": {"value": 1040.0, "quality": "good", "unit": ""},
                    },
                },
                0,
                False,
            )
        ],
    ),
    (
        "a batch over two machines: one message each, same record index",
        [TelemetryRecord(3, batch([7, 1], [120.5, 60.0], [0, 1]), historical=True)],
        [
            (
                f"{LOOM}/telemetry",
                {
                    **head("telemetry", 3, historical=True),
                    "values": {"speed": {"value": 120.5, "quality": "good", "unit": "rpm"}},
                },
                0,
                False,
            ),
            (
                f"{PRESS}/telemetry",
                {
                    **head("telemetry", 3, historical=True),
                    "values": {"die_temp": {"value": 60.0, "quality": "uncertain", "unit": "°C"}},
                },
                0,
                False,
            ),
        ],
    ),
    (
        "per-row timestamps go on each value; NaN and infinity become null",
        [
            TelemetryRecord(
                4,
                batch([1, 2], [math.nan, math.inf], [2, 0], [T0, T0 + 5_000_000]),
            )
        ],
        [
            (
                f"{PRESS}/telemetry",
                {
                    **head("telemetry", 4),
                    "values": {
                        "die_temp": {"value": None, "quality": "bad", "unit": "°C", "ts": T0_MS},
                        "strokes": {"value": None, "quality": "good", "unit": "", "ts": T0_MS + 5},
                    },
                },
                0,
                False,
            )
        ],
    ),
    ("an empty batch sends nothing", [TelemetryRecord(5, batch([], [], []))], []),
    (
        "machine event under its machine; agent event and unknown machine under the agent",
        [
            EventRecord(8, Event(EventKind.STATE, T0, "press1", {"state": "execute"})),
            EventRecord(9, Event(EventKind.CONNECTION, T0, None, {"source": "press1-plc"})),
            EventRecord(10, Event(EventKind.ALARM, T0, "nowhere", {"code": 3})),
        ],
        [
            (
                f"{PRESS}/event/state",
                {
                    **head("events", 8),
                    "kind": "state",
                    "machine": "press1",
                    "data": {"state": "execute"},
                },
                0,
                False,
            ),
            (
                f"{AGENT}/event/connection",
                {
                    **head("events", 9),
                    "kind": "connection",
                    "machine": None,
                    "data": {"source": "press1-plc"},
                },
                1,
                False,
            ),
            (
                f"{AGENT}/event/alarm",
                {**head("events", 10), "kind": "alarm", "machine": "nowhere", "data": {"code": 3}},
                2,
                False,
            ),
        ],
    ),
    (
        "gap record under the agent",
        [GapRecord(2, "telemetry", 100, 149, 50, 500, T0, "store full", historical=True)],
        [
            (
                f"{AGENT}/gap",
                {
                    **head("gaps", 2, historical=True),
                    "of_stream": "telemetry",
                    "first_seq": 100,
                    "last_seq": 149,
                    "count": 50,
                    "readings": 500,
                    "reason": "store full",
                },
                0,
                False,
            )
        ],
    ),
]


@pytest.mark.parametrize(("records", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_messages(records: list[Record], expected: list[Any]) -> None:
    assert decoded(layout().messages(records)) == expected


def test_retained_last_values_take_the_latest_good_finite_value_per_tag() -> None:
    records: list[Record] = [
        TelemetryRecord(1, batch([1, 2, 7], [50.0, 10.0, 99.0], [0, 0, 0])),
        EventRecord(2, Event(EventKind.STATE, T0, "press1")),
        TelemetryRecord(3, batch([1, 2], [55.0, 11.0], [2, 0], T0 + 1_000_000_000)),  # 1: bad
        TelemetryRecord(4, batch([1, 7], [56.0, math.nan], [1, 0], T0 + 2_000_000_000)),
    ]
    got = decoded(layout().last_values(records))
    assert got == [
        (f"{PRESS}/telemetry/die_temp",
         {**head("telemetry", 1), "value": 50.0, "quality": "good", "unit": "°C"}, 0, True),
        (f"{PRESS}/telemetry/strokes",
         {**head("telemetry", 3, T0_MS + 1000), "value": 11.0, "quality": "good", "unit": ""},
         2, True),
        (f"{LOOM}/telemetry/speed",
         {**head("telemetry", 1), "value": 99.0, "quality": "good", "unit": "rpm"}, 0, True),
    ]  # fmt: skip
    # messages(retain_last=True) appends them after the records' own messages
    all_messages = layout().messages(records, retain_last=True)
    assert [m.retain for m in all_messages] == [False] * 6 + [
        True
    ] * 3  # record 1 spans two machines
    assert layout().last_values([TelemetryRecord(1, batch([1], [1.0], [2]))]) == []


def _tag(name: str, unit: str, type: DataType) -> Tag:
    return replace(Tag.from_path(f"p/a/l/m/{name}", unit=unit), type=type)


def test_values_go_in_their_type_and_codes_with_their_name() -> None:
    typed = {
        1: Tag(
            path="p/a/l/m/state",
            site="p",
            area="a",
            line="l",
            machine="m",
            name="state",
            unit="",
            type="uint16",
        ),
        2: Tag(
            path="p/a/l/m/force",
            site="p",
            area="a",
            line="l",
            machine="m",
            name="force",
            unit="kN",
            type="float32",
        ),
        3: Tag(
            path="p/a/l/m/running",
            site="p",
            area="a",
            line="l",
            machine="m",
            name="running",
            unit="",
            type="bool",
        ),
    }
    names = CodeNames({"p/a/l/m/state": {6: "Execute"}})
    records: list[Record] = [
        TelemetryRecord(5, batch([1, 2, 3], [6.0, 806.864013671875, 1.0], [0, 0, 0]))
    ]
    got = decoded(UnsLayout("uns", "edge-7", typed, names=names).messages(records))
    assert got == [
        (
            "uns/p/a/l/m/telemetry",
            {
                **head("telemetry", 5),
                "values": {
                    "state": {"value": 6, "quality": "good", "unit": "", "name": "Execute"},
                    "force": {"value": 806.864, "quality": "good", "unit": "kN"},
                    "running": {"value": True, "quality": "good", "unit": ""},
                },
            },
            0,
            False,
        )
    ]
    assert b'"value":6,' in UnsLayout("uns", "e", typed, names=names).messages(records)[0].payload
    (state, _, _) = decoded(UnsLayout("uns", "edge-7", typed, names=names).last_values(records))
    assert state[1]["name"] == "Execute" and state[1]["value"] == 6


def test_unknown_tag_names_its_record() -> None:
    records: list[Record] = [
        TelemetryRecord(1, batch([1], [1.0], [0])),
        TelemetryRecord(2, batch([1, 99], [1.0, 2.0], [0, 0])),
    ]
    with pytest.raises(PayloadError, match="tag id 99 is not in the tag table") as caught:
        layout().messages(records)
    assert caught.value.index == 1


def test_event_data_that_is_not_json_names_its_record() -> None:
    records: list[Record] = [
        EventRecord(1, Event(EventKind.KPI, T0, "press1", {"oee": 0.8})),
        EventRecord(2, Event(EventKind.KPI, T0, "press1", {"window": object()})),
    ]
    with pytest.raises(PayloadError, match="cannot be encoded as JSON") as caught:
        layout().messages(records)
    assert caught.value.index == 1


def test_numpy_scalars_in_event_data_are_plain_numbers() -> None:
    import numpy as np

    record = EventRecord(1, Event(EventKind.KPI, T0, "press1", {"good": np.int64(5)}))
    (message,) = layout().messages([record])
    assert orjson.loads(message.payload)["data"] == {"good": 5}


def test_agent_site_and_prefix() -> None:
    assert UnsLayout("uns", "a1", {}).agent_topic == "uns/_/_agent/a1"
    two_sites = {
        1: Tag.from_path("s2/a/l/m/t", unit=""),
        2: Tag.from_path("s1/a/l/m/t", unit=""),
        3: Tag.from_path("s1/a/l/n/t", unit=""),
    }
    assert UnsLayout("p/q", "a1", two_sites).gap_topic == "p/q/s1/_agent/a1/gap"


def test_quality_names_cover_every_byte() -> None:
    assert QUALITY_NAMES[Quality.GOOD] == "good"
    assert QUALITY_NAMES[Quality.UNCERTAIN] == "uncertain"
    assert QUALITY_NAMES[Quality.BAD] == "bad"
    assert QUALITY_NAMES[200] == "bad"  # not a quality we know: never reported as good
    assert len(QUALITY_NAMES) == 256


# ---------------------------------------------------------------------------------------------
# Batch messages: many records of a machine, columnar


def batch_head(seqs: list[int], historical: list[bool] | None = None) -> dict[str, Any]:
    return {
        "agent_id": "edge-7",
        "stream": "telemetry",
        "seq": seqs,
        "historical": historical if historical is not None else [False] * len(seqs),
    }


BATCH = f"{AGENT}/telemetry/_batch"
PRESS_TAGS = {
    "tags": ["plant1/press/line1/press1/die_temp", "plant1/press/line1/press1/strokes"],
    "units": ["°C", ""],
}


def test_batch_is_one_columnar_message_under_the_agent() -> None:
    records: list[Record] = [
        TelemetryRecord(41, batch([1, 2], [61.2, 1040.0], [0, 0])),
        TelemetryRecord(42, batch([2, 1], [1041.0, math.nan], [0, 2], T0 + 100_000_000), True),
    ]
    assert decoded(layout().batch_messages(records)) == [
        (
            BATCH,
            {
                **batch_head([41, 42], [False, True]),
                "ts": [T0_MS, T0_MS + 100],
                "n": [2, 2],
                **PRESS_TAGS,
                "tag": [0, 1, 1, 0],
                "value": [61.2, 1040.0, 1041.0, None],
                "quality": [0, 0, 0, 2],
            },
            0,
            False,
        )
    ]


def test_batch_over_two_machines_keeps_the_records_in_seq_order() -> None:
    records: list[Record] = [
        TelemetryRecord(1, batch([7], [120.0], [0])),
        TelemetryRecord(2, batch([7, 2], [120.5, 2.0], [1, 200])),  # 200: no quality we know
        TelemetryRecord(3, batch([1], [121.0], [0])),
    ]
    assert decoded(layout().batch_messages(records)) == [
        (
            BATCH,
            {**batch_head([1, 2, 3]), "ts": [T0_MS] * 3, "n": [1, 2, 1],
             "tags": [*PRESS_TAGS["tags"], "plant1/weaving/line2/loom1/speed"],
             "units": ["°C", "", "rpm"],
             "tag": [2, 2, 1, 0], "value": [120.0, 120.5, 2.0, 121.0], "quality": [0, 1, 2, 0]},
            0,
            False,
        ),
    ]  # fmt: skip


def test_batch_with_per_reading_timestamps_carries_them() -> None:
    records: list[Record] = [
        TelemetryRecord(5, batch([1, 2], [1.0, 2.0], [0, 0], [T0, T0 + 5_000_000])),
        TelemetryRecord(6, batch([1], [3.0], [0], T0 + 9_000_000)),
    ]
    (message,) = layout().batch_messages(records)
    body = orjson.loads(message.payload)
    assert body["reading_ts"] == [T0_MS, T0_MS + 5, T0_MS + 9]
    assert body["ts"] == [T0_MS, T0_MS + 9]


def test_columnar_records_encode_exactly_as_the_same_records_one_by_one(tmp_path: Any) -> None:
    from agent.lane import read_records
    from agent.sink import TelemetryRecords
    from agent.store import Store, StoreWriter

    with Store(tmp_path) as store:
        ids = store.register_tags(
            Tag(path=meta.path, machine=meta.machine, name=meta.name, unit=meta.unit)
            for meta in TAGS.values()
        )
    writer = StoreWriter(tmp_path)
    by_path = {meta.path: tag_id for tag_id, meta in TAGS.items()}
    order = [ids[meta.path] for meta in TAGS.values()]
    assert order == sorted(order)
    for k in range(5):
        stamps: int | list[int] = T0 + k if k != 3 else [T0 + k, T0 + k + 1_000_000]
        named = [1, 2] if k != 4 else [7]
        assert writer.submit_readings(
            ReadingBatch.from_columns(
                "plc", [ids[TAGS[t].path] for t in named], [k * 1.5] * len(named),
                [0] * len(named), stamps,
            )
        )  # fmt: skip
    assert writer.flush_blocking(10)
    writer.close()
    # the store's ids are the TAGS ids remapped: a layout over the store's ids
    tags = {ids[meta.path]: meta for meta in TAGS.values()}
    assert set(by_path) == {meta.path for meta in tags.values()}
    store_layout = UnsLayout("uns", "edge-7", tags)
    with Store(tmp_path) as store:
        columns = read_records(store, "telemetry", 0, 10)
    assert isinstance(columns, TelemetryRecords) and len(columns) == 5
    one_by_one = list(columns)
    assert [r.seq for r in one_by_one] == [1, 2, 3, 4, 5]
    assert store_layout.batch_messages(columns) == store_layout.batch_messages(one_by_one)
    assert store_layout.batch_messages(columns[1:4]) == store_layout.batch_messages(one_by_one[1:4])


def test_batch_refuses_unknown_tags_and_other_streams_naming_the_record() -> None:
    records: list[Record] = [
        TelemetryRecord(1, batch([1], [1.0], [0])),
        TelemetryRecord(2, batch([2, 99], [1.0, 2.0], [0, 0])),
    ]
    with pytest.raises(PayloadError, match="tag id 99 is not in the tag table") as caught:
        layout().batch_messages(records)
    assert caught.value.index == 1
    mixed: list[Record] = [records[0], EventRecord(3, Event(EventKind.STATE, T0, "press1"))]
    with pytest.raises(PayloadError, match="only telemetry") as caught:
        layout().batch_messages(mixed)
    assert caught.value.index == 1
    assert layout().batch_messages([TelemetryRecord(5, batch([], [], []))]) == []


def test_uniform_records_with_an_unknown_tag_name_the_first_record() -> None:
    # Every record names the same tags: the tag index is worked out on the first record alone.
    records: list[Record] = [TelemetryRecord(s, batch([2, 99], [1.0, 2.0], [0, 0])) for s in (1, 2)]
    with pytest.raises(PayloadError, match="tag id 99 is not in the tag table") as caught:
        layout().batch_messages(records)
    assert caught.value.index == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from([1, 2, 7]), min_size=0, max_size=4),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_tag_index_matches_a_plain_lookup(id_lists: list[list[int]], uniform: bool) -> None:
    if uniform:  # the repeated-tags case, common in a backlog, taken by a shortcut
        id_lists = [id_lists[0]] * len(id_lists)
    records: list[Record] = [
        TelemetryRecord(seq, batch(ids, [0.0] * len(ids), [0] * len(ids)))
        for seq, ids in enumerate(id_lists, start=1)
    ]
    messages = layout().batch_messages(records)
    flat = [i for ids in id_lists for i in ids]
    if not flat:
        assert messages == []
        return
    body = orjson.loads(messages[0].payload)
    used = sorted(set(flat))
    assert body["tags"] == [TAGS[i].path for i in used]
    assert body["tag"] == [used.index(i) for i in flat]


VALUES_CASES = [
    # (values, asked, sent as, decoded: same as the values, bit for bit)
    ([0.5, -2.0, 2.0**100, -0.0], "f32le-base64", "f32le-base64"),
    ([0.5, 0.1], "f32le-base64", "f64le-base64"),  # 0.1 is not a float32: the column goes f64
    ([16_777_217.0], "f32le-base64", "f64le-base64"),  # an int32 past 2**24
    ([1e300], "f32le-base64", "f64le-base64"),  # overflows float32
    ([math.nan, math.inf, -math.inf, 3.0], "f32le-base64", "f32le-base64"),
    ([0.1, math.nan, 1e300], "f64le-base64", "f64le-base64"),
    ([], "f64le-base64", "f64le-base64"),
]


@pytest.mark.parametrize(("values", "asked", "sent_as"), VALUES_CASES)
def test_binary_values_round_trip_exactly(values: list[float], asked: str, sent_as: str) -> None:
    used, text = binary_values(np.array(values, dtype=np.float64), asked)  # type: ignore[arg-type]
    assert used == sent_as
    dtype = {"f32le-base64": "<f4", "f64le-base64": "<f8"}[used]
    back = np.frombuffer(base64.b64decode(text), dtype=dtype).astype(np.float64)
    assert back.tobytes() == np.array(values, dtype=np.float64).tobytes()


def test_binary_values_refuse_json() -> None:
    with pytest.raises(ValueError, match="not json"):
        binary_values(np.zeros(2), "json")


def test_a_binary_batch_says_how_its_values_are_written() -> None:
    records: list[Record] = [TelemetryRecord(41, batch([1, 2], [61.25, 1040.0], [0, 0]))]
    json_body = orjson.loads(layout().batch_messages(records)[0].payload)
    body = orjson.loads(layout().batch_messages(records, "f32le-base64")[0].payload)
    assert "value_encoding" not in json_body  # the JSON form is unchanged
    assert body.pop("value_encoding") == "f32le-base64"
    assert base64.b64decode(body.pop("value")) == np.array([61.25, 1040.0], "<f4").tobytes()
    # The small integer columns go binary with the values: one byte a tag index, a quality.
    assert (body.pop("tag_encoding"), body.pop("quality_encoding")) == ("u8-base64", "u8-base64")
    assert base64.b64decode(body.pop("tag")) == bytes(json_body.pop("tag")) == b"\0\1"
    assert base64.b64decode(body.pop("quality")) == bytes(json_body.pop("quality")) == b"\0\0"
    json_body.pop("value")
    assert body == json_body  # every other column as in the JSON form


@pytest.mark.parametrize(
    ("tags", "encoding", "dtype"),
    [
        (1, "u8-base64", "u1"),
        (256, "u8-base64", "u1"),
        (257, "u16le-base64", "<u2"),
        (65_536, "u16le-base64", "<u2"),
        (65_537, "u32le-base64", "<u4"),
    ],
)
def test_binary_tags_take_the_narrowest_width_that_holds_every_index(
    tags: int, encoding: str, dtype: str
) -> None:
    index = np.array([0, tags - 1, tags // 2, 0], dtype=np.int64)
    used, text = binary_tags(index, tags)
    assert used == encoding
    assert np.frombuffer(base64.b64decode(text), dtype=dtype).tolist() == index.tolist()


def test_binary_tags_refuse_more_tags_than_32_bits_count() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        binary_tags(np.zeros(1, dtype=np.int64), (1 << 32) + 1)


# -- live messages: values shaped a whole record at a time, as `agent/values.py` one by one --

EDGES = [0.0, -0.0, 806.864013671875, 0.1, 1e-45, 1.17e-38, 3.4028234663852886e38, 1e39,
         16777217.0, -123456.789, math.nan, math.inf, -math.inf, 2.5]  # fmt: skip


def wire(value: object) -> Any:
    """`value` as a message carries it (JSON: a non-finite float is null)."""
    return orjson.loads(orjson.dumps(value))


@pytest.mark.parametrize("kind", ["float32", "float64", "int16", "bool"])
def test_live_values_are_shaped_as_one_value_at_a_time(kind: str) -> None:
    tags = {
        i + 1: replace(Tag.from_path(f"p/a/l/m/t{i}"), id=i + 1, type=kind)  # type: ignore[arg-type]
        for i in range(len(EDGES))
    }
    values = EDGES if kind.startswith("float") else [float(i % 3) for i in range(len(EDGES))]
    record = TelemetryRecord(1, batch(list(tags), values, [0] * len(values)))
    [message] = UnsLayout("uns", "edge-7", tags).messages([record])
    sent = orjson.loads(message.payload)["values"]
    with np.errstate(over="ignore"):  # 1e39 is no float32: inf, sent as null
        expected = {tags[i + 1].name: wire(plain(v, tags[i + 1])) for i, v in enumerate(values)}
    assert {name: entry["value"] for name, entry in sent.items()} == expected


def test_a_record_of_mixed_types_machines_and_times_is_shaped_tag_by_tag() -> None:
    tags = {
        1: replace(Tag.from_path("p/a/l/m1/f32"), id=1, type="float32"),
        2: replace(Tag.from_path("p/a/l/m1/f64"), id=2),
        3: replace(Tag.from_path("p/a/l/m2/count"), id=3, type="int16", scale=0.1),
        4: replace(Tag.from_path("p/a/l/m2/state"), id=4, type="int16"),
    }
    names = CodeNames({"p/a/l/m2/state": {6: "Execute"}})
    ts = [T0, T0 + 1_000_000, T0 + 2_000_000, T0 + 3_000_000]
    record = TelemetryRecord(3, batch([1, 2, 3, 4], [806.864013671875, 0.1, 23.700000000000003, 6],
                                      [0, 1, 0, 2], ts))  # fmt: skip
    out = decoded(UnsLayout("uns", "e", tags, names=names).messages([record]))
    assert [(topic, body["values"]) for topic, body, _, _ in out] == [
        ("uns/p/a/l/m1/telemetry",
         {"f32": {"value": 806.864, "quality": "good", "unit": "", "ts": T0_MS},
          "f64": {"value": 0.1, "quality": "uncertain", "unit": "", "ts": T0_MS + 1}}),
        ("uns/p/a/l/m2/telemetry",
         {"count": {"value": 23.7, "quality": "good", "unit": "", "ts": T0_MS + 2},
          "state": {"value": 6, "quality": "bad", "unit": "", "ts": T0_MS + 3,
                    "name": "Execute"}}),
    ]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32), min_size=1, max_size=20))
def test_float32_values_go_as_their_shortest_decimal(values: list[float]) -> None:
    tags = {
        i + 1: replace(Tag.from_path(f"p/a/l/m/t{i}"), id=i + 1, type="float32")
        for i in range(len(values))
    }
    record = TelemetryRecord(1, batch(list(tags), values, [0] * len(values)))
    [message] = UnsLayout("uns", "e", tags).messages([record])
    sent = orjson.loads(message.payload)["values"]
    assert [sent[tags[i + 1].name]["value"] for i in range(len(values))] == [
        wire(plain(v, tags[i + 1])) for i, v in enumerate(values)
    ]


def dict_payload(
    record: TelemetryRecord, tags: dict[int, Tag], names: CodeNames | None = None
) -> dict[str, bytes]:
    """A record's payloads as `orjson.dumps` of its dicts, by topic: the reference text (a
    coded value's name after its unit, a reading's own time last when it has one)."""
    groups: dict[str, dict[str, Any]] = {}
    stamps = record.batch.timestamps().tolist() if record.batch.ts_ns.shape[0] > 1 else None
    for row, (tag_id, value, quality) in enumerate(
        zip(
            record.batch.tag_ids.tolist(),
            record.batch.values.tolist(),
            record.batch.quality.tolist(),
            strict=True,
        )
    ):
        tag = tags[tag_id]
        topic = "uns/" + tag.path.rsplit("/", 1)[0] + "/telemetry"
        with np.errstate(over="ignore"):
            entry = {
                "value": plain(value, tag),
                "quality": QUALITY_NAMES[quality],
                "unit": tag.unit,
            }
        codes = (names or CodeNames()).tables.get(tag.path)
        whole = math.isfinite(value) and value == int(value)
        if codes is not None and whole and int(value) in codes:
            entry["name"] = codes[int(value)]
        if stamps is not None:
            entry["ts"] = stamps[row] // 1_000_000
        groups.setdefault(topic, {})[tag.name] = entry
    head = {"agent_id": "e", "stream": "telemetry", "seq": record.seq, "ts": T0_MS,
            "historical": record.historical}  # fmt: skip
    return {topic: orjson.dumps({**head, "values": group}) for topic, group in groups.items()}


# Magnitudes where orjson prints a float32 in another style than a float64 (1e-6..1e-5,
# 9e12..2e16), their edges, and the other edges of float32.
STYLE_EDGES = [6.3184107e-6, -6.3184107e-6, 9.5e-7, 1.1e-5, 6843686000000000.0, 8.7e12,
               1.9e16, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -0.0, 0.0, 1e39, math.nan,
               math.inf, 2.0**24 + 2, 1e13, 1e-7]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(width=32), st.sampled_from(STYLE_EDGES)),
            st.sampled_from([0, 0, 0, 1, 2, 77]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=1, max_value=3),
    st.sampled_from(["path", "machine", "shuffled"]),
    st.booleans(),
)
def test_live_payloads_are_the_text_orjson_gives_their_dicts(
    readings: list[tuple[float, int]], machines: int, order: str, some: bool
) -> None:
    """Live messages are written as bytes, not dicts: byte for byte what the dicts give, for
    every float32, quality, machine order and name that needs escaping, whether a record holds
    all of a machine's tags in its order (its template as it is), some (a deadband held the
    others) or all in another order."""
    tags = {
        i + 1: replace(
            Tag.from_path(f'p/a/l/m{i % machines}/t"%s{i}é', unit="%d°C" if i % 2 else ""),
            id=i + 1,
            type="float32",
        )
        for i in range(len(readings))
    }
    ids = list(tags)
    if order == "path":  # a merged poll: each machine's tags together
        ids.sort(key=lambda i: tags[i].path)
    elif order == "machine":  # each machine's tags together in id order (one poll of each)
        ids.sort(key=lambda i: (tags[i].machine, i))
    if some:
        ids = ids[::2]
    layout = UnsLayout("uns", "e", tags)
    # A record of the same tags again takes the kept plan, and one of other tags (another
    # order, or fewer) does not: one layout writes them all.
    for seq, named in enumerate((ids, ids, ids[::-1], ids[1:] or ids, ids), start=1):
        values = [readings[i - 1][0] for i in named]
        quality = [readings[i - 1][1] for i in named]
        record = TelemetryRecord(seq, batch(named, values, quality))
        out = layout.messages([record])
        assert {m.topic: m.payload for m in out} == dict_payload(record, tags)
        assert [m.topic for m in out] == list(dict_payload(record, tags))


def test_a_tag_twice_in_a_record_keeps_its_first_place_and_last_value() -> None:
    tags = {i: replace(Tag.from_path(f"p/a/l/m/t{i}"), id=i, type="float32") for i in (1, 2)}
    record = TelemetryRecord(1, batch([1, 2, 1], [1.5, 2.5, 3.5], [0, 0, 0]))
    [message] = UnsLayout("uns", "e", tags).messages([record])
    assert message.payload == dict_payload(record, tags)["uns/p/a/l/m/telemetry"]
    assert list(orjson.loads(message.payload)["values"]) == ["t1", "t2"]


# Declared types of the tags of a mixed record, with the scale of a scaled integer.
MIXED_TYPES = [("float32", 1.0), ("float64", 1.0), ("int16", 1.0), ("uint32", 1.0),
               ("bool", 1.0), ("int16", 0.1), ("int32", 0.25)]  # fmt: skip
# Values an integer or boolean tag may hold: whole, fractions a config scaled, signed zeros,
# past int64, not finite.
MIXED_EDGES = [0.0, -0.0, 1.0, 2.0, -7.0, 65535.0, 23.700000000000003, 0.5, -2.5, 2.0**53,
               2.0**63, -(2.0**63), 2.0**62, 1e18, 1e-300, math.nan, math.inf,
               -math.inf]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(MIXED_TYPES),
            st.one_of(
                st.floats(width=32),
                st.floats(min_value=-1e6, max_value=1e6).map(round),
                st.sampled_from(MIXED_EDGES + STYLE_EDGES),
            ),
            st.sampled_from([0, 0, 0, 1, 2, 77]),
            st.booleans(),  # coded (with a name for 0, 1 and 2)
        ),
        min_size=1,
        max_size=16,
    ),
    st.integers(min_value=1, max_value=3),
    st.booleans(),
    st.booleans(),
)
def test_live_payloads_of_mixed_types_are_the_text_orjson_gives_their_dicts(
    readings: list[tuple[tuple[str, float], float, int, bool]],
    machines: int,
    shuffled: bool,
    own_times: bool,
) -> None:
    """Every type a record mixes, coded values, bad qualities, values that are not finite or
    not whole and per-reading times: byte for byte what the dicts give, value by value."""
    tags = {
        i + 1: replace(
            Tag.from_path(f"p/a/l/m{i % machines}/t{i}", unit="%" if i % 2 else ""),
            id=i + 1,
            type=kind,  # type: ignore[arg-type]
            scale=scale,
        )
        for i, ((kind, scale), _, _, _) in enumerate(readings)
    }
    names = CodeNames(
        {
            tags[i + 1].path: {0: "Idle", 1: "Execute", 2: "Held"}
            for i, (_, _, _, coded) in enumerate(readings)
            if coded
        }
    )
    ids = list(tags)
    if not shuffled:
        ids.sort(key=lambda i: tags[i].path)
    values = [readings[i - 1][1] for i in ids]
    quality = [readings[i - 1][2] for i in ids]
    ts = [T0 + 1_000_000 * row for row in range(len(ids))] if own_times else T0
    record = TelemetryRecord(5, batch(ids, values, quality, ts))
    try:
        expected = dict_payload(record, tags, names)
    except orjson.JSONEncodeError:  # an integer past 64 bits: JSON from orjson has none
        with pytest.raises(orjson.JSONEncodeError):
            UnsLayout("uns", "e", tags, names=names).messages([record])
        return
    out = UnsLayout("uns", "e", tags, names=names).messages([record])
    assert [(m.topic, m.payload) for m in out] == list(expected.items())


def test_the_layout_keeps_no_object_per_tag() -> None:
    # At 20,000 tags the layout cost ~32 MiB of RSS (~1.6 KB a tag): an object, a topic, a
    # closure and two JSON fragments per tag, and copies of paths and units. Now a few bytes
    # per tag in numpy arrays and one template per machine (its tags' JSON, ~60 bytes each).
    import tracemalloc

    tags = {
        i: replace(Tag.from_path(f"plant/a/l/plc{i // 100}/t{i % 100}", unit="°C"), id=i,
                   type="float32" if i % 3 else "int16", scale=1.0 if i % 7 else 0.1)
        for i in range(10_000)
    }  # fmt: skip
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = UnsLayout("uns", "e", tags)
        per_tag = (tracemalloc.get_traced_memory()[0] - before) / len(tags)
    finally:
        tracemalloc.stop()
    assert per_tag < 200  # 674 bytes before, 70 now
    assert kept.last_topic(205) == "uns/plant/a/l/plc2/telemetry/t5"

"""UNS topics and JSON payloads, table-driven: records in, exact topics and payloads out."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, GapRecord, Record, TagMeta, TelemetryRecord
from connectors.mqtt.payload import QUALITY_NAMES, Message, PayloadError, UnsLayout

T0 = 1_717_000_000_123_456_789  # ns
T0_MS = 1_717_000_000_123

TAGS = {
    1: TagMeta("plant1/press/line1/press1/die_temp", "plant1", "press", "line1", "press1",
               "die_temp", "°C"),
    2: TagMeta("plant1/press/line1/press1/strokes", "plant1", "press", "line1", "press1",
               "strokes", ""),
    7: TagMeta("plant1/weaving/line2/loom1/speed", "plant1", "weaving", "line2", "loom1",
               "speed", "rpm"),
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
        1: TagMeta("s2/a/l/m/t", "s2", "a", "l", "m", "t", ""),
        2: TagMeta("s1/a/l/m/t", "s1", "a", "l", "m", "t", ""),
        3: TagMeta("s1/a/l/n/t", "s1", "a", "l", "n", "t", ""),
    }
    assert UnsLayout("p/q", "a1", two_sites).gap_topic == "p/q/s1/_agent/a1/gap"


def test_quality_names_cover_every_byte() -> None:
    assert QUALITY_NAMES[Quality.GOOD] == "good"
    assert QUALITY_NAMES[Quality.UNCERTAIN] == "uncertain"
    assert QUALITY_NAMES[Quality.BAD] == "bad"
    assert QUALITY_NAMES[200] == "bad"  # not a quality we know: never reported as good
    assert len(QUALITY_NAMES) == 256

"""Sparkplug B payloads: our pb2 round trip, and every message type decoded by pysparkplug."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pysparkplug
import pytest

from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.sink import EventRecord, GapRecord, TelemetryRecord
from agent.tags import Tag
from connectors.sparkplug import sparkplug_b_pb2 as pb
from connectors.sparkplug.payload import (
    NODE_ALIAS_BASE,
    SPARKPLUG_TYPES,
    HostState,
    Message,
    MessageType,
    NodeSession,
    PayloadError,
    is_rebirth_request,
    parse_state,
    set_value,
    state_topic,
    topic,
)

NOW = 1_717_000_000_123  # ms
T0 = 1_717_000_000_000_000_000  # ns
TAGS = {
    1: Tag.from_path("p/press/l1/press1/die_temp", unit="°C"),
    2: Tag.from_path("p/press/l1/press1/strokes", unit=""),
    7: Tag.from_path("p/weave/l2/loom1/speed", unit="rpm"),
}


def session(**kwargs: Any) -> NodeSession:
    return NodeSession("plant1", "edge-7", "agent-7", TAGS, **kwargs)


def decoded(message: Message, birth: pysparkplug.NBirth | pysparkplug.DBirth | None = None) -> Any:
    """Decode with pysparkplug, choosing the payload class from the topic as a host would."""
    parsed = pysparkplug.Topic.from_str(message.topic)
    assert isinstance(parsed.message_type, pysparkplug.MessageType)
    payload_class: Any = parsed.message_type.payload
    return payload_class.decode(message.payload, birth=birth)


def ours(message: Message) -> pb.Payload:
    payload = pb.Payload()
    payload.ParseFromString(message.payload)
    return payload


def telemetry(seq: int, rows: list[tuple[int, float, int]], *, historical: bool = False,
              quality: Quality = Quality.GOOD) -> TelemetryRecord:  # fmt: skip
    ids, values, ts = zip(*rows, strict=True)
    batch = ReadingBatch.from_columns("plc", list(ids), list(values), quality, list(ts))
    return TelemetryRecord(seq=seq, batch=batch, historical=historical)


# --- topics and host messages --------------------------------------------------------------


def test_topics() -> None:
    assert topic("g", MessageType.NBIRTH, "e") == "spBv1.0/g/NBIRTH/e"
    assert topic("g", MessageType.DDATA, "e", "press1") == "spBv1.0/g/DDATA/e/press1"
    assert state_topic("scada") == "spBv1.0/STATE/scada"
    for t in (topic("g", MessageType.NCMD, "e"), topic("g", MessageType.DDEATH, "e", "d")):
        assert str(pysparkplug.Topic.from_str(t)) == t


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("g", MessageType.DDATA, "e"), "needs device id"),
        (("g", MessageType.NDATA, "e", "d"), "takes no device id"),
        (("g/x", MessageType.NDATA, "e"), "may not be empty"),
        (("g", MessageType.NDATA, "e+"), "may not be empty"),
        (("g", MessageType.DBIRTH, "e", "#"), "may not be empty"),
        (("", MessageType.NBIRTH, "e"), "may not be empty"),
    ],
)
def test_bad_topics(args: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        topic(*args)


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        (b'{"online": true, "timestamp": 5}', HostState(True, 5)),
        (b'{"timestamp": 9, "online": false}', HostState(False, 9)),
        (b"ONLINE", None),  # Sparkplug 2.2
        (b'{"online": "yes", "timestamp": 5}', None),
        (b'{"online": true}', None),
        (b'{"online": true, "timestamp": -1}', None),
        (b"[true, 5]", None),
        (b"\xff\xfe", None),
    ],
)
def test_parse_state(raw: bytes, state: HostState | None) -> None:
    assert parse_state(raw) == state
    if state is not None:  # the independent reading agrees
        assert pysparkplug.State.decode(raw) == pysparkplug.State(state.timestamp, state.online)


def test_rebirth_request() -> None:
    def ncmd(value: bool, name: str = "Node Control/Rebirth") -> bytes:
        metric = pysparkplug.Metric(NOW, name, pysparkplug.DataType.BOOLEAN, value=value)
        return pysparkplug.NCmd(NOW, (metric,)).encode(include_dtypes=True)

    assert is_rebirth_request(ncmd(True))
    assert not is_rebirth_request(ncmd(False))
    assert not is_rebirth_request(ncmd(True, name="Node Control/Reboot"))
    assert not is_rebirth_request(b"\xff\xff\xff garbage")
    assert not is_rebirth_request(b"")


# --- births and deaths -----------------------------------------------------------------------


def test_nbirth_and_ndeath() -> None:
    s = session()
    assert [s.start_session() for _ in range(3)] == [0, 1, 2]
    birth = s.nbirth(NOW)
    assert birth.topic == "spBv1.0/plant1/NBIRTH/edge-7"
    payload = ours(birth)
    assert (payload.timestamp, payload.seq) == (NOW, 0)
    metrics = {m.name: m for m in payload.metrics}
    assert metrics["bdSeq"].datatype == pb.Int64 and metrics["bdSeq"].long_value == 2
    rebirth = metrics["Node Control/Rebirth"]
    assert rebirth.datatype == pb.Boolean and rebirth.boolean_value is False
    assert not rebirth.HasField("alias")  # Sparkplug: no alias for the rebirth metric
    events = [m for name, m in metrics.items() if name.startswith("Events/")]
    assert {m.name for m in events} == {f"Events/{k.value}" for k in EventKind}
    assert all(m.is_null and m.alias >= NODE_ALIAS_BASE for m in events)
    assert all(m.timestamp == NOW for m in payload.metrics)

    nbirth = decoded(birth)
    assert isinstance(nbirth, pysparkplug.NBirth)
    assert nbirth.seq == 0 and nbirth.timestamp == NOW
    assert nbirth.get_dtype("bdSeq") == pysparkplug.DataType.INT64

    death = s.ndeath(NOW + 1)
    assert death.topic == "spBv1.0/plant1/NDEATH/edge-7"
    assert not ours(death).HasField("seq")  # Sparkplug: NDEATH carries no seq
    ndeath = decoded(death)
    assert isinstance(ndeath, pysparkplug.NDeath)
    assert (ndeath.bd_seq_metric.name, ndeath.bd_seq_metric.value) == ("bdSeq", 2)


def test_bd_seq_wraps() -> None:
    s = session()
    seen = [s.start_session() for _ in range(258)]
    assert seen[255:] == [255, 0, 1]


def test_dbirth_has_every_metric_null_until_known() -> None:
    s = session()
    s.start_session()
    s.nbirth(NOW)
    births = s.dbirths(NOW)
    assert [b.topic for b in births] == [
        "spBv1.0/plant1/DBIRTH/edge-7/loom1",
        "spBv1.0/plant1/DBIRTH/edge-7/press1",
    ]
    assert [ours(b).seq for b in births] == [1, 2]
    press = decoded(births[1])
    assert isinstance(press, pysparkplug.DBirth)
    assert {(m.name, m.alias, m.datatype, m.is_null) for m in press.metrics} == {
        ("die_temp", 1, pysparkplug.DataType.DOUBLE, True),
        ("strokes", 2, pysparkplug.DataType.DOUBLE, True),
    }
    assert all(m.timestamp == NOW for m in press.metrics)


def test_dbirth_carries_last_values_and_quality() -> None:
    s = session()
    s.start_session()
    s.nbirth(NOW)
    s.data([telemetry(1, [(1, 80.5, T0 + 2_000_000), (7, 3.0, T0)])], NOW)
    s.data([telemetry(2, [(1, 70.0, T0 + 1_000_000)], historical=True)], NOW)  # older
    s.data([telemetry(3, [(7, math.nan, T0 + 5_000_000)], quality=Quality.BAD)], NOW)
    births = {b.topic.rsplit("/", 1)[1]: b for b in s.births(NOW + 10)}
    press = {m.name: m for m in ours(births["press1"]).metrics}
    assert press["die_temp"].double_value == 80.5  # the newest value, not the replayed one
    assert press["die_temp"].timestamp == T0 // 1_000_000 + 2
    assert press["strokes"].is_null
    loom = ours(births["loom1"]).metrics[0]
    assert math.isnan(loom.double_value)
    assert list(loom.properties.keys) == ["Quality"]
    assert loom.properties.values[0].type == pb.Int32
    assert loom.properties.values[0].int_value == 0  # BAD
    assert not ours(births["press1"]).metrics[0].HasField("properties")  # GOOD: no property
    assert decoded(births["loom1"]).metrics[0].is_null is False


def test_ddeath() -> None:
    s = session()
    s.start_session()
    s.births(NOW)  # seq 0..2
    death = s.ddeath("press1", NOW)
    assert death.topic == "spBv1.0/plant1/DDEATH/edge-7/press1"
    assert decoded(death) == pysparkplug.DDeath(NOW, 3)
    with pytest.raises(ValueError, match="unknown device"):
        s.ddeath("nope", NOW)


# --- data ------------------------------------------------------------------------------------


def test_ddata_per_device_by_alias_in_time_order() -> None:
    s = session()
    s.start_session()
    births = s.births(NOW)
    record = telemetry(41, [(2, 5.0, T0 + 3_000_000), (7, 1.5, T0), (1, 9.0, T0 + 1_000_000)])
    messages = s.data([record], NOW)
    assert [(m.topic, m.index) for m in messages] == [
        ("spBv1.0/plant1/DDATA/edge-7/loom1", 0),
        ("spBv1.0/plant1/DDATA/edge-7/press1", 0),
    ]
    assert [ours(m).seq for m in messages] == [3, 4]
    press = ours(messages[1])
    for metric in press.metrics:  # DATA: alias only, no name, no datatype
        assert metric.HasField("alias") and not metric.HasField("name")
        assert not metric.HasField("datatype") and not metric.is_historical
    assert [m.alias for m in press.metrics] == [1, 2]  # time order
    assert [m.timestamp for m in press.metrics] == [T0 // 10**6 + 1, T0 // 10**6 + 3]
    # A host resolves names and types through the DBIRTH.
    ddata = decoded(messages[1], birth=decoded(births[2]))
    assert isinstance(ddata, pysparkplug.DData)
    assert [(m.name, m.value, m.datatype) for m in ddata.metrics] == [
        ("die_temp", 9.0, pysparkplug.DataType.DOUBLE),
        ("strokes", 5.0, pysparkplug.DataType.DOUBLE),
    ]


def test_historical_flag() -> None:
    s = session()
    s.start_session()
    birth = decoded(s.births(NOW)[2])
    message = s.data([telemetry(1, [(1, 1.0, T0)], historical=True)], NOW)[0]
    assert [m.is_historical for m in decoded(message, birth=birth).metrics] == [True]
    live = s.data([telemetry(2, [(1, 1.0, T0)])], NOW)[0]
    assert [m.is_historical for m in decoded(live, birth=birth).metrics] == [False]


def test_seq_is_shared_and_wraps() -> None:
    s = session()
    s.start_session()
    s.births(NOW)  # 0, 1, 2
    seqs = [ours(m).seq for i in range(300) for m in s.data([telemetry(i, [(7, i, T0)])], NOW)]
    assert seqs[:3] == [3, 4, 5]
    assert seqs[252:255] == [255, 0, 1]
    assert all(0 <= q <= 255 for q in seqs)
    assert ours(s.nbirth(NOW)).seq == 0  # a rebirth starts over
    assert ours(s.dbirths(NOW)[0]).seq == 1


def test_events_and_gaps_as_ndata() -> None:
    s = session()
    s.start_session()
    nbirth = decoded(s.nbirth(NOW))
    event = Event(EventKind.STATE, T0, "press1", {"state": "running"})
    gap = GapRecord(seq=9, of_stream="telemetry", first_seq=3, last_seq=5, count=3,
                    readings=30, ts_ns=T0, reason="store full")  # fmt: skip
    messages = s.data([EventRecord(seq=4, event=event, historical=True), gap], NOW)
    assert [(m.topic, m.index) for m in messages] == [
        ("spBv1.0/plant1/NDATA/edge-7", 0),
        ("spBv1.0/plant1/NDATA/edge-7", 1),
    ]
    first, second = (decoded(m, birth=nbirth) for m in messages)
    assert isinstance(first, pysparkplug.NData)
    metric = first.metrics[0]
    assert metric.name == "Events/state" and metric.is_historical
    assert json.loads(str(metric.value)) == {
        "agent_id": "agent-7", "stream": "events", "seq": 4, "machine": "press1",
        "ts": T0 // 10**6, "data": {"state": "running"},
    }  # fmt: skip
    assert second.metrics[0].name == "Events/gap"
    body = json.loads(str(second.metrics[0].value))
    assert (body["stream"], body["seq"], body["first_seq"], body["count"]) == ("gaps", 9, 3, 3)


def test_bad_records_take_no_seq() -> None:
    s = session()
    s.start_session()
    s.nbirth(NOW)
    unknown = telemetry(1, [(1, 1.0, T0), (99, 2.0, T0)])
    with pytest.raises(PayloadError, match="tag id 99") as caught:
        s.data([telemetry(0, [(2, 1.0, T0)]), unknown], NOW)
    assert caught.value.index == 1
    bad_event = EventRecord(seq=1, event=Event(EventKind.ALARM, T0, None, {"x": object()}))
    with pytest.raises(PayloadError, match="JSON") as caught:
        s.data([bad_event], NOW)
    assert caught.value.index == 0
    assert ours(s.data([telemetry(2, [(1, 1.0, T0)])], NOW)[0]).seq == 1  # no gap


def test_empty_batch_sends_nothing() -> None:
    s = session()
    empty = ReadingBatch.from_columns("plc", [], [], Quality.GOOD, T0)
    assert s.data([TelemetryRecord(seq=1, batch=empty)], NOW) == []


# --- types and the session's tag table ------------------------------------------------------


@pytest.mark.parametrize(
    ("tag_type", "value", "field", "expected", "independent"),
    [
        ("float64", 1.25, "double_value", 1.25, 1.25),
        ("float32", 0.5, "float_value", 0.5, 0.5),
        ("bool", 1.0, "boolean_value", True, True),
        ("bool", 0.0, "boolean_value", False, False),
        ("int16", -1.0, "int_value", 0xFFFF, -1),  # Tahu's n-bit two's complement
        ("int32", -2.0, "int_value", 0xFFFF_FFFE, -2),
        ("uint16", 65535.0, "int_value", 65535, 65535),
        ("int64", -3.0, "long_value", 2**64 - 3, -3),
        ("uint64", 7.0, "long_value", 7, 7),
    ],
)
def test_set_value(
    tag_type: Any, value: float, field: str, expected: Any, independent: Any
) -> None:
    datatype = SPARKPLUG_TYPES[tag_type]
    metric = pb.Payload.Metric(name="m", datatype=datatype, timestamp=NOW)
    set_value(metric, datatype, value)
    assert metric.WhichOneof("value") == field
    assert getattr(metric, field) == expected
    assert pysparkplug.Metric.from_pb(metric).value == independent


def test_set_value_nan_is_null_for_integers_only() -> None:
    for tag_type, null in (("int32", True), ("bool", True), ("float64", False)):
        datatype = SPARKPLUG_TYPES[tag_type]
        metric = pb.Payload.Metric()
        set_value(metric, datatype, math.nan)
        assert metric.is_null is null
    with pytest.raises(ValueError, match="cannot carry"):
        set_value(pb.Payload.Metric(), pb.String, 1.0)


def test_declared_types_in_birth() -> None:
    s = session(types={2: "uint32", 7: "bool"})
    s.start_session()
    s.data([telemetry(1, [(7, 1.0, T0)])], NOW)
    births = {b.topic.rsplit("/", 1)[1]: decoded(b) for b in s.dbirths(NOW)}
    assert births["press1"].get_dtype("strokes") == pysparkplug.DataType.UINT32
    assert births["loom1"].get_dtype("speed") == pysparkplug.DataType.BOOLEAN
    assert births["loom1"].metrics[0].value is True


def test_session_refuses_a_bad_tag_table() -> None:
    twin = Tag.from_path("p/a/l3/press1/die_temp", unit="")
    with pytest.raises(ValueError, match="two metrics named 'die_temp'"):
        NodeSession("g", "e", "a", {**TAGS, 8: twin})
    with pytest.raises(ValueError, match="alias"):
        NodeSession("g", "e", "a", {-1: TAGS[1]})
    slash = Tag(path="p/a/l/m/t", site="p", area="a", line="l", machine="m/x", name="t", unit="")
    with pytest.raises(ValueError, match="may not be empty"):
        NodeSession("g", "e", "a", {1: slash})


def test_many_rows_are_columnar_safe() -> None:
    # A larger batch (one tag repeated at increasing times) keeps time order and every row.
    s = session()
    n = 500
    batch = ReadingBatch.from_columns(
        "plc", np.full(n, 1), np.arange(n, dtype=np.float64), Quality.GOOD,
        T0 + np.arange(n)[::-1] * 1_000_000,
    )  # fmt: skip
    payload = ours(s.data([TelemetryRecord(seq=1, batch=batch)], NOW)[0])
    assert [m.double_value for m in payload.metrics] == list(range(n - 1, -1, -1))

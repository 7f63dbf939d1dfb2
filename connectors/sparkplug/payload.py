"""Sparkplug B 3.0 topics and payloads: pure functions and one pure session state (no I/O).

The edge node is the agent (`edge_node_id`); each machine (`TagMeta.machine`) is a device whose
metrics are its tags: name = tag name, alias = the store's tag id (unique across the node, as
Sparkplug requires). Node metrics: `bdSeq`, `Node Control/Rebirth` and one String metric per
event kind, `Events/<kind>`, carrying the event as JSON (events and gap records go out as
NDATA; a birth declares every metric the node will ever report, so they are in the NBIRTH).

`NodeSession` owns what a Sparkplug session counts: the bdSeq (per MQTT connect, 0..255), the
message seq shared by node and device messages (0..255, NBIRTH resets it to 0), and the last
value of each tag (a DBIRTH carries the current value, or is_null when none is known yet).
Payload timestamps are the publish time and are passed in (`now_ms`), so everything here is
testable without a clock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import orjson
from google.protobuf.message import DecodeError

from agent.model import DataType, EventKind, Quality
from agent.sink import EventRecord, GapRecord, Record, TagMeta, TelemetryRecord
from connectors.sparkplug import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
BDSEQ_METRIC = "bdSeq"
REBIRTH_METRIC = "Node Control/Rebirth"
EVENTS_FOLDER = "Events"
SEQ_MODULO = 256  # seq and bdSeq both run 0..255 and wrap
# Node metrics need aliases too (NDATA carries aliases only). Tag ids are int32, so aliases from
# 2**32 up can never collide with a tag's.
NODE_ALIAS_BASE = 1 << 32

# Our tag types → Sparkplug datatypes (spec §6.4.16). Values travel as float64 in ReadingBatch.
SPARKPLUG_TYPES: Mapping[str, int] = {
    "bool": pb.Boolean,
    "int16": pb.Int16,
    "uint16": pb.UInt16,
    "int32": pb.Int32,
    "uint32": pb.UInt32,
    "int64": pb.Int64,
    "uint64": pb.UInt64,
    "float32": pb.Float,
    "float64": pb.Double,
    "string": pb.String,
}
_INT_BITS: Mapping[int, int] = {pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}
_UINT32_FIELD = frozenset({pb.Int16, pb.UInt16, pb.Int32, pb.UInt32})

# Sparkplug's `Quality` property (Int32): 0 BAD, 192 GOOD, 500 STALE; sent only when not GOOD.
# Sparkplug has no "uncertain"; STALE ("may not be current") is the nearest of its three.
QUALITY_PROPERTY = "Quality"
SPARKPLUG_QUALITY: Mapping[int, int] = {Quality.GOOD: 192, Quality.UNCERTAIN: 500, Quality.BAD: 0}


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"


_DEVICE_TYPES = frozenset(
    {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}
)


class PayloadError(ValueError):
    """A record that cannot be encoded (the record at `index` of the batch)."""

    def __init__(self, message: str, index: int) -> None:
        self.index = index
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish; `index` is the position of the record it carries (None: birth/death)."""

    topic: str
    payload: bytes
    index: int | None = None


@dataclass(frozen=True, slots=True)
class HostState:
    """A Sparkplug 3.0 Host Application STATE: `{"online": bool, "timestamp": <UTC ms>}`."""

    online: bool
    timestamp: int


def check_id(value: str) -> str:
    """A group, edge node or device id: topic levels, so no '/', '+' or '#' and not empty."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"a Sparkplug id may not be empty or contain '/', '+' or '#': {value!r}")
    return value


def topic(
    group_id: str, message_type: MessageType, edge_node_id: str, device_id: str | None = None
) -> str:
    """`spBv1.0/<group>/<type>/<node>[/<device>]`: the device level exactly for D* types."""
    if (message_type in _DEVICE_TYPES) != (device_id is not None):
        raise ValueError(f"{message_type} {'needs' if device_id is None else 'takes no'} device id")
    levels = [NAMESPACE, check_id(group_id), message_type.value, check_id(edge_node_id)]
    if device_id is not None:
        levels.append(check_id(device_id))
    return "/".join(levels)


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{check_id(host_id)}"


def parse_state(raw: bytes) -> HostState | None:
    """A STATE payload, or None when it is not 3.0 JSON (e.g. 2.2's bare `ONLINE`)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    online, timestamp = data.get("online"), data.get("timestamp")
    if not isinstance(online, bool) or not isinstance(timestamp, int) or timestamp < 0:
        return None
    return HostState(online, timestamp)


def is_rebirth_request(raw: bytes) -> bool:
    """Whether an NCMD payload asks for a rebirth (`Node Control/Rebirth` = true)."""
    try:
        payload = pb.Payload.FromString(raw)
    except DecodeError:  # garbage is not a command
        return False
    return any(
        m.name == REBIRTH_METRIC and m.WhichOneof("value") == "boolean_value" and m.boolean_value
        for m in payload.metrics
    )


def sparkplug_type(tag_type: DataType) -> int:
    return SPARKPLUG_TYPES[tag_type]


def set_value(metric: pb.Payload.Metric, datatype: int, value: float) -> None:
    """Put a float64 reading into the metric's value field for `datatype` (NaN → is_null)."""
    if datatype == pb.Double:
        metric.double_value = value  # NaN and infinities are valid doubles
        return
    if datatype == pb.Float:
        metric.float_value = value
        return
    if math.isnan(value) or math.isinf(value):
        metric.is_null = True  # no integer or boolean stands for "not a number"
        return
    if datatype == pb.Boolean:
        metric.boolean_value = value != 0.0
        return
    number = int(value)
    if datatype in _INT_BITS:  # signed: n-bit two's complement, as Tahu encodes it
        number &= (1 << _INT_BITS[datatype]) - 1
    if datatype in _UINT32_FIELD:
        metric.int_value = number & 0xFFFF_FFFF
    elif datatype in (pb.Int64, pb.UInt64):
        metric.long_value = number & 0xFFFF_FFFF_FFFF_FFFF
    else:
        raise ValueError(f"datatype {datatype} cannot carry a numeric reading")


def _set_quality(metric: pb.Payload.Metric, quality: int) -> None:
    if quality == Quality.GOOD:
        return
    metric.properties.keys.append(QUALITY_PROPERTY)
    metric.properties.values.add(type=pb.Int32, int_value=SPARKPLUG_QUALITY.get(quality, 0))


def _text_metric(metric: pb.Payload.Metric, value: str | None, quality: int, ts_ms: int) -> None:
    """A String metric's value (None: is_null), quality and time."""
    metric.timestamp = ts_ms
    if value is None:
        metric.is_null = True
    else:
        metric.string_value = value
    _set_quality(metric, quality)


def _ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


@dataclass(frozen=True, slots=True)
class _Tag:
    alias: int
    name: str
    device: str
    datatype: int


class NodeSession:
    """Births, data and deaths of one edge node, numbered as Sparkplug requires.

    `types` gives a tag's declared type where known; every other tag is a Double (the store
    holds float64 values).
    """

    def __init__(
        self,
        group_id: str,
        edge_node_id: str,
        agent_id: str,
        tags: Mapping[int, TagMeta],
        *,
        types: Mapping[int, DataType] | None = None,
        next_bd_seq: int = 0,
    ) -> None:
        self.group_id = check_id(group_id)
        self.edge_node_id = check_id(edge_node_id)
        self.agent_id = agent_id
        types = types or {}
        self._tags: dict[int, _Tag] = {}
        seen: set[tuple[str, str]] = set()
        for tag_id, meta in sorted(tags.items()):
            if tag_id < 0:
                raise ValueError(f"tag id {tag_id} cannot be a Sparkplug alias (uint64)")
            device = check_id(meta.machine)
            if (device, meta.name) in seen:  # one machine name reused on two lines, say
                raise ValueError(f"device {device!r} would have two metrics named {meta.name!r}")
            seen.add((device, meta.name))
            # A text tag is a String metric: its strings come as `text` events (`_text`).
            datatype = SPARKPLUG_TYPES[types.get(tag_id, "float64")]
            self._tags[tag_id] = _Tag(tag_id, meta.name, device, datatype)
        self.devices: tuple[str, ...] = tuple(sorted({t.device for t in self._tags.values()}))
        self._event_alias = {kind: NODE_ALIAS_BASE + i for i, kind in enumerate(EventKind)}
        if not 0 <= next_bd_seq < SEQ_MODULO:
            raise ValueError(f"bdSeq runs 0..{SEQ_MODULO - 1}, got {next_bd_seq}")
        self.next_bd_seq = next_bd_seq  # kept by the sink across restarts
        self.bd_seq = next_bd_seq
        self._seq = 0
        self._last: dict[int, tuple[float, int, int]] = {}  # tag id → (value, quality, ts ms)
        self._last_text: dict[int, tuple[str | None, int, int]] = {}  # the same, text tags

    # Numbering ------------------------------------------------------------------------------

    def start_session(self) -> int:
        """The bdSeq of a new MQTT connection (`next_bd_seq` first, +1 per connect, 255 → 0)."""
        self.bd_seq = self.next_bd_seq
        self.next_bd_seq = (self.next_bd_seq + 1) % SEQ_MODULO
        return self.bd_seq

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % SEQ_MODULO
        return seq

    def alias(self, tag_id: int) -> int:
        return self._tags[tag_id].alias

    def event_alias(self, kind: EventKind) -> int:
        return self._event_alias[kind]

    # Births and deaths ----------------------------------------------------------------------

    def _bd_seq_payload(self, now_ms: int) -> pb.Payload:
        payload = pb.Payload(timestamp=now_ms)
        payload.metrics.add(
            name=BDSEQ_METRIC, timestamp=now_ms, datatype=pb.Int64, long_value=self.bd_seq
        )
        return payload

    def ndeath(self, now_ms: int) -> Message:
        """The NDEATH (the MQTT Will, or sent before a clean disconnect): bdSeq only, no seq."""
        payload = self._bd_seq_payload(now_ms)
        return Message(self._topic(MessageType.NDEATH), payload.SerializeToString())

    def nbirth(self, now_ms: int) -> Message:
        """The NBIRTH of the current bdSeq; it restarts seq at 0."""
        self._seq = 0
        payload = self._bd_seq_payload(now_ms)
        payload.seq = self._take_seq()
        payload.metrics.add(
            name=REBIRTH_METRIC, timestamp=now_ms, datatype=pb.Boolean, boolean_value=False
        )
        for kind, alias in self._event_alias.items():
            payload.metrics.add(
                name=f"{EVENTS_FOLDER}/{kind.value}",
                alias=alias,
                timestamp=now_ms,
                datatype=pb.String,
                is_null=True,
            )
        return Message(self._topic(MessageType.NBIRTH), payload.SerializeToString())

    def dbirths(self, now_ms: int) -> list[Message]:
        """One DBIRTH per device with every metric and its last known value (or is_null)."""
        messages = []
        for device in self.devices:
            payload = pb.Payload(timestamp=now_ms, seq=self._take_seq())
            for tag in self._tags.values():
                if tag.device != device:
                    continue
                metric = payload.metrics.add(name=tag.name, alias=tag.alias, datatype=tag.datatype)
                if tag.datatype == pb.String:
                    _text_metric(metric, *self._last_text.get(tag.alias, (None, 0, now_ms)))
                    continue
                last = self._last.get(tag.alias)
                if last is None:
                    metric.timestamp = now_ms
                    metric.is_null = True
                    continue
                value, quality, ts_ms = last
                metric.timestamp = ts_ms
                set_value(metric, tag.datatype, value)
                _set_quality(metric, quality)
            messages.append(
                Message(self._topic(MessageType.DBIRTH, device), payload.SerializeToString())
            )
        return messages

    def births(self, now_ms: int) -> list[Message]:
        return [self.nbirth(now_ms), *self.dbirths(now_ms)]

    def ddeath(self, device: str, now_ms: int) -> Message:
        if device not in self.devices:
            raise ValueError(f"unknown device {device!r}")
        payload = pb.Payload(timestamp=now_ms, seq=self._take_seq())
        return Message(self._topic(MessageType.DDEATH, device), payload.SerializeToString())

    # Data -----------------------------------------------------------------------------------

    def data(self, records: Sequence[Record], now_ms: int) -> list[Message]:
        """DDATA per record and device (telemetry), NDATA per event or gap record.

        Either every record encodes or none is numbered: a bad record raises `PayloadError`
        before any seq is taken, so seq stays gap-free.
        """
        built: list[tuple[MessageType, str | None, pb.Payload, int]] = []
        updates: dict[int, tuple[float, int, int]] = {}
        for index, record in enumerate(records):
            if isinstance(record, TelemetryRecord):
                for device, payload in self._telemetry(record, index, now_ms, updates):
                    built.append((MessageType.DDATA, device, payload, index))
            elif (text := self._text(record, now_ms)) is not None:  # a text tag's string
                built.append((MessageType.DDATA, text[0], text[1], index))
            else:
                built.append((MessageType.NDATA, None, self._event(record, index, now_ms), index))
        for tag_id, last in updates.items():
            previous = self._last.get(tag_id)
            if previous is None or last[2] >= previous[2]:
                self._last[tag_id] = last
        messages = []
        for message_type, device_id, payload, index in built:
            payload.seq = self._take_seq()
            messages.append(
                Message(
                    self._topic(message_type, device_id), payload.SerializeToString(), index=index
                )
            )
        return messages

    def _telemetry(
        self,
        record: TelemetryRecord,
        index: int,
        now_ms: int,
        updates: dict[int, tuple[float, int, int]],
    ) -> list[tuple[str, pb.Payload]]:
        batch = record.batch
        times = batch.timestamps()
        # Sparkplug wants the metrics of one message in time order.
        order = np.argsort(times, kind="stable")
        payloads: dict[str, pb.Payload] = {}
        for row in order.tolist():
            tag_id = int(batch.tag_ids[row])
            tag = self._tags.get(tag_id)
            if tag is None:
                raise PayloadError(f"tag id {tag_id} is not in the tag table", index)
            payload = payloads.get(tag.device)
            if payload is None:
                payload = payloads[tag.device] = pb.Payload(timestamp=now_ms)
            value, quality, ts_ms = (
                float(batch.values[row]),
                int(batch.quality[row]),
                _ms(int(times[row])),
            )
            # Only the alias: DATA messages carry no names and no datatypes.
            metric = payload.metrics.add(alias=tag.alias, timestamp=ts_ms)
            if record.historical:
                metric.is_historical = True
            set_value(metric, tag.datatype, value)
            _set_quality(metric, quality)
            seen = updates.get(tag_id)
            if seen is None or ts_ms >= seen[2]:
                updates[tag_id] = (value, quality, ts_ms)
        return sorted(payloads.items())

    def _text(self, record: Record, now_ms: int) -> tuple[str, pb.Payload] | None:
        """A `text` event (agent/texts.py) as a DDATA of its tag's String metric; None for any
        other record, and for a tag not in the birth (then it goes as the event it is)."""
        if not isinstance(record, EventRecord) or record.event.kind is not EventKind.TEXT:
            return None
        event = record.event
        tag = self._tags.get(int(event.data.get("tag_id", -1)))
        if tag is None or tag.datatype != pb.String:
            return None
        value = event.data.get("value")
        quality = int(Quality[str(event.data.get("quality", "bad")).upper()])
        last = (None if value is None else str(value), quality, _ms(event.ts_ns))
        previous = self._last_text.get(tag.alias)
        if previous is None or last[2] >= previous[2]:
            self._last_text[tag.alias] = last
        payload = pb.Payload(timestamp=now_ms)
        metric = payload.metrics.add(alias=tag.alias)
        _text_metric(metric, *last)
        if record.historical:
            metric.is_historical = True
        return tag.device, payload

    def _event(self, record: EventRecord | GapRecord, index: int, now_ms: int) -> pb.Payload:
        if isinstance(record, EventRecord):
            event = record.event
            kind = event.kind
            ts_ms = _ms(event.ts_ns)
            body: dict[str, object] = {
                "machine": event.machine,
                "ts": ts_ms,
                "data": event.data,
            }
        else:
            kind = EventKind.GAP
            ts_ms = _ms(record.ts_ns)
            body = {**record.describe(), "ts": ts_ms}
        # The de-duplication key of every lineside record, as in the other sinks.
        body = {"agent_id": self.agent_id, "stream": record.stream, "seq": record.seq, **body}
        try:
            text = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        except TypeError as exc:
            raise PayloadError(f"event data cannot be encoded as JSON: {exc}", index) from exc
        payload = pb.Payload(timestamp=now_ms)
        metric = payload.metrics.add(
            alias=self._event_alias[kind], timestamp=ts_ms, string_value=text
        )
        if record.historical:
            metric.is_historical = True
        return payload

    def _topic(self, message_type: MessageType, device: str | None = None) -> str:
        return topic(self.group_id, message_type, self.edge_node_id, device)

"""Unified-Namespace topics and JSON payloads: pure functions of sink records and tag metadata.

The topic tree (ISA-95 levels, see connectors/mqtt/README.md):

    <prefix>/<site>/<area>/<line>/<machine>/telemetry          one message per record and machine
    <prefix>/<site>/<area>/<line>/<machine>/telemetry/<tag>    retained last good value (optional)
    <prefix>/<site>/<area>/<line>/<machine>/event/<kind>       machine events
    (a text tag's string, a `text` event, goes to the machine's telemetry topic as a value)
    <prefix>/<site>/_agent/<agent_id>/event/<kind>             events of no (known) machine
    <prefix>/<site>/_agent/<agent_id>/gap                      records dropped before sending
    <prefix>/<site>/_agent/<agent_id>/telemetry/_batch         many records at once, columnar

Every payload carries `agent_id`, `stream` and `seq`, the key a consumer de-duplicates on
(delivery is at least once). Times are UTC milliseconds since the epoch. NaN and infinities
become `null`: JSON has no such numbers.

Everything that depends only on the tag table (topic strings, tag names, units) is worked out
once, when the layout is built. Here: the topics, events, text values, gap records and the
retained last values; live telemetry messages are shaped in `telemetry.py`, the columnar batch
message (`batch_messages`, a backlog being replayed) in `batch.py`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from agent.codenames import CodeNames
from agent.model import EventKind, Quality
from agent.sink import EventRecord, GapRecord, Record, TagMeta, TelemetryRecord
from agent.values import shaper
from connectors.mqtt.batch import (
    BATCH_QUALITIES,
    QUALITY_ENCODING,
    TAG_ENCODINGS,
    VALUE_ENCODINGS,
    BatchLayout,
    ValueEncoding,
    binary_tags,
    binary_values,
)
from connectors.mqtt.message import Message, PayloadError, ms
from connectors.mqtt.telemetry import (
    QUALITY_NAMES,
    LiveTelemetry,
    UnsTag,
    value_entry,
    value_kind,
)

__all__ = [
    "AGENT_LEVEL",
    "BATCH_LEVEL",
    "BATCH_QUALITIES",
    "NO_SITE",
    "QUALITY_ENCODING",
    "QUALITY_NAMES",
    "TAG_ENCODINGS",
    "VALUE_ENCODINGS",
    "Message",
    "PayloadError",
    "UnsLayout",
    "ValueEncoding",
    "binary_tags",
    "binary_values",
]

AGENT_LEVEL = "_agent"  # the area-level name under which agent-wide topics live
BATCH_LEVEL = "_batch"  # telemetry/_batch: many records in one columnar message
NO_SITE = "_"  # the site used when the agent has no tags at all

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY  # event data may hold numpy values


class UnsLayout:
    """Builds the messages of a batch of records under `prefix`, for one agent's tags."""

    def __init__(
        self,
        prefix: str,
        agent_id: str,
        tags: Mapping[int, TagMeta],
        *,
        names: CodeNames | None = None,
    ) -> None:
        self.prefix = prefix
        self.agent_id = agent_id
        # A config has one plant site; a store that outlived a config change may hold more,
        # and then the site most tags use names the agent.
        sites = Counter(meta.site for meta in tags.values())
        self.site = min(sites, key=lambda s: (-sites[s], s)) if sites else NO_SITE
        self.agent_topic = f"{prefix}/{self.site}/{AGENT_LEVEL}/{agent_id}"
        machines: dict[tuple[str, str, str, str], int] = {}
        self.machine_topics: list[str] = []  # <prefix>/<site>/<area>/<line>/<machine>
        self._machine_of_name: dict[str, str] = {}
        self._tags: dict[int, UnsTag] = {}
        for tag_id in sorted(tags):
            meta = tags[tag_id]
            key = (meta.site, meta.area, meta.line, meta.machine)
            if key not in machines:
                machines[key] = len(self.machine_topics)
                base = f"{prefix}/{meta.site}/{meta.area}/{meta.line}/{meta.machine}"
                self.machine_topics.append(base)
                self._machine_of_name.setdefault(meta.machine, base)
            machine = machines[key]
            base = self.machine_topics[machine]
            self._tags[tag_id] = UnsTag(
                machine,
                meta.name,
                meta.unit,
                f"{base}/telemetry/{meta.name}",
                shaper(meta),
                (names or CodeNames()).tables.get(meta.path),
                value_kind(meta),
            )
        self._telemetry_topics = [f"{base}/telemetry" for base in self.machine_topics]
        self._live = LiveTelemetry(agent_id, self._tags, self._telemetry_topics)
        self._batch = BatchLayout(agent_id, self.batch_topic, tags)

    # -----------------------------------------------------------------------------------------
    # Topics

    def event_topic(self, machine: str | None, kind: str) -> str:
        """Machine events under the machine; the rest (or an unknown machine) under the agent."""
        base = self._machine_of_name.get(machine, self.agent_topic) if machine else self.agent_topic
        return f"{base}/event/{kind}"

    @property
    def gap_topic(self) -> str:
        return f"{self.agent_topic}/gap"

    # -----------------------------------------------------------------------------------------
    # Messages

    def messages(self, records: Sequence[Record], *, retain_last: bool = False) -> list[Message]:
        """The messages of `records` in order; with `retain_last`, then the last-value ones."""
        out: list[Message] = []
        for index, record in enumerate(records):
            if isinstance(record, TelemetryRecord):
                out.extend(self._live.messages(index, record))
            elif isinstance(record, EventRecord):
                if record.event.kind is EventKind.TEXT:  # a text tag's string: a value
                    out.extend(self._text(index, record, retain_last))
                else:
                    out.append(self._event(index, record))
            else:
                out.append(self._gap(index, record))
        if retain_last:
            out.extend(self.last_values(records))
        return out

    @property
    def batch_topic(self) -> str:
        return f"{self.agent_topic}/telemetry/{BATCH_LEVEL}"

    def batch_messages(
        self, records: Sequence[Record], value_encoding: ValueEncoding = "json"
    ) -> list[Message]:
        """Telemetry `records` as one columnar message (README: "Batches"); none when empty.

        One message per send, under the agent rather than per machine: a batch is a slice of
        the stream, so its records stay in seq order whatever machines they come from.
        Raises `PayloadError` for a record that is not telemetry or names a tag not in the
        tag table.
        """
        return self._batch.messages(records, value_encoding)

    def _event(self, index: int, record: EventRecord) -> Message:
        event = record.event
        kind = str(event.kind)
        body = {
            "agent_id": self.agent_id,
            "stream": record.stream,
            "seq": record.seq,
            "ts": ms(event.ts_ns),
            "historical": record.historical,
            "kind": kind,
            "machine": event.machine,
            "data": event.data,
        }
        try:
            payload = orjson.dumps(body, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise PayloadError(f"event data cannot be encoded as JSON: {exc}", index) from exc
        return Message(self.event_topic(event.machine, kind), payload, index)

    def _text(self, index: int, record: EventRecord, retain_last: bool) -> list[Message]:
        """A text tag's string (a `text` event, agent/texts.py) as its tag's value, on its
        machine's telemetry topic: `"values": {"die_id": {"value": "DIE-42", ...}}`; a good
        one also retained on the tag's topic with `retain_last`."""
        event = record.event
        tag = self._tags.get(int(event.data.get("tag_id", -1)))
        if tag is None:
            return [self._event(index, record)]  # a tag this config lost: as the event it is
        entry: dict[str, Any] = {
            "value": event.data.get("value"),
            "quality": str(event.data.get("quality", "bad")),
            "unit": tag.unit,
        }
        if event.data.get("reason"):
            entry["reason"] = str(event.data["reason"])
        head = {
            "agent_id": self.agent_id,
            "stream": record.stream,
            "seq": record.seq,
            "ts": ms(event.ts_ns),
            "historical": record.historical,
        }
        topic = self._telemetry_topics[tag.machine]
        out = [Message(topic, orjson.dumps({**head, "values": {tag.name: entry}}), index)]
        if retain_last and entry["quality"] == "good":
            out.append(Message(tag.last_topic, orjson.dumps({**head, **entry}), index, True))
        return out

    def _gap(self, index: int, record: GapRecord) -> Message:
        body = {
            "agent_id": self.agent_id,
            "stream": record.stream,
            "seq": record.seq,
            "ts": ms(record.ts_ns),
            "historical": record.historical,
            **record.describe(),
        }
        return Message(self.gap_topic, orjson.dumps(body), index)

    def last_values(self, records: Sequence[Record]) -> list[Message]:
        """One retained message per tag: its latest good, finite value among `records`."""
        good = Quality.GOOD.value
        latest: dict[int, tuple[int, TelemetryRecord, float, int]] = {}
        for index, record in enumerate(records):
            if not isinstance(record, TelemetryRecord) or not len(record.batch):
                continue
            batch = record.batch
            stamps = batch.timestamps().tolist()
            for tag_id, value, quality, ts_ns in zip(
                batch.tag_ids.tolist(),
                batch.values.tolist(),
                batch.quality.tolist(),
                stamps,
                strict=True,
            ):
                if quality == good and math.isfinite(value) and tag_id in self._tags:
                    latest[tag_id] = (index, record, value, ts_ns)
        out = []
        for tag_id in sorted(latest):
            index, record, value, ts_ns = latest[tag_id]
            tag = self._tags[tag_id]
            body = {
                "agent_id": self.agent_id,
                "stream": record.stream,
                "seq": record.seq,
                "ts": ms(ts_ns),
                "historical": record.historical,
                **value_entry(tag, value, "good"),
            }
            out.append(Message(tag.last_topic, orjson.dumps(body), index, retain=True))
        return out

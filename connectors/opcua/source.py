"""The OPC UA source: one session, its tags read by subscription or by polling, per group.

Tags are grouped by (mode, interval) and each group is one of the agent's poll groups, so the
link loop (`agent/poller.py`) drives both modes unchanged:

- poll: `poll()` sends Reads of the group's nodes, each of at most the server's
  MaxNodesPerRead (or `max_nodes_per_read`), and returns one batch with a time per row.
- subscribe: `connect()` creates the group's subscriptions (split at the server's
  MaxMonitoredItemsPerSubscription, 1000 when it does not say; monitored items created in calls
  of MaxMonitoredItemsPerCall) with the configured sampling interval, queue size and deadband
  filter. asyncua's publish loop hands each PublishResponse to `_Inbox.take`, which appends
  the notifications to C arrays (row, value, quality, time: no Python object survives the
  callback); `poll()` drains them into one batch, only the rows that changed.

Liveness: asyncua's probe (see `session.py`), a StatusChangeNotification, or a subscription
silent past its keep-alive mark the link dead; the next `poll()` raises `ConnectError` and the
link loop reconnects with back-off, emitting bad-quality batches meanwhile. On reconnect the
subscriptions the lost session left on the server are transferred and deleted (`reclaim`), so
none pile up; what cannot be reclaimed dies with the old session (`session_timeout`). Only when
the server's StartTime is the one the lost session saw: a restarted server kept nothing of ours,
and its fresh subscription ids may already be another client's.

Types (see `convert.py`): numeric types, Boolean and DateTime become float64. At connect the
DataType and ValueRank of every node are read once: a node that does not exist, has a
non-numeric type (String, ByteString, LocalizedText, ...) or is an array not declared with
`array_length` (or a scalar declared as one) is reported once as an error and its tags read bad
without being read or monitored. A value that still cannot be converted reads bad, reported once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from agent.clock import Clock, SystemClock
from agent.duration import format_duration
from agent.errors import ConnectError, ConnectorError, one_line
from agent.histogram import Histogram
from agent.model import Quality, ReadingBatch
from agent.tags import TagTable
from connectors.opcua import session
from connectors.opcua.config import Mode, OpcUaSourceConfig, OpcUaTag, element_names
from connectors.opcua.convert import (
    TimestampChoice,
    Unsupported,
    datetime_ns,
    flatten,
    qualities,
    reading_time_ns,
    to_float,
)

log = logging.getLogger("lineside.opcua")

_GOOD = np.uint8(Quality.GOOD)
_BAD = np.uint8(Quality.BAD)
_QUALITY = (int(Quality.GOOD), int(Quality.UNCERTAIN), int(Quality.BAD), int(Quality.BAD))
_BAD_STATUS = 0x80000000
# Built-in DataTypes (namespace 0) with no float64 reading: Guid, ByteString, XmlElement,
# NodeId, ExpandedNodeId, StatusCode, QualifiedName, LocalizedText, Structure, DataValue,
# DiagnosticInfo; and String (12).
_NOT_NUMERIC = frozenset({12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 25})
_TYPE_NAMES = {12: "String", 14: "Guid", 15: "ByteString", 21: "LocalizedText", 22: "Structure"}
_SCALAR = -1  # ValueRank
# Built-in numeric DataTypes (namespace 0): name, the lineside type that is the node's own, and
# the range of its values (None: not an integer type).
_NUMERIC: dict[int, tuple[str, str, tuple[int, int] | None]] = {
    1: ("Boolean", "bool", (0, 1)),
    2: ("SByte", "int16", (-(2**7), 2**7 - 1)),
    3: ("Byte", "uint16", (0, 2**8 - 1)),
    4: ("Int16", "int16", (-(2**15), 2**15 - 1)),
    5: ("UInt16", "uint16", (0, 2**16 - 1)),
    6: ("Int32", "int32", (-(2**31), 2**31 - 1)),
    7: ("UInt32", "uint32", (0, 2**32 - 1)),
    8: ("Int64", "int64", (-(2**63), 2**63 - 1)),
    9: ("UInt64", "uint64", (0, 2**64 - 1)),
    10: ("Float", "float32", None),
    11: ("Double", "float64", None),
    13: ("DateTime", "float64", None),
    290: ("Duration", "float64", None),  # a Double
    294: ("UtcTime", "float64", None),  # a DateTime
}
_INT_RANGE = {name: bounds for _, name, bounds in _NUMERIC.values() if bounds is not None}
# PublishRequests kept waiting on the server per session (asyncua's own loop keeps one); see
# `_more_publishers`.
_PUBLISH_IN_FLIGHT = 4


@dataclass(slots=True)
class _Node:
    """One node read or monitored, and the rows (agent tags) its value fills."""

    tag: OpcUaTag
    node_id: ua.NodeId
    handle: int  # the monitored item's client handle: index in the source's node list
    group: str
    first_row: int
    rows: int  # 1, or the declared array length
    excluded: str = ""  # why it is neither read nor monitored this session ("" if it is)
    # `nsu=<uri>;...`: the namespace URI, looked up in the server's NamespaceArray at every
    # connect (a restarted server may number its namespaces differently); "" for `ns=<index>`.
    namespace_uri: str = ""
    unresolved: str = ""  # why the URI has no index on the server this session ("" if it has)


@dataclass(slots=True)
class _Group:
    name: str
    mode: Mode
    interval: float
    nodes: list[_Node]
    row_ids: npt.NDArray[np.int32]  # the group's rows, node by node (first_row order)
    reads: list[tuple[ua.ReadParameters, list[_Node]]] = field(default_factory=list)


@dataclass(slots=True)
class _LastEmitted:
    """Per row of a subscribe group: what was last emitted and when (the source's clock)."""

    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    emitted_ns: npt.NDArray[np.int64]
    seen: npt.NDArray[np.bool_]  # emitted this session: a heartbeat may repeat it

    @classmethod
    def of(cls, n: int) -> _LastEmitted:
        return cls(
            np.full(n, math.nan),
            np.full(n, _BAD, dtype=np.uint8),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.bool_),
        )


@dataclass(slots=True)
class _Counters:
    polls: int = 0
    requests: int = 0  # Reads of poll groups
    request_errors: int = 0
    notifications: int = 0
    publishes: int = 0
    drains: int = 0
    connects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    subscriptions: int = 0
    monitored_items: int = 0
    reclaimed: int = 0
    heartbeats: int = 0  # unchanged subscribed values repeated (`heartbeat`)
    latency: Histogram = field(default_factory=Histogram)  # Reads that answered, seconds

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class _Inbox:
    """Notifications of one subscribe group since the last drain, as C arrays."""

    __slots__ = ("_source", "quality", "rows", "ts", "values")

    def __init__(self, source: OpcUaSource) -> None:
        self._source = source
        self.rows = array("i")
        self.values = array("d")
        self.quality = array("B")
        self.ts = array("q")

    def take(self, items: Iterable[ua.MonitoredItemNotification], arrival_ns: int) -> int:
        """Append one DataChangeNotification's items; returns how many. The hot path."""
        src = self._source
        row_of = src._handle_row
        rows, values, quality, ts = self.rows, self.values, self.quality, self.ts
        use_source = src._timestamp == "source"
        n = 0
        for item in items:
            n += 1
            handle = item.ClientHandle
            dv = item.Value
            variant = dv.Value
            value: Any = variant.Value if variant is not None else None
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            stamp = dv.SourceTimestamp if use_source else dv.ServerTimestamp
            if stamp is None:
                stamp = dv.ServerTimestamp if use_source else dv.SourceTimestamp
            at = round(stamp.timestamp() * 1e6) * 1000 if stamp is not None else 0
            if at <= 0:  # missing or "null" (1601) timestamp
                at = arrival_ns
            row = row_of[handle] if 0 <= handle < len(row_of) else -1
            kind = type(value)
            if row >= 0 and code < _BAD_STATUS and (kind is float or kind is int or kind is bool):
                rows.append(row)
                values.append(float(value))
                quality.append(_QUALITY[code >> 30])
                ts.append(at)
            else:
                src._take_slow(self, handle, value, code, at)
        return n

    def put(self, first_row: int, values: Sequence[float], quality: Sequence[int], at: int) -> None:
        for i, (v, q) in enumerate(zip(values, quality, strict=True)):
            self.rows.append(first_row + i)
            self.values.append(v)
            self.quality.append(q)
            self.ts.append(at)

    def drain(
        self,
    ) -> tuple[
        npt.NDArray[np.int32], npt.NDArray[np.float64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
    ]:
        out = (
            np.frombuffer(self.rows, dtype=np.int32).copy(),
            np.frombuffer(self.values, dtype=np.float64).copy(),
            np.frombuffer(self.quality, dtype=np.uint8).copy(),
            np.frombuffer(self.ts, dtype=np.int64).copy(),
        )
        del self.rows[:], self.values[:], self.quality[:], self.ts[:]
        return out


class _Receiver:
    """The callback asyncua's publish loop calls with each PublishResult of one subscription."""

    __slots__ = ("inbox", "source", "subscription")

    def __init__(self, source: OpcUaSource, inbox: _Inbox) -> None:
        self.source = source
        self.inbox = inbox
        self.subscription: _Subscription | None = None

    def __call__(self, result: ua.PublishResult) -> None:
        self.source._on_publish(result, self.inbox, self.subscription)


@dataclass(slots=True)
class _Subscription:
    id: int
    group: str
    silence_limit: float  # seconds without any publish response before the link is dead
    last_seen: float  # monotonic


class OpcUaSource:
    """One OPC UA server's session and the tags read from it (the agent's `Source`)."""

    def __init__(
        self,
        config: OpcUaSourceConfig,
        tags: TagTable,
        clock: Clock | None = None,
        *,
        heartbeat: float = 0.0,
    ) -> None:
        self.name = config.name
        # Seconds after which a subscribed row that has not changed is emitted again (0: never);
        # the agent sets its `agent.heartbeat` here.
        self.heartbeat = heartbeat
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._timestamp: TimestampChoice = config.timestamp
        self._stats = _Counters()
        self._client: Client | None = None
        self._dead: str = ""
        self._subscriptions: list[_Subscription] = []
        self._publishers: list[asyncio.Task[None]] = []
        self._stale_ids: list[int] = []  # subscriptions a lost session may have left behind
        self._server_run: datetime | None = None  # the server's StartTime, for `_stale_ids`
        self._reported: set[tuple[str, str]] = set()  # (node, problem) already logged
        # Rows: one per agent tag of this source, in config order.
        row_ids: list[int] = []
        scale: list[float] = []
        offset: list[float] = []
        self._nodes: list[_Node] = []
        groups: dict[tuple[Mode, float], list[_Node]] = {}
        for tag in config.tags:
            names = element_names(tag)
            mode, interval = config.mode_of(tag), config.interval_of(tag)
            group = f"{mode} {format_duration(interval)}"
            node_id, uri = parse_node_id(tag.node_id)
            node = _Node(tag, node_id, len(self._nodes), group, len(row_ids), len(names))
            node.namespace_uri = uri
            for name in names:
                row_ids.append(tags.id_of(config.machine, name))
                scale.append(tag.scale)
                offset.append(tag.offset)
            self._nodes.append(node)
            groups.setdefault((mode, interval), []).append(node)
        self._row_ids = np.array(row_ids, dtype=np.int32)
        self._last = _LastEmitted.of(len(row_ids))
        self._scale = np.array(scale, dtype=np.float64)
        self._offset = np.array(offset, dtype=np.float64)
        self._groups: dict[str, _Group] = {}
        for (mode, interval), nodes in sorted(groups.items(), key=lambda kv: kv[0][1]):
            name = f"{mode} {format_duration(interval)}"
            rows = np.concatenate(
                [np.arange(n.first_row, n.first_row + n.rows, dtype=np.int32) for n in nodes]
            )
            self._groups[name] = _Group(name, mode, interval, nodes, rows)
        self._inboxes = {
            g: _Inbox(self) for g, grp in self._groups.items() if grp.mode == "subscribe"
        }
        # Client handle = index into self._nodes; -1: not a plain scalar (slow path).
        self._handle_row: list[int] = [-1] * len(self._nodes)

    # -- the Source protocol ---------------------------------------------------------------

    def poll_groups(self) -> Mapping[str, float]:
        return {name: g.interval for name, g in self._groups.items()}

    async def connect(self) -> None:
        await self.close()
        config = self._config
        self._stats.connects += 1
        self._dead = ""
        client = await session.open_session(config, self._lost)
        self._client = client
        try:
            run = await session.read_start_time(client, config.timeout)
            if run is None or run != self._server_run:
                # A restarted (or unknown) server: our old ids died with the old run and may now
                # be another client's subscriptions; never transfer those.
                self._stale_ids = []
            self._server_run = run
            limits = await session.read_limits(client, config.timeout)
            per_read = limits.nodes_per_read(config.max_nodes_per_read)
            if any(n.namespace_uri for n in self._nodes):
                self._resolve(await session.read_namespaces(client, config.timeout))
            await self._inspect(client, per_read)
            if self._stale_ids:
                self._stats.reclaimed += await session.reclaim(
                    client, self._stale_ids, config.timeout
                )
                self._stale_ids = []
            self._plan_reads(per_read)
            per_sub = limits.items_per_subscription(config.max_items_per_subscription)
            for group in self._groups.values():
                if group.mode == "subscribe":
                    await self._subscribe(client, group, per_sub, limits.items_per_call(per_sub))
            self._publishers = self._more_publishers(client)
        except ConnectorError:
            await self.close()
            raise
        except (TimeoutError, OSError, UaError, ConnectionError) as exc:
            await self.close()
            raise session.translate(exc, f"{self.name}: setting up") from None
        except Exception as exc:  # asyncua's bugs too: one line, and the link loop retries
            await self.close()
            raise ConnectError(f"{self.name}: setting up: {one_line(exc)}") from None

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        client = self._client
        if client is None:
            raise ConnectError(f"{self.name}: not connected")
        self._check_alive()
        if self._dead:
            raise ConnectError(f"{self.name}: {self._dead}")
        self._stats.polls += 1
        out: list[ReadingBatch] = []
        for name in groups:
            group = self._groups[name]
            if group.mode == "poll":
                out.append(await self._read_group(client, group))
            else:
                batch = self._drain(name)
                if batch is not None:
                    out.append(batch)
        return out

    def bad_batches(self, groups: Sequence[str], ts_ns: int) -> list[ReadingBatch]:
        out = []
        for name in groups:
            rows = self._groups[name].row_ids
            n = rows.shape[0]
            out.append(
                ReadingBatch(
                    source=self.name,
                    tag_ids=self._row_ids[rows],
                    values=np.full(n, math.nan),
                    quality=np.full(n, _BAD, dtype=np.uint8),
                    ts_ns=np.array([ts_ns], dtype=np.int64),
                )
            )
        return out

    async def close(self) -> None:
        client, self._client = self._client, None
        publishers, self._publishers = self._publishers, []
        for task in publishers:
            task.cancel()
        await asyncio.gather(*publishers, return_exceptions=True)
        ids = [s.id for s in self._subscriptions]
        self._subscriptions = []
        for inbox in self._inboxes.values():
            inbox.drain()  # values of a lost session must not surface after it
        self._last.seen[:] = False  # nor be repeated by a heartbeat of the next one
        if client is None:
            return
        if self._dead:
            # The link is gone or the server stalled: no goodbye that would only time out.
            # What the server may keep is reclaimed at the next connect.
            await session.abandon(client)
            self._stale_ids.extend(ids)
        elif not await session.close_session(client, min(self._config.timeout, 2.0), ids):
            self._stale_ids.extend(ids)

    def statistics(self) -> Mapping[str, float]:
        s = self._stats
        out: dict[str, float] = {
            "polls": s.polls,
            "requests": s.requests,
            "request_errors": s.request_errors,
            "notifications": s.notifications,
            "publishes": s.publishes,
            "drains": s.drains,
            "subscriptions": s.subscriptions,
            "monitored_items": s.monitored_items,
            "connects": s.connects,
            "reconnects": max(s.connects - 1, 0),
            "reclaimed_subscriptions": s.reclaimed,
            "heartbeats": s.heartbeats,
        }
        for kind, count in sorted(s.errors.items()):
            out[f"errors_{kind}"] = count
        out.update(s.latency.statistics("latency"))
        return out

    # -- liveness --------------------------------------------------------------------------

    def _lost(self, why: str) -> None:
        if not self._dead:
            self._dead = why

    def _check_alive(self) -> None:
        now = self._clock.monotonic()
        for sub in self._subscriptions:
            if now - sub.last_seen > sub.silence_limit:
                self._stats.error("silent_subscription")
                self._lost(f"subscription {sub.id} silent for {now - sub.last_seen:.1f} s")
                return

    # -- connect-time checks ---------------------------------------------------------------

    def _report(self, node: _Node, kind: str, problem: str) -> None:
        """Log and count a node's problem once per source lifetime, however often it recurs."""
        key = (node.tag.node_id, problem)
        if key in self._reported:
            return
        self._reported.add(key)
        self._stats.error(kind)
        log.warning("%s: tag %s (%s): %s", self.name, node.tag.name, node.tag.node_id, problem)

    def _resolve(self, namespaces: Sequence[str]) -> None:
        """Give each `nsu=` node the index its URI has on the server this session."""
        for node in self._nodes:
            uri = node.namespace_uri
            if not uri:
                continue
            node.unresolved = ""
            if uri in namespaces:
                node.node_id = with_namespace(node.node_id, namespaces.index(uri))
            else:
                node.unresolved = (
                    f"namespace {uri} is not on the server (it has: {', '.join(namespaces)})"
                )

    async def _inspect(self, client: Client, per_read: int) -> None:
        """Read DataType and ValueRank of every node; exclude those that cannot be read."""
        for node in self._nodes:
            if node.unresolved:
                node.excluded = node.unresolved
                self._report(node, "bad_node", node.unresolved)
        nodes = [n for n in self._nodes if not n.unresolved]
        step = max(per_read // 2, 1)
        for start in range(0, len(nodes), step):
            chunk = nodes[start : start + step]
            params = ua.ReadParameters()
            for node in chunk:
                for attribute in (AttributeIds.DataType, AttributeIds.ValueRank):
                    item = ua.ReadValueId()
                    item.NodeId = node.node_id
                    item.AttributeId = attribute
                    params.NodesToRead.append(item)
            async with asyncio.timeout(self._config.timeout):
                results = await client.uaclient.read(params)
            for i, node in enumerate(chunk):
                kind, node.excluded = self._why_excluded(node, results[2 * i], results[2 * i + 1])
                if node.excluded:
                    self._report(node, kind, node.excluded)
        for handle, node in enumerate(self._nodes):
            plain = not node.excluded and node.tag.array_length is None
            self._handle_row[handle] = node.first_row if plain else -1

    @staticmethod
    def _why_excluded(node: _Node, data_type: ua.DataValue, rank: ua.DataValue) -> tuple[str, str]:
        """(error kind, why) when the node cannot give readings, else ("", "")."""
        for dv in (data_type, rank):
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                return "bad_node", f"cannot be read: {dv.StatusCode.name}"
        if node.tag.type == "string":
            return "unsupported_type", "unsupported type string: a reading is a float64"
        type_id = data_type.Value.Value if data_type.Value is not None else None
        if isinstance(type_id, ua.NodeId) and type_id.NamespaceIndex == 0:
            ident = type_id.Identifier
            if isinstance(ident, int) and ident in _NOT_NUMERIC:
                name = _TYPE_NAMES.get(ident, f"i={ident}")
                return "unsupported_type", f"unsupported type {name}: a reading is a float64"
        if node.tag.type is not None and isinstance(type_id, ua.NodeId):
            refused = type_refusal(node.tag.type, type_id)
            if refused:
                return "type_mismatch", refused
        value_rank = rank.Value.Value if rank.Value is not None else _SCALAR
        declared = node.tag.array_length is not None
        if isinstance(value_rank, int):
            if declared and value_rank == _SCALAR:
                return "array_mismatch", "declared array_length but the node is a scalar"
            if not declared and (value_rank == 0 or value_rank >= 1):
                return "array_mismatch", "an array node: declare array_length to read it as tags"
        return "", ""

    # -- poll groups -----------------------------------------------------------------------

    def _plan_reads(self, per_read: int) -> None:
        for group in self._groups.values():
            group.reads = []
            if group.mode != "poll":
                continue
            live = [n for n in group.nodes if not n.excluded]
            for start in range(0, len(live), per_read):
                chunk = live[start : start + per_read]
                params = ua.ReadParameters()
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                for node in chunk:
                    item = ua.ReadValueId()
                    item.NodeId = node.node_id
                    item.AttributeId = AttributeIds.Value
                    params.NodesToRead.append(item)
                group.reads.append((params, chunk))

    async def _read_group(self, client: Client, group: _Group) -> ReadingBatch:
        """One Read per planned request; failed requests leave their rows bad (NaN)."""
        n_rows = self._row_ids.shape[0]
        values = np.full(n_rows, math.nan)
        quality = np.full(n_rows, _BAD, dtype=np.uint8)
        stamps = np.zeros(n_rows, dtype=np.int64)
        arrival = self._clock.time_ns()
        stamps[group.row_ids] = arrival
        for params, chunk in group.reads:
            self._stats.requests += 1
            started = self._clock.monotonic()
            try:
                async with asyncio.timeout(self._config.timeout):
                    results = await client.uaclient.read(params)
            except (ConnectionError, OSError) as exc:
                self._lost(f"read failed: {str(exc) or type(exc).__name__}")
                raise ConnectError(f"{self.name}: {self._dead}") from None
            except (TimeoutError, UaError) as exc:
                self._stats.request_errors += 1
                self._stats.error("read_timeout" if isinstance(exc, TimeoutError) else "read")
                if self._dead:
                    raise ConnectError(f"{self.name}: {self._dead}") from None
                continue
            self._stats.latency.observe(self._clock.monotonic() - started)
            arrival = self._clock.time_ns()
            for node, dv in zip(chunk, results, strict=False):
                self._fill(node, dv, values, quality, stamps, arrival)
        rows = group.row_ids
        values[rows] = values[rows] * self._scale[rows] + self._offset[rows]
        return ReadingBatch(
            source=self.name,
            tag_ids=self._row_ids[rows],
            values=values[rows],
            quality=quality[rows],
            ts_ns=stamps[rows],
        )

    def _fill(
        self,
        node: _Node,
        dv: ua.DataValue,
        values: npt.NDArray[np.float64],
        quality: npt.NDArray[np.uint8],
        stamps: npt.NDArray[np.int64],
        arrival: int,
    ) -> None:
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        at = reading_time_ns(
            datetime_ns(dv.SourceTimestamp),
            datetime_ns(dv.ServerTimestamp),
            self._timestamp,
            arrival,
        )
        rows = slice(node.first_row, node.first_row + node.rows)
        stamps[rows] = at
        if code & _BAD_STATUS:
            return  # bad status: NaN, bad (already)
        raw = dv.Value.Value if dv.Value is not None else None
        try:
            if node.tag.array_length is None:
                values[node.first_row] = to_float(raw)
                present = np.ones(1, dtype=np.bool_)
            else:
                values[rows], present = flatten(raw, node.rows)
        except Unsupported as exc:
            values[rows] = math.nan
            self._report(node, "unsupported_type", str(exc))
            return
        quality[rows] = np.where(present, qualities(np.array([code], dtype=np.uint32))[0], _BAD)

    # -- subscribe groups ------------------------------------------------------------------

    async def _subscribe(self, client: Client, group: _Group, per_sub: int, per_call: int) -> None:
        config = self._config
        inbox = self._inboxes[group.name]
        arrival = self._clock.time_ns()
        for node in group.nodes:
            if node.excluded:  # reads bad once per session, then nothing changes
                inbox.put(node.first_row, [math.nan] * node.rows, [int(_BAD)] * node.rows, arrival)
        live = [n for n in group.nodes if not n.excluded]
        interval_ms = group.interval * 1000
        sampling_ms = (
            config.sampling_interval * 1000 if config.sampling_interval is not None else interval_ms
        )
        # A keep-alive at least every timeout / 2, so a silent subscription is noticed in time.
        keepalive = max(1, math.ceil(config.timeout / 2 / group.interval))
        lifetime = max(3 * keepalive, math.ceil(config.session_timeout / group.interval))
        for start in range(0, len(live), per_sub):
            chunk = live[start : start + per_sub]
            params = ua.CreateSubscriptionParameters()
            params.RequestedPublishingInterval = interval_ms
            params.RequestedMaxKeepAliveCount = keepalive
            params.RequestedLifetimeCount = lifetime
            params.MaxNotificationsPerPublish = 0
            params.PublishingEnabled = True
            params.Priority = 0
            receiver = _Receiver(self, inbox)
            async with asyncio.timeout(config.timeout):
                created = await client.uaclient.create_subscription(params, receiver)
            revised = max(created.RevisedPublishingInterval, 1.0) / 1000
            sub = _Subscription(
                created.SubscriptionId,
                group.name,
                silence_limit=revised * max(created.RevisedMaxKeepAliveCount, 1) * 2
                + config.timeout,
                last_seen=self._clock.monotonic(),
            )
            receiver.subscription = sub
            self._subscriptions.append(sub)
            self._stats.subscriptions += 1
            for at in range(0, len(chunk), per_call):
                await self._create_items(client, sub.id, chunk[at : at + per_call], sampling_ms)

    def _more_publishers(self, client: Client) -> list[asyncio.Task[None]]:
        """More copies of asyncua's publish loop, so several PublishRequests wait on the server.

        asyncua keeps one in flight: every subscription's notifications then wait for the
        previous response to be encoded there, cross the wire and be decoded here, and with 20
        subscriptions of 1000 items changing every second those round trips no longer fit in the
        second (measured: 13k of the 20k changes a second arrived, the rest overwritten in the
        server's queue). Part 4 5.13.5 expects a client to queue several; the server answers
        each with whichever subscription is due, so its encoding overlaps our decoding. Each
        loop acknowledges what it received in its own next request, as asyncua's does.
        """
        loop = getattr(client.uaclient.session, "_publish_loop", None)
        if loop is None:  # an asyncua without it: one request in flight, slower but correct
            return []
        extra = min(len(self._subscriptions), _PUBLISH_IN_FLIGHT) - 1
        return [
            asyncio.create_task(loop(), name=f"{self.name}-publish-{i + 1}") for i in range(extra)
        ]

    async def _create_items(
        self, client: Client, sub_id: int, items: list[_Node], sampling_ms: float
    ) -> None:
        config = self._config
        params = ua.CreateMonitoredItemsParameters()
        params.SubscriptionId = sub_id
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for node in items:
            request = ua.MonitoredItemCreateRequest()
            request.ItemToMonitor = ua.ReadValueId()
            request.ItemToMonitor.NodeId = node.node_id
            request.ItemToMonitor.AttributeId = AttributeIds.Value
            request.MonitoringMode = ua.MonitoringMode.Reporting
            mp = ua.MonitoringParameters()
            mp.ClientHandle = node.handle
            mp.SamplingInterval = sampling_ms
            mp.QueueSize = config.queue_size
            mp.DiscardOldest = True
            band = node.tag.deadband
            if band is not None and band.amount > 0:
                flt = ua.DataChangeFilter()
                flt.Trigger = ua.DataChangeTrigger.StatusValue
                flt.DeadbandType = (
                    ua.DeadbandType.Percent if band.relative else ua.DeadbandType.Absolute
                )
                flt.DeadbandValue = band.amount
                mp.Filter = flt
            request.RequestedParameters = mp
            params.ItemsToCreate.append(request)
        async with asyncio.timeout(config.timeout):
            results = await client.uaclient.create_monitored_items(params)
        for node, result in zip(items, results, strict=False):
            if result.StatusCode.is_good():
                self._stats.monitored_items += 1
            else:
                self._report(node, "bad_item", f"cannot be monitored: {result.StatusCode.name}")
                inbox = self._inboxes[node.group]
                bad = [int(_BAD)] * node.rows
                inbox.put(node.first_row, [math.nan] * node.rows, bad, self._clock.time_ns())

    def _on_publish(
        self, result: ua.PublishResult, inbox: _Inbox, sub: _Subscription | None
    ) -> None:
        """asyncua's publish loop calls this with each PublishResponse of one subscription."""
        if sub is not None:
            sub.last_seen = self._clock.monotonic()
        self._stats.publishes += 1
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # a keep-alive
        arrival = self._clock.time_ns()
        for notification in data:
            if isinstance(notification, ua.DataChangeNotification):
                self._stats.notifications += inbox.take(notification.MonitoredItems, arrival)
            elif isinstance(notification, ua.StatusChangeNotification):
                status = notification.Status
                self._lost(f"subscription status {status.name if status else 'unknown'}")

    def _take_slow(self, inbox: _Inbox, handle: int, value: object, code: int, at: int) -> None:
        """Notifications the hot path leaves: arrays, DateTime, excluded or unknown handles."""
        if not 0 <= handle < len(self._nodes):
            self._stats.error("unknown_handle")
            return
        node = self._nodes[handle]
        n = node.rows
        if node.excluded:
            return
        if code & _BAD_STATUS:
            inbox.put(node.first_row, [math.nan] * n, [int(_BAD)] * n, at)
            return
        q = _QUALITY[code >> 30]
        try:
            if node.tag.array_length is None:
                inbox.put(node.first_row, [to_float(value)], [q], at)
            else:
                values, present = flatten(value, n)
                inbox.put(
                    node.first_row, values.tolist(), [q if p else int(_BAD) for p in present], at
                )
        except Unsupported as exc:
            self._report(node, "unsupported_type", str(exc))
            inbox.put(node.first_row, [math.nan] * n, [int(_BAD)] * n, at)

    def _drain(self, group: str) -> ReadingBatch | None:
        """The group's notifications since the last drain, and with `heartbeat` set, its rows
        that have been quiet that long: their last value again, stamped now. The subscription
        is alive (`poll` checked it), so an unchanged value is still the current one; without
        this a quiet tag would never reach the store again and could not be told from a dead
        one."""
        rows, raw, quality, ts = self._inboxes[group].drain()
        values = raw * self._scale[rows] + self._offset[rows]
        now = self._clock.time_ns()
        last = self._last
        if rows.shape[0]:
            last.value[rows], last.quality[rows], last.emitted_ns[rows] = values, quality, now
            last.seen[rows] = True
        if self.heartbeat > 0:
            mine = self._groups[group].row_ids
            quiet = now - last.emitted_ns[mine] >= round(self.heartbeat * 1e9)
            due = mine[last.seen[mine] & quiet]
            if due.shape[0]:
                last.emitted_ns[due] = now
                self._stats.heartbeats += int(due.shape[0])
                rows = np.concatenate([rows, due])
                values = np.concatenate([values, last.value[due]])
                quality = np.concatenate([quality, last.quality[due]])
                ts = np.concatenate([ts, np.full(due.shape[0], now, dtype=np.int64)])
        if rows.shape[0] == 0:
            return None
        self._stats.drains += 1
        return ReadingBatch(
            source=self.name,
            tag_ids=self._row_ids[rows],
            values=values,
            quality=quality,
            ts_ns=ts,
        )


def parse_node_id(text: str) -> tuple[ua.NodeId, str]:
    """A configured node id and its namespace URI: `nsu=<uri>;s=...` gives the URI (its index
    is the server's to say, see `_resolve`), `ns=<index>;...` and `i=...` give ""."""
    parsed = ua.NodeId.from_string(text)
    uri = getattr(parsed, "NamespaceUri", None)
    if isinstance(parsed, ua.ExpandedNodeId) and uri:
        return with_namespace(parsed, 0), str(uri)
    return parsed, ""


def with_namespace(node_id: ua.NodeId, index: int) -> ua.NodeId:
    """The plain NodeId of `node_id` (Expanded or not) in namespace `index`."""
    return ua.NodeId(node_id.Identifier, ua.Int16(index), node_id.NodeIdType)


def type_refusal(declared: str, data_type: ua.NodeId) -> str:
    """Why a tag declared `declared` cannot take the values of a node of `data_type`, or "".

    The declared type is what sinks announce (a Sparkplug metric's datatype, say), so it must
    hold every value the node can have: an integer type the node's whole range (an Int16 node
    fits int32, a UInt16 node does not fit int16), bool only a Boolean node, float32 any integer
    or Float node but not a Double; float64 holds them all. Unknown and non-standard DataTypes
    (enumerations, namespaces other than 0) are not checked.
    """
    ident = data_type.Identifier
    if data_type.NamespaceIndex != 0 or not isinstance(ident, int) or ident not in _NUMERIC:
        return ""
    name, own, bounds = _NUMERIC[ident]
    if declared == "float64" or declared == own:
        return ""
    if declared == "float32":
        fits = bounds is not None
    elif declared == "bool":
        fits = False
    else:
        lo, hi = _INT_RANGE[declared]
        fits = bounds is not None and lo <= bounds[0] and bounds[1] <= hi
    if fits:
        return ""
    return (
        f'the node is {name}, which type = "{declared}" cannot hold: '
        f'declare type = "{own}" or leave type out'
    )

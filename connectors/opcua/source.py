"""The OPC UA source: one session, its tags read by subscription or by polling, per group.

Tags are grouped by (mode, interval) and each group is one of the agent's poll groups, so the
link loop (`agent/poller.py`) drives both modes unchanged:

- poll: `poll()` sends Reads of the group's nodes, each of at most the server's
  MaxNodesPerRead (or `max_nodes_per_read`), and returns one batch with a time per row.
- subscribe: `connect()` creates the group's subscriptions (split at the server's
  MaxMonitoredItemsPerSubscription, 1000 when it does not say; monitored items created in calls
  of MaxMonitoredItemsPerCall) with the configured sampling interval, queue size and deadband
  filter (subscribe.py). asyncua's publish loop hands each PublishResponse to `Inbox.take`
  (notifications.py), which appends the notifications to C arrays (row, value, quality, time:
  no Python object survives the callback); `poll()` drains them into one batch, only the rows
  that changed.

Liveness: asyncua's probe (see `session.py`), a StatusChangeNotification, or a subscription
silent past its keep-alive mark the link dead; the next `poll()` raises `ConnectError` and the
link loop reconnects with back-off, emitting bad-quality batches meanwhile. On reconnect the
subscriptions the lost session left on the server are transferred and deleted (`reclaim`), so
none pile up; what cannot be reclaimed dies with the old session (`session_timeout`). Only when
the server's StartTime is the one the lost session saw: a restarted server kept nothing of ours,
and its fresh subscription ids may already be another client's.

Text tags (`type = "string"`) are never in a batch: they are read by polling at their interval
(in the poll group of that interval, whatever the mode) into `texts` (agent/texts.py): a String,
a LocalizedText's text, a ByteString in base64 (`convert.to_text`); a bad status is a bad text
with the status's name as its reason.

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
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError

from agent.clock import Clock, SystemClock
from agent.duration import format_duration
from agent.errors import ConnectError, ConnectorError, one_line
from agent.model import Quality, ReadingBatch
from agent.statistics import SourceStatistics
from agent.tags import TagTable
from agent.texts import Texts
from connectors.opcua import session
from connectors.opcua.config import Mode, OpcUaSourceConfig, element_names
from connectors.opcua.convert import (
    TimestampChoice,
    Unsupported,
    datetime_ns,
    flatten,
    qualities,
    quality_of,
    reading_time_ns,
    to_float,
    to_text,
)
from connectors.opcua.nodes import Group, Node, parse_node_id, why_excluded, with_namespace
from connectors.opcua.notifications import (
    BAD,
    BAD_STATUS,
    Counters,
    Inbox,
    LastEmitted,
    Subscription,
)
from connectors.opcua.subscribe import Subscribing

log = logging.getLogger("lineside.opcua")


class OpcUaSource(Subscribing):
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
        self._stats = Counters()
        self._client: Client | None = None
        self._dead: str = ""
        self._subscriptions: list[Subscription] = []
        self._publishers: list[asyncio.Task[None]] = []
        self._stale_ids: list[int] = []  # subscriptions a lost session may have left behind
        self._server_run: datetime | None = None  # the server's StartTime, for `_stale_ids`
        self._reported: set[tuple[str, str]] = set()  # (node, problem) already logged
        # Rows: one per agent tag of this source, in config order.
        row_ids: list[int] = []
        scale: list[float] = []
        offset: list[float] = []
        self._nodes: list[Node] = []
        groups: dict[tuple[Mode, float], list[Node]] = {}
        # Text tags: read by polling at their interval (whatever the mode), into `texts`.
        self._text_nodes: dict[str, list[tuple[Node, int]]] = {}
        for tag in config.tags:
            if tag.type == "string":
                interval = config.interval_of(tag)
                groups.setdefault(("poll", interval), [])
                node_id, uri = parse_node_id(tag.node_id)
                node = Node(tag, node_id, -1, f"poll {format_duration(interval)}", 0, 0)
                node.namespace_uri = uri
                tag_id = tags.id_of(config.machine, tag.name)
                self._text_nodes.setdefault(node.group, []).append((node, tag_id))
                continue
            names = element_names(tag)
            mode, interval = config.mode_of(tag), config.interval_of(tag)
            group = f"{mode} {format_duration(interval)}"
            node_id, uri = parse_node_id(tag.node_id)
            node = Node(tag, node_id, len(self._nodes), group, len(row_ids), len(names))
            node.namespace_uri = uri
            for name in names:
                row_ids.append(tags.id_of(config.machine, name))
                scale.append(tag.scale)
                offset.append(tag.offset)
            self._nodes.append(node)
            groups.setdefault((mode, interval), []).append(node)
        self._row_ids = np.array(row_ids, dtype=np.int32)
        self._last = LastEmitted.of(len(row_ids))
        self._scale = np.array(scale, dtype=np.float64)
        self._offset = np.array(offset, dtype=np.float64)
        self._groups: dict[str, Group] = {}
        for (mode, interval), nodes in sorted(groups.items(), key=lambda kv: kv[0][1]):
            name = f"{mode} {format_duration(interval)}"
            rows = np.concatenate(
                [np.arange(n.first_row, n.first_row + n.rows, dtype=np.int32) for n in nodes]
                or [np.zeros(0, dtype=np.int32)]  # a group of text tags only
            )
            self._groups[name] = Group(name, mode, interval, nodes, rows)
        self._inboxes = {
            g: Inbox(self) for g, grp in self._groups.items() if grp.mode == "subscribe"
        }
        self.texts = Texts(t for nodes in self._text_nodes.values() for _, t in nodes)
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
            if any(n.namespace_uri for n in self._all_nodes()):
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
                if group.nodes:
                    out.append(await self._read_group(client, group))
                if name in self._text_nodes:
                    await self._read_texts(client, self._text_nodes[name])
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
                    quality=np.full(n, BAD, dtype=np.uint8),
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

    def statistics(self) -> SourceStatistics:
        s = self._stats
        extras: dict[str, float] = {
            "request_errors": s.request_errors,
            "notifications": s.notifications,
            "publishes": s.publishes,
            "drains": s.drains,
            "subscriptions": s.subscriptions,
            "monitored_items": s.monitored_items,
            "reclaimed_subscriptions": s.reclaimed,
            "heartbeats": s.heartbeats,
        }
        for kind, count in sorted(s.errors.items()):
            extras[f"errors_{kind}"] = count
        return SourceStatistics(
            polls=s.polls,
            requests=s.requests,
            connects=s.connects,
            latency=s.latency.snapshot(),
            extras=extras,
        )

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

    def _report(self, node: Node, kind: str, problem: str) -> None:
        """Log and count a node's problem once per source lifetime, however often it recurs."""
        key = (node.tag.node_id, problem)
        if key in self._reported:
            return
        self._reported.add(key)
        self._stats.error(kind)
        log.warning("%s: tag %s (%s): %s", self.name, node.tag.name, node.tag.node_id, problem)

    def _resolve(self, namespaces: Sequence[str]) -> None:
        """Give each `nsu=` node the index its URI has on the server this session."""
        for node in self._all_nodes():
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
                kind, node.excluded = why_excluded(node, results[2 * i], results[2 * i + 1])
                if node.excluded:
                    self._report(node, kind, node.excluded)
        for handle, node in enumerate(self._nodes):
            plain = not node.excluded and node.tag.array_length is None
            self._handle_row[handle] = node.first_row if plain else -1

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

    async def _read_group(self, client: Client, group: Group) -> ReadingBatch:
        """One Read per planned request; failed requests leave their rows bad (NaN)."""
        n_rows = self._row_ids.shape[0]
        values = np.full(n_rows, math.nan)
        quality = np.full(n_rows, BAD, dtype=np.uint8)
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

    def _all_nodes(self) -> list[Node]:
        return [*self._nodes, *(n for nodes in self._text_nodes.values() for n, _ in nodes)]

    async def _read_texts(self, client: Client, nodes: list[tuple[Node, int]]) -> None:
        """Read text tags' values into `texts` (agent/texts.py): one Read per group."""
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        for node, _ in nodes:
            item = ua.ReadValueId()
            item.NodeId = node.node_id
            item.AttributeId = AttributeIds.Value
            params.NodesToRead.append(item)
        self._stats.requests += 1
        try:
            async with asyncio.timeout(self._config.timeout):
                results = await client.uaclient.read(params)
        except (ConnectionError, OSError) as exc:
            self._lost(f"read failed: {str(exc) or type(exc).__name__}")
            raise ConnectError(f"{self.name}: {self._dead}") from None
        except (TimeoutError, UaError) as exc:
            self._stats.request_errors += 1
            self._stats.error("read_timeout" if isinstance(exc, TimeoutError) else "read")
            why = f"read failed: {one_line(exc) or type(exc).__name__}"
            for _node, tag_id in nodes:
                self.texts.put(tag_id, None, Quality.BAD, self._clock.time_ns(), why)
            if self._dead:
                raise ConnectError(f"{self.name}: {self._dead}") from None
            return
        arrival = self._clock.time_ns()
        for (node, tag_id), dv in zip(nodes, results, strict=False):
            self._text(node, tag_id, dv, arrival)

    def _text(self, node: Node, tag_id: int, dv: ua.DataValue, arrival: int) -> None:
        """One text tag's DataValue into `texts`: bad with the status's name, or its text."""
        at = reading_time_ns(
            datetime_ns(dv.SourceTimestamp), datetime_ns(dv.ServerTimestamp), self._timestamp,
            arrival,
        )  # fmt: skip
        status = dv.StatusCode if dv.StatusCode is not None else ua.StatusCode()
        if node.unresolved:
            self.texts.put(tag_id, None, Quality.BAD, at, node.unresolved)
            return
        if status.value & BAD_STATUS:
            self.texts.put(tag_id, None, Quality.BAD, at, status.name)
            return
        try:
            text = to_text(dv.Value.Value if dv.Value is not None else None)
        except Unsupported as exc:
            self._report(node, "unsupported_type", str(exc))
            self.texts.put(tag_id, None, Quality.BAD, at, str(exc))
            return
        quality = quality_of(status.value)
        self.texts.put(tag_id, text, quality, at, "" if quality == Quality.GOOD else status.name)

    def _fill(
        self,
        node: Node,
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
        if code & BAD_STATUS:
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
        quality[rows] = np.where(present, qualities(np.array([code], dtype=np.uint32))[0], BAD)

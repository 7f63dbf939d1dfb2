"""The subscribe groups of the OPC UA source: subscriptions and monitored items created at
connect, each PublishResponse taken into its group's inbox, and a poll's drain of it (see
source.py). A part of `OpcUaSource`, kept here so each module stays one concern."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds

from agent.clock import Clock
from agent.model import ReadingBatch
from connectors.opcua.config import OpcUaSourceConfig
from connectors.opcua.convert import (
    TimestampChoice,
    Unsupported,
    flatten,
    to_float,
)
from connectors.opcua.nodes import Group, Node
from connectors.opcua.notifications import (
    BAD,
    BAD_STATUS,
    QUALITY,
    Counters,
    Inbox,
    LastEmitted,
    Receiver,
    Subscription,
)

# PublishRequests kept waiting on the server per session (asyncua's own loop keeps one); see
# `_more_publishers`.
PUBLISH_IN_FLIGHT = 4


class Subscribing:
    """The subscribe half of `OpcUaSource` (its state is the source's own)."""

    name: str
    heartbeat: float
    _config: OpcUaSourceConfig
    _clock: Clock
    _stats: Counters
    _nodes: list[Node]
    _groups: dict[str, Group]
    _inboxes: dict[str, Inbox]
    _subscriptions: list[Subscription]
    _last: LastEmitted
    _row_ids: npt.NDArray[np.int32]
    _scale: npt.NDArray[np.float64]
    _offset: npt.NDArray[np.float64]
    _handle_row: list[int]  # client handle → first row; -1: the slow path
    _timestamp: TimestampChoice

    if TYPE_CHECKING:

        def _report(self, node: Node, kind: str, problem: str) -> None: ...

        def _lost(self, why: str) -> None: ...

    # -- subscribe groups ------------------------------------------------------------------

    async def _subscribe(self, client: Client, group: Group, per_sub: int, per_call: int) -> None:
        config = self._config
        inbox = self._inboxes[group.name]
        arrival = self._clock.time_ns()
        for node in group.nodes:
            if node.excluded:  # reads bad once per session, then nothing changes
                inbox.put(node.first_row, [math.nan] * node.rows, [int(BAD)] * node.rows, arrival)
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
            receiver = Receiver(self, inbox)
            async with asyncio.timeout(config.timeout):
                created = await client.uaclient.create_subscription(params, receiver)
            revised = max(created.RevisedPublishingInterval, 1.0) / 1000
            sub = Subscription(
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
        extra = min(len(self._subscriptions), PUBLISH_IN_FLIGHT) - 1
        return [
            asyncio.create_task(loop(), name=f"{self.name}-publish-{i + 1}") for i in range(extra)
        ]

    async def _create_items(
        self, client: Client, sub_id: int, items: list[Node], sampling_ms: float
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
                bad = [int(BAD)] * node.rows
                inbox.put(node.first_row, [math.nan] * node.rows, bad, self._clock.time_ns())

    def _on_publish(self, result: ua.PublishResult, inbox: Inbox, sub: Subscription | None) -> None:
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

    def _take_slow(self, inbox: Inbox, handle: int, value: object, code: int, at: int) -> None:
        """Notifications the hot path leaves: arrays, DateTime, excluded or unknown handles."""
        if not 0 <= handle < len(self._nodes):
            self._stats.error("unknown_handle")
            return
        node = self._nodes[handle]
        n = node.rows
        if node.excluded:
            return
        if code & BAD_STATUS:
            inbox.put(node.first_row, [math.nan] * n, [int(BAD)] * n, at)
            return
        q = QUALITY[code >> 30]
        try:
            if node.tag.array_length is None:
                inbox.put(node.first_row, [to_float(value)], [q], at)
            else:
                values, present = flatten(value, n)
                inbox.put(
                    node.first_row, values.tolist(), [q if p else int(BAD) for p in present], at
                )
        except Unsupported as exc:
            self._report(node, "unsupported_type", str(exc))
            inbox.put(node.first_row, [math.nan] * n, [int(BAD)] * n, at)

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

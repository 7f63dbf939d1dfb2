"""The fleet view over MQTT: each agent's retained status, and reading a site's back.

`StatusPublisher` runs beside an MQTT sink (`MqttSink.background`). It keeps a connection of
its own, so a backlog being replayed on the sink's connection never delays the status, and
the broker's view of that connection is the agent's liveness: its Will, set at connect, is a
retained `{"online": false}` on the same topic, which the broker publishes when the agent stops
answering (1.5 x keepalive) or its connection drops without a DISCONNECT (kill -9, power, a cut
cable). Every `status_interval` it publishes the agent's figures, retained, at QoS 1; on a
clean stop a last retained message says offline, then DISCONNECT (no Will).

`read_statuses` is `lineside fleet status`: subscribe to the status filter, take what the
broker hands over (retained messages first) for a short while, and leave.

Topic and payload: README.md beside this, "Fleet view".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from agent.errors import ConnectorError
from agent.poller import Backoff
from agent.sink import SinkContext, StatusProvider
from connectors.mqtt.config import MqttSinkConfig
from connectors.mqtt.payload import Message
from connectors.mqtt.sink import MqttSink

log = logging.getLogger("lineside.mqtt.status")

STATUS_LEVEL = "status"  # <prefix>/<site>/_agent/<agent_id>/status
GOODBYE_TIMEOUT = 2.0  # seconds a clean stop waits for the broker to take "offline"
RETRY_MAX = 10.0  # seconds at most between attempts to reach the broker


def status_payload(
    figures: Mapping[str, Any],
    *,
    online: bool,
    interval_s: float,
    reason: str | None = None,
    stamped: bool = True,
) -> bytes:
    """The status message: the agent's figures, whether it is online, when (UTC ms; not in a
    Will, which the broker sends long after it was written), how often it comes."""
    body = {**figures, "online": online, "interval_s": interval_s}
    if stamped:
        body["ts"] = time.time_ns() // 1_000_000
    if reason is not None:
        body["reason"] = reason
    return orjson.dumps(body)


class StatusPublisher:
    """Publishes one agent's retained status beside `sink`, on a connection of its own."""

    def __init__(self, sink: MqttSink, figures: StatusProvider) -> None:
        self.figures = figures
        self.interval = sink.config.status_interval
        self.topic = f"{sink.layout.agent_topic}/{STATUS_LEVEL}"
        identity = {"agent_id": sink.context.agent_id}
        will = status_payload(
            identity,
            online=False,
            interval_s=self.interval,
            reason="connection lost",
            stamped=False,
        )
        self.connection = MqttSink(
            sink.config,
            sink.context,
            ack_timeout=sink.connection.ack_timeout,
            keepalive=sink.connection.keepalive,
            will=Message(self.topic, will, 0, retain=True),
            client_id=f"{sink.client_id}-status",
        )
        self._last: Mapping[str, Any] = identity  # what the goodbye repeats
        self._rng = random.Random()

    async def run(self) -> None:
        """Publish every `interval` until cancelled; then say offline and disconnect."""
        backoff = Backoff(maximum=RETRY_MAX)
        connected = False
        failing = False
        try:
            while True:
                try:
                    if not connected:
                        await self.connection.connect()
                        connected = True
                    await self._publish()
                except ConnectorError as exc:
                    if not failing:  # once per outage, not once per attempt
                        log.warning("status on %s: %s; retrying", self.topic, exc)
                    failing = True
                    connected = False
                    await self.connection.close()
                    await asyncio.sleep(backoff.next(self._rng))
                    continue
                if failing:
                    log.info("status on %s: published again", self.topic)
                failing = False
                backoff.reset()
                await asyncio.sleep(self.interval)
        finally:
            await self._goodbye(connected)

    async def _publish(self) -> None:
        self._last = await self.figures()
        payload = status_payload(self._last, online=True, interval_s=self.interval)
        await self.connection.publish([Message(self.topic, payload, 0, retain=True)])

    async def _goodbye(self, connected: bool) -> None:
        """A clean stop: offline, retained, with the last figures; the Will is not sent."""
        # Errors here (the broker gone, the wait cut short) leave the Will to say it.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            if connected:
                payload = status_payload(
                    self._last, online=False, interval_s=self.interval, reason="stopped"
                )
                message = Message(self.topic, payload, 0, retain=True)
                await asyncio.wait_for(self.connection.publish([message]), GOODBYE_TIMEOUT)
        await self.connection.close()


async def read_statuses(config: MqttSinkConfig, topic_filter: str, wait: float) -> dict[str, bytes]:
    """Every message on `topic_filter` within `wait` seconds of subscribing (topic → the
    latest payload): the retained status of every agent, and any that changes meanwhile.
    Raises `ConnectorError` when the broker cannot be reached or refuses."""
    received: dict[str, bytes] = {}
    # A client id of its own each time: two viewers must not take each other's session.
    viewer = MqttSink(
        config,
        SinkContext("fleet-view", {}),
        client_id=f"lineside-fleet-view-{uuid.uuid4().hex[:12]}",
    )
    await viewer.connect()
    try:
        await viewer.subscribe(topic_filter, received.__setitem__)
        await asyncio.sleep(wait)
    finally:
        await viewer.close()
    return received

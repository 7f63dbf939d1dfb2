"""The end-to-end benchmark's subscriber: every telemetry message at the broker, and from it
each contender's data age and live delivery over a window.

One paho client in the harness's process takes everything under `lineside/#` (single and batch
telemetry messages alike) and keeps, per record, its receive time, its agent, its `ts` and its
number of values. Data age is the receive time minus the record's `ts`, for records stamped in
the window after a warm-up; "delivered live" counts the samples received within the window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WARM_UP_S = 1.0  # data age: records of the window's first second are left out


@dataclass(frozen=True, slots=True)
class Arrival:
    """One record as the broker delivered it: when, whose, its time and its number of values."""

    received_ns: int
    agent_id: str
    ts_ms: int
    samples: int


def arrivals(received_ns: int, payload: bytes | bytearray) -> list[Arrival]:
    """The records of one telemetry message: one, or a batch message's many."""
    body = orjson.loads(payload)
    agent_id = str(body.get("agent_id", ""))
    ts = body.get("ts")
    if isinstance(ts, list):  # a batch: one entry per record in seq, ts and n
        return [
            Arrival(received_ns, agent_id, int(t), int(n))
            for t, n in zip(ts, body["n"], strict=True)
        ]
    return [Arrival(received_ns, agent_id, int(ts), len(body.get("values", ())))]


class Subscriber:
    """Every telemetry message under `lineside/#`, kept as arrivals (paho's network thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self.client = subscribed("bench-endtoend", host, port, self._on_message)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = time.time_ns()  # first, before any parsing
        topic = message.topic
        if topic.endswith("/telemetry") or topic.endswith("/telemetry/_batch"):
            got = arrivals(received, message.payload)
            with self._lock:
                self.arrivals.extend(got)

    def take(self) -> list[Arrival]:
        """What arrived so far; the list starts afresh."""
        with self._lock:
            taken, self.arrivals = self.arrivals, []
        return taken

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def subscribed(
    client_id: str,
    host: str,
    port: int,
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None],
) -> mqtt.Client:
    """A paho client in its own thread, subscribed to every lineside topic (QoS 0, as a plain
    dashboard subscribes) once this returns."""
    done = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    client.on_connect = lambda client, *_: client.subscribe("lineside/#", qos=0)
    client.on_subscribe = lambda *_: done.set()
    client.on_message = on_message
    client.connect(host, port, 30)
    client.loop_start()
    if not done.wait(10):
        client.disconnect()
        client.loop_stop()
        raise RuntimeError(f"{client_id}: could not subscribe to {host}:{port}")
    return client


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def delivery(got: Iterable[Arrival], agent_id: str, start_ns: int, end_ns: int) -> dict[str, Any]:
    """Data age and live delivery of `agent_id`'s records over the window [start_ns, end_ns)."""
    mine = [a for a in got if a.agent_id == agent_id]
    first_ms = (start_ns // 1_000_000) + round(WARM_UP_S * 1000)
    end_ms = end_ns // 1_000_000
    ages = sorted(a.received_ns / 1e6 - a.ts_ms for a in mine if first_ms <= a.ts_ms < end_ms)
    live = sum(a.samples for a in mine if start_ns <= a.received_ns < end_ns)
    seconds = (end_ns - start_ns) / 1e9
    return {
        "records_received": len(mine),
        "samples_delivered": live,
        "delivered_per_s": live / seconds if seconds > 0 else None,
        "age_measured": len(ages),
        "age_p50_ms": percentile(ages, 0.50),
        "age_p99_ms": percentile(ages, 0.99),
        "age_max_ms": ages[-1] if ages else None,
    }

"""The raw-socket ceiling of benchmarks/baselines.py: the fastest simple thing Python can do.

asyncio on uvloop, hand-framed requests, every block of a poll written at once (pipelined on
TCP), each answer decoded with one numpy gather, no storage, no abstraction in the way; with a
broker, one JSON message per poll and PLC published with paho in the agent's payload format
(`ceiling-mqtt`). Run through `python -m benchmarks.baselines ceiling|ceiling-mqtt`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import tty
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from benchmarks.baselines import (
    _NUMPY_TYPES,
    FIRST_POLL_DELAY,
    RTU_FRAME_PAUSE,
    Grid,
    LinkFigures,
    summary,
)
from benchmarks.workloads import MAX_GAP, Workload, read_blocks
from connectors.modbus.framing import MBAP_PREFIX, MBAP_SIZE, crc_ok, mbap_read, rtu_read
from connectors.modbus.planner import ReadRequest

# --- ceiling: raw sockets, numpy -----------------------------------------------------------


class NumpyBlock:
    """Decodes one block's payload into float64 values with numpy gathers planned up front."""

    def __init__(self, request: ReadRequest) -> None:
        self.n = len(request.tags)
        self.payload_bytes = request.payload_bytes
        start = request.start
        self._bits: npt.NDArray[np.intp] | None = None
        self._groups: list[tuple[np.dtype[Any], npt.NDArray[np.intp], npt.NDArray[np.intp]]] = []
        self._identity: np.dtype[Any] | None = None
        if request.table.is_bits:
            self._bits = np.array([t.offset - start for t in request.tags], dtype=np.intp)
            return
        by_type: dict[str, list[tuple[int, int]]] = {}
        for position, tag in enumerate(request.tags):
            by_type.setdefault(tag.type, []).append((position, 2 * (tag.offset - start)))
        for type_name, places in by_type.items():
            dtype = _NUMPY_TYPES[type_name]
            positions = np.array([p for p, _ in places], dtype=np.intp)
            index = np.array([at for _, at in places], dtype=np.intp)[:, None] + np.arange(
                dtype.itemsize
            )
            self._groups.append((dtype, positions, index))
        if len(self._groups) == 1:
            dtype, positions, index = self._groups[0]
            if index.size == self.payload_bytes and np.array_equal(
                index.ravel(), np.arange(index.size)
            ):
                self._identity = dtype

    def decode(self, payload: bytes | memoryview) -> npt.NDArray[np.float64]:
        if len(payload) != self.payload_bytes:
            raise ValueError(f"expected {self.payload_bytes} payload bytes, got {len(payload)}")
        data = np.frombuffer(payload, dtype=np.uint8)
        if self._identity is not None:
            return data.view(self._identity).astype(np.float64)
        if self._bits is not None:
            return np.unpackbits(data, bitorder="little")[self._bits].astype(np.float64)
        out = np.empty(self.n, dtype=np.float64)
        for dtype, positions, index in self._groups:
            out[positions] = data[index].view(dtype)[:, 0]
        return out


class _TcpLink(asyncio.Protocol):
    """One PLC: a poll writes every block's request at once and completes on the last answer."""

    def __init__(self, blocks: tuple[ReadRequest, ...], decoders: list[NumpyBlock]) -> None:
        self.blocks, self.decoders = blocks, decoders
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.tid = 0
        self.sent: dict[int, tuple[int, float]] = {}  # tid -> (block, send time)
        self.figures = LinkFigures()
        self.latest: list[npt.NDArray[np.float64] | None] = [None] * len(blocks)
        self.done: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is only alike

    async def poll(self) -> None:
        assert self.transport is not None
        out = bytearray()
        now = time.monotonic()
        for i, request in enumerate(self.blocks):
            self.tid = (self.tid + 1) & 0xFFFF
            self.sent[self.tid] = (i, now)
            out += mbap_read(self.tid, 1, request.function_code, request.start, request.count)
        self.figures.requests += len(self.blocks)
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(out)
        await self.done

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        now = time.monotonic()
        while len(buf) >= MBAP_PREFIX:
            size = MBAP_PREFIX + ((buf[4] << 8) | buf[5])
            if len(buf) < size:
                break
            tid = (buf[0] << 8) | buf[1]
            i, sent = self.sent.pop(tid, (-1, 0.0))
            figures = self.figures
            if i < 0 or buf[MBAP_SIZE] & 0x80 or size != 9 + self.decoders[i].payload_bytes:
                figures.errors += 1
            else:
                figures.latency.append(now - sent)
                self.latest[i] = self.decoders[i].decode(memoryview(buf)[9:size])
                figures.samples += self.decoders[i].n
            del buf[:size]
        if not self.sent and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("the plant closed the connection"))
        if not self.closed.done():
            self.closed.set_result(None)


class _RtuBus:
    """The serial bus through a raw pty fd: one request at a time, CRC-checked answers."""

    def __init__(self, path: str, blocks: tuple[ReadRequest, ...], units: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.blocks = blocks
        self.decoders = [NumpyBlock(r) for r in blocks]
        self.frames = [
            [rtu_read(unit_id, r.function_code, r.start, r.count) for r in blocks]
            for unit_id in range(1, units + 1)
        ]
        self.buf = bytearray()
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None
        self.figures = LinkFigures()
        self.latest: list[npt.NDArray[np.float64] | None] = [None] * len(blocks)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            self.buf += os.read(self.fd, 4096)
        except BlockingIOError:
            return
        if self.waiter is not None and len(self.buf) >= self.want and not self.waiter.done():
            self.waiter.set_result(None)

    async def poll(self) -> None:
        figures = self.figures
        for unit_frames in self.frames:
            for i, frame in enumerate(unit_frames):
                decoder = self.decoders[i]
                self.buf.clear()
                self.want = 5 + decoder.payload_bytes
                self.waiter = self.loop.create_future()
                figures.requests += 1
                sent = time.monotonic()
                os.write(self.fd, frame)
                try:
                    await asyncio.wait_for(self.waiter, 0.5)
                except TimeoutError:
                    figures.errors += 1
                    continue
                figures.latency.append(time.monotonic() - sent)
                answer = bytes(self.buf[: self.want])
                if not crc_ok(answer) or answer[1] != frame[1]:
                    figures.errors += 1
                else:
                    self.latest[i] = decoder.decode(answer[3:-2])
                    figures.samples += decoder.n
                await asyncio.sleep(RTU_FRAME_PAUSE)

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        os.close(self.fd)


class MqttPublisher:
    """One JSON message per poll of a PLC, published with paho the simplest way that works."""

    def __init__(self, broker: str, workload: Workload, blocks: tuple[ReadRequest, ...]) -> None:
        import orjson
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._dumps = orjson.dumps
        host, _, port = broker.rpartition(":")
        self.agent_id = f"ceiling-{workload.name.lower()}"
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.agent_id,
            protocol=mqtt.MQTTv5,
        )
        connected = threading.Event()
        self.client.on_connect = lambda *_: connected.set()
        self.client.connect(host, int(port), 30)
        self.client.loop_start()
        if not connected.wait(10):
            raise RuntimeError(f"ceiling-mqtt: no CONNACK from {broker}")
        # The names of a poll's values, in the order the blocks decode them.
        self.names = [workload.tags[t.tag_id].name for r in blocks for t in r.tags]
        self.topics = [f"lineside/bench/a/l/m{k:03d}/telemetry" for k in range(workload.plcs)]
        self.seq = 0

    def publish(
        self, machine: int, ts_ns: int, latest: list[npt.NDArray[np.float64] | None]
    ) -> None:
        if any(block is None for block in latest):
            return  # a block failed this poll: nothing whole to send
        values = np.concatenate(cast(list[npt.NDArray[np.float64]], latest)).tolist()
        self.seq += 1
        body = {
            "agent_id": self.agent_id,
            "stream": "telemetry",
            "seq": self.seq,
            "ts": ts_ns // 1_000_000,
            "historical": False,
            "values": {
                name: {"value": value, "quality": "good", "unit": ""}
                for name, value in zip(self.names, values, strict=True)
            },
        }
        self.client.publish(self.topics[machine], self._dumps(body), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _same(proto: _TcpLink) -> _TcpLink:
    return proto


async def run_ceiling(
    workload: Workload,
    endpoints: list[int] | str,
    duration: float,
    broker: str | None = None,
    max_gap: int = MAX_GAP,
) -> dict[str, Any]:
    blocks = read_blocks(workload.tags, max_gap)
    loop = asyncio.get_running_loop()
    publisher = None if broker is None else MqttPublisher(broker, workload, blocks)
    if isinstance(endpoints, str):
        bus = _RtuBus(endpoints, blocks, workload.plcs)
        links: list[_RtuBus | _TcpLink] = [bus]
    else:
        links = []
        for port in endpoints:
            proto = _TcpLink(blocks, [NumpyBlock(r) for r in blocks])
            await loop.create_connection(functools.partial(_same, proto), "127.0.0.1", port)
            links.append(proto)

    async def poll(link: _RtuBus | _TcpLink, grid: Grid, figures: LinkFigures) -> None:
        machine = links.index(link)
        while await grid.wait(link.figures):
            ts_ns = time.time_ns()
            await link.poll()
            if publisher is not None:
                publisher.publish(machine, ts_ns, link.latest)

    print("start", flush=True)
    t0 = time.monotonic() + FIRST_POLL_DELAY
    await asyncio.gather(
        *(poll(k, Grid(workload.interval, t0, t0 + duration), k.figures) for k in links)
    )
    elapsed = time.monotonic() - t0
    for link in links:
        if isinstance(link, _RtuBus):
            link.close()
        elif link.transport is not None:
            link.transport.close()
    if publisher is not None:
        publisher.close()
    return summary([k.figures for k in links], elapsed)

"""The two baselines the agent is measured against, each run as its own process.

    python -m benchmarks.baselines {naive,ceiling,ceiling-mqtt} --workload W1 --endpoints JSON
                                   --duration S [--broker HOST:PORT] [--interval S]

- `naive`: what a plain pymodbus script does: one pymodbus client per PLC (one serial client
  for an RTU bus), one awaited read per block, `struct` decoding per tag, no storage. Plain
  asyncio: pymodbus's client does not run on uvloop.
- `ceiling`: the fastest simple thing Python can do: asyncio on uvloop, hand-framed requests,
  every block of a poll written at once (pipelined on TCP), each answer decoded with one
  numpy gather, no storage, no abstraction in the way.
- `ceiling-mqtt`: the ceiling, publishing one JSON message per poll and PLC with paho (QoS 1,
  MQTT 5, paho's own network thread) in the agent's payload format (connectors/mqtt/README.md):
  the end-to-end ceiling, still without storage.

Both poll the same blocks as the agent (the same coalescing, planned once before timing) on a
drift-free grid, or back to back when the workload says "as fast as possible". The process
prints `start` when its timed window opens (the parent reads its CPU time then) and one JSON
line of results at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import struct
import sys
import threading
import time
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from benchmarks.workloads import ALL_WORKLOADS, MAX_GAP, Workload, read_blocks
from connectors.modbus.address import Table
from connectors.modbus.framing import MBAP_PREFIX, MBAP_SIZE, crc_ok, mbap_read, rtu_read
from connectors.modbus.planner import ReadRequest

_STRUCT_FORMATS = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
    "int64": ">q",
    "uint64": ">Q",
    "float64": ">d",
}
_NUMPY_TYPES = {k: np.dtype(v) for k, v in _STRUCT_FORMATS.items()}
# The first poll comes this long after "start", so that a parent that reads its counters
# (CPU, the plant's samples served) on that line sees every poll of the window, the first too.
FIRST_POLL_DELAY = 0.1
# The agent's RTU `frame_pause` in the generated config: the same bus discipline here.
RTU_FRAME_PAUSE = 0.002


@dataclass
class LinkFigures:
    """What one link (a TCP connection or the serial bus) measured."""

    samples: int = 0
    requests: int = 0
    errors: int = 0
    latency: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    overruns: int = 0


def summary(links: list[LinkFigures], elapsed: float) -> dict[str, Any]:
    """Totals, and per-link percentiles (the agent reports its figures per link too)."""

    def per_link(values: list[float]) -> list[tuple[float, float]]:
        return [(float(np.percentile(v, 50)), float(np.percentile(v, 99))) for v in (values,) if v]

    return {
        "samples": sum(k.samples for k in links),
        "requests": sum(k.requests for k in links),
        "errors": sum(k.errors for k in links),
        "overruns": sum(k.overruns for k in links),
        "elapsed_s": elapsed,
        "latency": [p for k in links for p in per_link(k.latency)],
        "lateness": [p for k in links for p in per_link(k.lateness)],
    }


class Grid:
    """Drift-free ticks every `interval` (None: back to back); overruns skip and count."""

    def __init__(self, interval: float | None, start: float, end: float) -> None:
        self.interval, self.start, self.end = interval, start, end
        self.k = 0

    async def wait(self, figures: LinkFigures) -> bool:
        """Sleep to the next tick; False once the window is over."""
        now = time.monotonic()
        if self.interval is None:
            return now < self.end
        due = self.start + self.k * self.interval
        if due < now - self.interval:  # ran through grid points: skip them, never queue
            missed = math.floor((now - due) / self.interval)
            figures.overruns += missed
            self.k += missed
            due = self.start + self.k * self.interval
        if due >= self.end:
            # Stay to the end of the window, so the parent's CPU reading at the end of the
            # window never includes this process's teardown.
            await asyncio.sleep(max(0.0, self.end - now))
            return False
        if due > now:
            await asyncio.sleep(due - now)
        figures.lateness.append(max(0.0, time.monotonic() - due))
        self.k += 1
        return True


# --- naive: pymodbus, struct ---------------------------------------------------------------


def _struct_decoder(request: ReadRequest) -> Callable[[Any], list[float]]:
    """Per-tag `struct` decoding of a pymodbus response, as a plain script would write it."""
    start = request.start
    if request.table.is_bits:
        offsets = [t.offset - start for t in request.tags]
        return lambda rr: [float(rr.bits[i]) for i in offsets]
    layout = [(_STRUCT_FORMATS[t.type], 2 * (t.offset - start)) for t in request.tags]
    registers = f">{request.count}H"

    def decode(rr: Any) -> list[float]:
        raw = struct.pack(registers, *rr.registers)
        return [float(struct.unpack_from(fmt, raw, at)[0]) for fmt, at in layout]

    return decode


async def run_naive(
    workload: Workload, endpoints: list[int] | str, duration: float, max_gap: int = MAX_GAP
) -> dict[str, Any]:
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    blocks = read_blocks(workload.tags, max_gap)
    decoders = [_struct_decoder(r) for r in blocks]
    clients: list[Any] = []
    if isinstance(endpoints, str):
        bus = AsyncModbusSerialClient(
            port=endpoints, baudrate=workload.baudrate, parity="N", timeout=0.5
        )
        clients.append(bus)
        links: list[list[tuple[Any, int]]] = [
            [(bus, unit_id) for unit_id in range(1, workload.plcs + 1)]
        ]
    else:
        tcp = [AsyncModbusTcpClient("127.0.0.1", port=p, timeout=1) for p in endpoints]
        clients.extend(tcp)
        links = [[(c, 1)] for c in tcp]
    for client in clients:
        if not await client.connect():
            raise RuntimeError("naive: cannot connect")
    latest: list[list[float]] = [[] for _ in blocks]

    async def read(client: Any, unit_id: int, request: ReadRequest) -> Any:
        start, count = request.start, request.count
        if request.table == Table.HOLDING_REGISTERS:
            return await client.read_holding_registers(start, count=count, device_id=unit_id)
        if request.table == Table.INPUT_REGISTERS:
            return await client.read_input_registers(start, count=count, device_id=unit_id)
        if request.table == Table.COILS:
            return await client.read_coils(start, count=count, device_id=unit_id)
        return await client.read_discrete_inputs(start, count=count, device_id=unit_id)

    async def poll(link: list[tuple[Any, int]], grid: Grid, figures: LinkFigures) -> None:
        while await grid.wait(figures):
            for client, unit_id in link:
                for i, request in enumerate(blocks):
                    figures.requests += 1
                    sent = time.monotonic()
                    try:
                        rr = await read(client, unit_id, request)
                    except Exception:  # any failed read is counted, never fatal
                        figures.errors += 1
                        continue
                    figures.latency.append(time.monotonic() - sent)
                    if rr.isError():
                        figures.errors += 1
                        continue
                    latest[i] = decoders[i](rr)
                    figures.samples += len(request.tags)

    return await _timed(links, workload, duration, poll, clients)


async def _timed(
    links: list[Any],
    workload: Workload,
    duration: float,
    poll: Callable[[Any, Grid, LinkFigures], Awaitable[None]],
    clients: list[Any],
) -> dict[str, Any]:
    print("start", flush=True)
    t0 = time.monotonic() + FIRST_POLL_DELAY
    figures = [LinkFigures() for _ in links]
    await asyncio.gather(
        *(
            poll(link, Grid(workload.interval, t0, t0 + duration), f)
            for link, f in zip(links, figures, strict=True)
        )
    )
    elapsed = time.monotonic() - t0
    for client in clients:
        client.close()
    return summary(figures, elapsed)


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


# --- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines")
    parser.add_argument("kind", choices=("naive", "ceiling", "ceiling-mqtt"))
    parser.add_argument("--workload", required=True, help="a name of benchmarks.workloads")
    parser.add_argument("--endpoints", required=True, help="JSON: a list of ports or a pty path")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--broker", help="ceiling-mqtt: the broker's HOST:PORT")
    parser.add_argument("--max-gap", type=int, default=MAX_GAP, help="registers/bits bridged")
    args = parser.parse_args(argv)
    if args.workload not in ALL_WORKLOADS:
        parser.error(f"unknown workload {args.workload!r}: one of {', '.join(ALL_WORKLOADS)}")
    if args.kind == "ceiling-mqtt" and not args.broker:
        parser.error("ceiling-mqtt needs --broker HOST:PORT")
    workload = ALL_WORKLOADS[args.workload]
    endpoints = json.loads(args.endpoints)
    broker = args.broker if args.kind == "ceiling-mqtt" else None
    if args.kind == "naive":
        result = asyncio.run(run_naive(workload, endpoints, args.duration, args.max_gap))
    else:
        try:
            import uvloop
        except ImportError:
            result = asyncio.run(
                run_ceiling(workload, endpoints, args.duration, broker, args.max_gap)
            )
        else:
            result = uvloop.run(
                run_ceiling(workload, endpoints, args.duration, broker, args.max_gap)
            )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

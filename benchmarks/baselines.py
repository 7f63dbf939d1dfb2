"""The two baselines the agent is measured against, each run as its own process.

    python -m benchmarks.baselines {naive,ceiling,ceiling-mqtt} --workload W1 --endpoints JSON
                                   --duration S [--broker HOST:PORT] [--interval S]

- `naive`: what a plain pymodbus script does: one pymodbus client per PLC (one serial client
  for an RTU bus), one awaited read per block, `struct` decoding per tag, no storage. Plain
  asyncio: pymodbus's client does not run on uvloop.
- `ceiling` (benchmarks/ceiling.py): the fastest simple thing Python can do: asyncio on
  uvloop, hand-framed requests, every block of a poll written at once (pipelined on TCP),
  each answer decoded with one numpy gather, no storage, no abstraction in the way.
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
import json
import math
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.workloads import ALL_WORKLOADS, MAX_GAP, Workload, read_blocks
from connectors.modbus.address import Table
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
    from benchmarks.ceiling import run_ceiling  # it builds on this module's grid and figures

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

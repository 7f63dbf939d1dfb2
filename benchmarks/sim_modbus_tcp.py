"""How many Modbus TCP requests per second the simulated plant serves, and at what CPU cost.

    python -m benchmarks.sim_modbus_tcp [--duration 4] [--connections 32] [--servers 1]

The plant's `ModbusTcpServer` runs in its own process(es) (uvloop when installed), serving
`--units` units of 100 holding registers each; every server process is one gateway port with
all the units. Load comes from separate client processes, one request in flight per connection,
FC03 of 10..50 registers, for a fixed duration per phase:

- `lean`: a raw-socket asyncio client (one `asyncio.Protocol` per connection), so the figure
  says what the server can take rather than what a client library can send;
- `pymodbus`: pymodbus's `AsyncModbusTcpClient`, the baseline measured in the same run
  against the same servers.

Reported per phase: requests/s (answered requests seen by the client, checked against the
server's own count), server CPU-seconds per 10k requests, and the ratios lean / pymodbus.
JSON goes to benchmarks/results/sim_modbus_tcp.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import platform
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from connectors.modbus.framing import mbap_read
from firmware_sim.image import RegisterImage, Table
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer

TARGET_RPS = 20_000
REGISTERS = 100
RESULTS = Path(__file__).parent / "results" / "sim_modbus_tcp.json"


def _use_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    uvloop.install()
    return True


def _run(main: Callable[[], Any]) -> None:
    _use_uvloop()
    asyncio.run(main())


# --- server process -----------------------------------------------------------------------


def _serve(pipe: Connection, n_units: int) -> None:
    async def main() -> None:
        units = {}
        for unit_id in range(1, n_units + 1):
            image = RegisterImage(size=REGISTERS)
            for i in range(REGISTERS):
                image.set_registers(Table.HOLDING_REGISTERS, i, (unit_id * 1000 + i).to_bytes(2))
            units[unit_id] = Unit(image)
        server = ModbusTcpServer(units)
        pipe.send(await server.start())
        loop = asyncio.get_running_loop()
        while True:
            # The command wait runs in a thread that sleeps in recv(): it costs no CPU.
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                break
            pipe.send((time.process_time(), server.stats.requests))
        await server.stop()

    _run(main)


# --- load: lean raw-socket client ---------------------------------------------------------


class _LeanConnection(asyncio.Protocol):
    """Sends FC03, waits for the whole answer, checks it, sends the next one."""

    def __init__(self, unit_id: int, count: int, deadline: Callable[[], bool]) -> None:
        self.unit_id, self.count, self.deadline = unit_id, count, deadline
        self.done = 0
        self.errors = 0
        self.answer_length = 9 + 2 * count
        self.tid = 0
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is only alike
        self.connected.set_result(None)  # uvloop may call this after create_connection returns

    def start(self) -> None:
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.tid = (self.tid + 1) & 0xFFFF
        address = self.tid % (REGISTERS - self.count)
        self.transport.write(mbap_read(self.tid, self.unit_id, 3, address, self.count))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) < self.answer_length:
            return
        tid = (self.buf[0] << 8) | self.buf[1]
        if tid != self.tid or self.buf[7] != 3 or len(self.buf) != self.answer_length:
            self.errors += 1
        else:
            self.done += 1
        self.buf.clear()
        if self.deadline():
            if not self.finished.done():
                self.finished.set_result(None)
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


def _same(proto: _LeanConnection) -> _LeanConnection:
    return proto


def _specs(index: int, n: int, n_units: int) -> list[tuple[int, int]]:
    """(unit id, register count) of each connection: units round-robin, counts 10..50."""
    specs = []
    for k in range(n):
        i = index * n + k
        specs.append((i % n_units + 1, 10 + (i * 13) % 41))
    return specs


def _load_lean(
    pipe: Connection, ports: list[int], connections: int, index: int, n_units: int
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop_at = [float("inf")]

        def deadline() -> bool:
            return loop.time() >= stop_at[0]

        conns = []
        for k, (unit_id, count) in enumerate(_specs(index, connections, n_units)):
            port = ports[k % len(ports)]
            proto = _LeanConnection(unit_id, count, deadline)
            await loop.create_connection(functools.partial(_same, proto), "127.0.0.1", port)
            conns.append(proto)
        await asyncio.gather(*(c.connected for c in conns))
        pipe.send("ready")
        duration = await loop.run_in_executor(None, pipe.recv)
        t0 = loop.time()
        stop_at[0] = t0 + duration
        for conn in conns:
            conn.start()
        await asyncio.gather(*(c.finished for c in conns))
        elapsed = loop.time() - t0
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
        pipe.send((sum(c.done for c in conns), sum(c.errors for c in conns), elapsed))

    _run(main)


# --- load: pymodbus baseline --------------------------------------------------------------


def _load_pymodbus(
    pipe: Connection, ports: list[int], connections: int, index: int, n_units: int
) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    async def main() -> None:
        loop = asyncio.get_running_loop()
        clients = []
        specs = _specs(index, connections, n_units)
        for k in range(connections):
            client = AsyncModbusTcpClient("127.0.0.1", port=ports[k % len(ports)], timeout=5)
            await client.connect()
            clients.append(client)
        pipe.send("ready")
        duration = await loop.run_in_executor(None, pipe.recv)
        t0 = loop.time()
        stop_at = t0 + duration
        done = [0]
        errors = [0]

        async def worker(client: AsyncModbusTcpClient, unit_id: int, count: int) -> None:
            address = 0
            while loop.time() < stop_at:
                address = (address + 1) % (REGISTERS - count)
                rr = await client.read_holding_registers(address, count=count, device_id=unit_id)
                if rr.isError() or len(rr.registers) != count:
                    errors[0] += 1
                else:
                    done[0] += 1

        await asyncio.gather(*(worker(c, u, n) for c, (u, n) in zip(clients, specs, strict=True)))
        elapsed = loop.time() - t0
        for client in clients:
            client.close()
        pipe.send((done[0], errors[0], elapsed))

    _run(main)


# --- orchestration ------------------------------------------------------------------------


def _phase(
    name: str,
    target: Callable[..., None],
    servers: list[Connection],
    ports: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    per_proc = max(1, args.connections // args.client_procs)
    for index in range(args.client_procs):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=target, args=(theirs, ports, per_proc, index, args.units))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    for pipe in pipes:
        if pipe.recv() != "ready":
            raise RuntimeError(f"{name}: a client process failed to connect")
    before = _server_snapshot(servers)
    for pipe in pipes:
        pipe.send(args.duration)
    results = [pipe.recv() for pipe in pipes]
    after = _server_snapshot(servers)
    for proc in procs:
        proc.join()
    done = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    cpu = after[0] - before[0]
    served = after[1] - before[1]
    return {
        "client": name,
        "connections": per_proc * args.client_procs,
        "client_processes": args.client_procs,
        "requests": done,
        "errors": errors,
        "served_by_server": served,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 1),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_s_per_10k": round(cpu / served * 10_000, 4) if served else None,
    }


def _server_snapshot(servers: list[Connection]) -> tuple[float, int]:
    for pipe in servers:
        pipe.send("snapshot")
    snaps = [pipe.recv() for pipe in servers]
    return sum(s[0] for s in snaps), sum(s[1] for s in snaps)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    servers, procs, ports = [], [], []
    for _ in range(args.servers):
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(theirs, args.units))
        proc.start()
        servers.append(ours)
        procs.append(proc)
        ports.append(ours.recv())
    try:
        lean = _phase("lean", _load_lean, servers, ports, args)
        baseline = _phase("pymodbus", _load_pymodbus, servers, ports, args)
    finally:
        for pipe in servers:
            pipe.send("stop")
        for proc in procs:
            proc.join(5)
    cpu_lean, cpu_base = lean["server_cpu_s_per_10k"], baseline["server_cpu_s_per_10k"]
    return {
        "benchmark": "sim_modbus_tcp",
        "python": platform.python_version(),
        "uvloop": _uvloop_available(),
        "cpus": mp.cpu_count(),
        "server_processes": args.servers,
        "units": args.units,
        "duration_s": args.duration,
        "target_requests_per_s": TARGET_RPS,
        "target_met": lean["requests_per_s"] >= TARGET_RPS,
        "runs": [lean, baseline],
        "ratios": {
            "requests_per_s_lean_over_pymodbus": round(
                lean["requests_per_s"] / baseline["requests_per_s"], 2
            )
            if baseline["requests_per_s"]
            else None,
            "server_cpu_per_request_lean_over_pymodbus": round(cpu_lean / cpu_base, 2)
            if cpu_lean and cpu_base
            else None,
        },
    }


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_modbus_tcp")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--servers", type=int, default=1, help="server processes")
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in result["runs"]:
        print(
            f"{r['client']:>9}: {r['requests_per_s']:>9.0f} req/s, "
            f"server {r['server_cpu_s_per_10k']} CPU-s per 10k requests, "
            f"{r['errors']} errors ({r['connections']} connections, {r['seconds']} s)"
        )
    ratios = result["ratios"]
    print(
        f"lean/pymodbus: {ratios['requests_per_s_lean_over_pymodbus']}x requests/s, "
        f"{ratios['server_cpu_per_request_lean_over_pymodbus']}x server CPU per request; "
        f"target {TARGET_RPS} req/s {'met' if result['target_met'] else 'NOT met'}"
    )
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The simulated plant of an acquisition benchmark: one process serving a workload's PLCs.

TCP workloads get one `ModbusTcpServer` port per PLC (unit id 1 on each); the RTU workload
one `ModbusRtuServer` pty with unit ids 1..N. An updater rewrites every register image with
numpy every `UPDATE_PERIOD`, so values keep moving and report-by-exception has something to
pass. The process runs uvloop when installed and is pinned to its own core, away from the
process being measured.

The plant counts what it serves itself: requests (the servers' own statistics) and tag-samples,
the workload's tags each answered read covers (`ServedCounter`), so a client's figures are
checked against an independent count whatever its read plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.workloads import IMAGE_SIZE, TagSpec, Workload
from connectors.modbus.address import Table
from firmware_sim import modbus_pdu, modbus_rtu, modbus_tcp
from firmware_sim.image import RegisterImage
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_rtu import ModbusRtuServer
from firmware_sim.modbus_tcp import ModbusTcpServer

UPDATE_PERIOD = 0.01
# Registers rewritten per table per tick: covers every register tag of every workload.
UPDATED_REGISTERS = 256


class _Updater:
    """Writes float32 values that drift every tick into the images' register tables."""

    def __init__(self, images: list[RegisterImage]) -> None:
        n = UPDATED_REGISTERS // 2
        # Writable numpy views straight onto the images' bytearrays: no copy per tick.
        self._views: list[npt.NDArray[Any]] = []  # big-endian float32
        self._bits: list[npt.NDArray[np.uint8]] = []
        for image in images:
            for table in (image.holding, image.input):
                self._views.append(np.frombuffer(table, dtype=">f4", count=n))
            for bits in (image.coils, image.discrete):
                self._bits.append(np.frombuffer(bits, dtype=np.uint8))
        self._base = 1000.0 + np.arange(n, dtype=np.float64)
        self._phase = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
        self._positions = np.arange(IMAGE_SIZE)
        self.ticks = 0

    def tick(self) -> None:
        t = self.ticks * UPDATE_PERIOD
        values = (self._base + np.sin(self._phase + t)).astype(">f4")
        for view in self._views:
            view[:] = values
        bits = ((self._positions + self.ticks) % 7 == 0).astype(np.uint8)
        for view in self._bits:
            view[:] = bits
        self.ticks += 1


_TABLE_OF_FUNCTION = {table.function_code: table for table in Table}


class ServedCounter:
    """Counts the tag-samples the plant serves: per answered read, the workload's tags inside it.

    A read's count depends only on its function code, start and count (the PDU's first five
    bytes), so it is worked out once per distinct read and cached.
    """

    def __init__(self, tags: tuple[TagSpec, ...]) -> None:
        self.tags = tags
        self.samples = 0
        self._covered: dict[bytes, int] = {}

    def covered(self, head: bytes) -> int:
        """How many of the workload's tags the read `head` (fc, start, count) holds whole."""
        table = _TABLE_OF_FUNCTION.get(head[0]) if head else None
        if table is None or len(head) < 5:
            return 0
        start = int.from_bytes(head[1:3], "big")
        end = start + int.from_bytes(head[3:5], "big")
        return sum(
            1
            for t in self.tags
            if t.table == table and start <= t.offset and t.offset + t.width <= end
        )

    def wrap(
        self, handle: Callable[[RegisterImage, bytes], bytes]
    ) -> Callable[[RegisterImage, bytes], bytes]:
        def counted(image: RegisterImage, pdu: bytes) -> bytes:
            answer = handle(image, pdu)
            if answer and not answer[0] & 0x80:
                head = pdu[:5]
                n = self._covered.get(head)
                if n is None:
                    n = self._covered[head] = self.covered(head)
                self.samples += n
            return answer

        return counted


def _count_served(workload: Workload) -> ServedCounter:
    """Route both servers' PDU handling through a counter (this plant process only)."""
    counter = ServedCounter(workload.tags)
    counted = counter.wrap(modbus_pdu.handle_pdu)
    modbus_tcp.handle_pdu = counted  # type: ignore[assignment,attr-defined]
    modbus_rtu.handle_pdu = counted  # type: ignore[assignment,attr-defined]
    return counter


async def _serve(pipe: Connection, workload: Workload) -> None:
    served = _count_served(workload)
    images = [RegisterImage(size=IMAGE_SIZE) for _ in range(workload.plcs)]
    updater = _Updater(images)
    updater.tick()
    tcp: list[ModbusTcpServer] = []
    rtu: ModbusRtuServer | None = None
    if workload.link == "rtu":
        units = {k + 1: Unit(image) for k, image in enumerate(images)}
        rtu = ModbusRtuServer(units, baudrate=workload.baudrate)
        pipe.send(await rtu.start())
    else:
        ports = []
        for image in images:
            server = ModbusTcpServer({1: Unit(image)})
            ports.append(await server.start())
            tcp.append(server)
        pipe.send(ports)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def update() -> None:
        next_at = loop.time()
        while not stop.is_set():
            updater.tick()
            next_at += UPDATE_PERIOD
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    task = asyncio.create_task(update())
    # The command wait runs in a thread that sleeps in recv(): it costs no CPU.
    while (command := await loop.run_in_executor(None, pipe.recv)) != "stop":
        requests = rtu.stats.requests if rtu else sum(s.stats.requests for s in tcp)
        pipe.send((time.process_time(), requests, served.samples))
        del command
    stop.set()
    await task
    for server in tcp:
        await server.stop()
    if rtu is not None:
        await rtu.stop()


def _main(pipe: Connection, workload: Workload, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(pipe, workload))
    else:
        uvloop.run(_serve(pipe, workload))


@dataclass
class Plant:
    """A running plant process: `endpoints` are its TCP ports, or its pty path for RTU."""

    process: BaseProcess
    pipe: Connection
    endpoints: list[int] | str

    def snapshot(self) -> tuple[float, int, int]:
        """(the plant's CPU seconds, requests answered, tag-samples served), all so far."""
        self.pipe.send("snapshot")
        cpu, requests, samples = self.pipe.recv()
        return float(cpu), int(requests), int(samples)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.pipe.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def start_plant(workload: Workload, core: int | None) -> Plant:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=_main, args=(theirs, workload, core), daemon=True)
    process.start()
    deadline = time.monotonic() + 30
    while not ours.poll(0.1):
        if not process.is_alive() or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the plant for {workload.name} did not start")
    return Plant(process, ours, ours.recv())

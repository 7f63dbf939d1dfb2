"""MC protocol acquisition: lineside's MC source against a naive pymcprotocol loop.

    python -m benchmarks.mc [--duration 3] [--out FILE]

Two workloads shaped as W1 and W3 (benchmarks/workloads.py), on MELSEC devices: W1 is 10 PLCs
x 100 REAL packed from D0; W3 is 50 PLCs x 20 scattered tags of mixed types over D, W, M and X
(the Modbus holding registers, input registers, coils and discrete inputs of W3, one number
per address). A server process (firmware-sim's `McServer`, one port per PLC, 3E binary) serves
them; then, one after the other in this process, each for `--duration` seconds:

- ours: one `McSource` per PLC (the agent's planner, codec and client), all polled in turn as
  fast as they answer, every PLC's poll concurrent;
- naive: pymcprotocol's `Type3E`, one connection per PLC, every tag read on its own
  (`batchread_wordunits` of its words, `batchread_bitunits` for a bit) and decoded in Python:
  what a first script does.

Reported per workload and contender: samples (tag values read) per second, CPU-seconds of
this process per 1M samples, and requests per poll of one PLC, against the planner's own
count (ours must equal it). Targets: ours at least 2x cheaper per sample than naive, and no
more requests than the plan. JSON: benchmarks/results/mc.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import struct
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.workloads import WORKLOADS, TagSpec, Workload

RESULTS = Path(__file__).parent / "results" / "mc.json"
TARGET_RATIO = 2.0
_DEVICE = {"hr": "D", "ir": "W", "co": "M", "di": "X"}
_WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4}


def mc_address(tag: TagSpec) -> str:
    device = _DEVICE[tag.table.value]
    return f"{device}{tag.offset:X}" if device in ("W", "X") else f"{device}{tag.offset}"


def _serve(plcs: int, pipe: Connection) -> None:
    """The server process: `plcs` MC ports over images filled with a pattern."""
    from firmware_sim.image import RegisterImage
    from firmware_sim.mc_server import McServer
    from firmware_sim.modbus_pdu import Unit

    async def main() -> None:
        servers = []
        for k in range(plcs):
            image = RegisterImage()
            for i in range(0, 1024, 2):
                image.holding[2 * i : 2 * i + 4] = struct.pack(">f", k + i / 10)
            image.input[:] = bytes(range(256)) * 8
            for i in range(0, 1024, 3):
                image.coils[i] = image.discrete[i] = 1
            server = McServer(Unit(image=image))
            await server.start()
            servers.append(server)
        pipe.send([s.port for s in servers])
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until told to stop

    asyncio.run(main())


def _source_config(tags: Sequence[TagSpec], port: int, name: str) -> Any:
    from connectors.mc.config import McSourceConfig

    return McSourceConfig.model_validate(
        {
            "type": "mc",
            "name": name,
            "host": "127.0.0.1",
            "port": port,
            "machine": name,
            "timeout": "2s",
            "tags": [
                {"name": t.name, "address": mc_address(t), "type": t.type, "order": "ABCD"}
                for t in tags
            ],
        }
    )


class _Ids:
    def __init__(self, tags: Sequence[TagSpec]) -> None:
        self._ids = {t.name: i for i, t in enumerate(tags)}

    def id_of(self, machine: str, name: str) -> int:
        return self._ids[name]


def run_ours(workload: Workload, ports: list[int], duration: float) -> dict[str, Any]:
    from connectors.mc.source import McSource

    async def main() -> dict[str, Any]:
        sources = [
            McSource(_source_config(workload.tags, port, f"plc{k}"), _Ids(workload.tags))  # type: ignore[arg-type]
            for k, port in enumerate(ports)
        ]
        for s in sources:
            await s.connect()
        groups = [list(s.poll_groups()) for s in sources]
        planned = sources[0].unit_groups(groups[0][0])[0].plan.requests_per_poll
        await asyncio.gather(*(s.poll(g) for s, g in zip(sources, groups, strict=True)))
        start_cpu, start = time.process_time(), time.monotonic()
        requests0 = sum(s.counters["requests"] for s in sources)
        polls = samples = good = 0
        while time.monotonic() - start < duration:
            batches = await asyncio.gather(
                *(s.poll(g) for s, g in zip(sources, groups, strict=True))
            )
            for [batch] in batches:
                samples += len(batch)
                good += int((batch.quality == 0).sum())
            polls += len(sources)
        cpu, wall = time.process_time() - start_cpu, time.monotonic() - start
        requests = sum(s.counters["requests"] for s in sources) - requests0
        for s in sources:
            await s.close()
        return _figures(samples, good, cpu, wall, requests / polls, planned)

    return asyncio.run(main())


def run_naive(workload: Workload, ports: list[int], duration: float) -> dict[str, Any]:
    import pymcprotocol

    clients = []
    for port in ports:
        client = pymcprotocol.Type3E(plctype="Q")
        client.connect("127.0.0.1", port)
        clients.append(client)
    reads = [(mc_address(t), t.type) for t in workload.tags]
    start_cpu, start = time.process_time(), time.monotonic()
    polls = samples = 0
    requests = 0
    while time.monotonic() - start < duration:
        for client in clients:
            for address, type_ in reads:
                if type_ == "bool":
                    client.batchread_bitunits(address, 1)
                else:
                    words = client.batchread_wordunits(address, _WORDS[type_])
                    raw = b"".join(struct.pack("<h", w) for w in words)
                    _decode(raw, type_)
                requests += 1
                samples += 1
            polls += 1
    cpu, wall = time.process_time() - start_cpu, time.monotonic() - start
    for client in clients:
        client.close()
    return _figures(samples, samples, cpu, wall, requests / polls, None)


def _decode(raw: bytes, type_: str) -> float:
    if len(raw) == 2:
        return float(struct.unpack("<h" if type_ == "int16" else "<H", raw)[0])
    # ABCD: the high word first
    swapped = b"".join(raw[i : i + 2] for i in range(len(raw) - 2, -1, -2))
    fmt = {"int32": "<i", "uint32": "<I", "float32": "<f", "float64": "<d"}[type_]
    return float(struct.unpack(fmt, swapped)[0])


def _figures(
    samples: int, good: int, cpu: float, wall: float, per_poll: float, planned: int | None
) -> dict[str, Any]:
    return {
        "samples": samples,
        "good": good,
        "samples_per_s": samples / wall,
        "cpu_s_per_1m_samples": 1e6 * cpu / max(samples, 1),
        "requests_per_poll": per_poll,
        "planned_requests_per_poll": planned,
    }


def run_workload(name: str, duration: float) -> dict[str, Any]:
    workload = WORKLOADS[name]
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(
        target=_serve, args=(workload.plcs, child), daemon=True
    )
    server.start()
    try:
        ports = parent.recv()
        ours = run_ours(workload, ports, duration)
        naive = run_naive(workload, ports, duration)
    finally:
        parent.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()
    ratio = naive["cpu_s_per_1m_samples"] / ours["cpu_s_per_1m_samples"]
    return {
        "workload": workload.title,
        "ours": ours,
        "naive": naive,
        "cpu_ratio_naive_over_ours": ratio,
        "met": ratio >= TARGET_RATIO
        and ours["requests_per_poll"] <= ours["planned_requests_per_poll"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mc")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--workloads", nargs="+", default=["W1", "W3"])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = {name: run_workload(name, args.duration) for name in args.workloads}
    result = {
        "benchmark": "mc",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "duration_s": args.duration,
        "target_ratio": TARGET_RATIO,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    for name, run in runs.items():
        print(
            f"{name}: ours {run['ours']['cpu_s_per_1m_samples']:.1f} CPU-s/1M samples, "
            f"{run['ours']['requests_per_poll']:g} requests/poll (plan "
            f"{run['ours']['planned_requests_per_poll']}); naive "
            f"{run['naive']['cpu_s_per_1m_samples']:.1f} CPU-s/1M, "
            f"{run['naive']['requests_per_poll']:g} requests/poll; "
            f"{run['cpu_ratio_naive_over_ours']:.1f}x {'met' if run['met'] else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

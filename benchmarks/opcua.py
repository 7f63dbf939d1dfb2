"""OPC UA acquisition: our subscribing source against a naive asyncua polling loop, one run.

The simulated server runs in its own process (its CPU is not ours) with N Double variables,
every one changed once a second. Each client runs in its own process too, one after the other
against the same server, for `--duration` seconds after its setup:

- ours: `OpcUaSource` in subscribe mode (publishing interval 1 s), drained once a second as the
  agent's link loop would;
- naive: `asyncua.Client.read_values` of every node once a second (what a first script does).

Reported per client: values/s, CPU-seconds of the client process per 1M values, CPU share of
one core, peak RSS, and the age of a value when the client has it (arrival minus the server's
source timestamp; for ours that is when the drained batch is handed on, the moment the agent
would queue it for SQLite). Writes JSON to benchmarks/results/opcua.json.

    python -m benchmarks.opcua --items 1000 10000 20000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "opcua.json"
TARGET_CPU_SHARE = 0.5  # 20k items at 1 s under half a core


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# -- the server process ----------------------------------------------------------------------


async def serve(items: int) -> None:
    from asyncua import ua

    from firmware_sim.opcua_server import SimOpcUaServer
    from firmware_sim.profile import profile_from_toml

    class Idle:
        name = "bench"
        profile = profile_from_toml('kind = "press"\ndescription = "bench"\ntags = []\n')

        def values(self) -> dict[str, float]:
            return {}

    sim = SimOpcUaServer([Idle()])
    await sim.start()
    ids = [
        ua.NodeId.from_string(await sim.add_variable("bench", f"v{i}", ua.Variant(0.0)))
        for i in range(items)
    ]
    print(sim.endpoint, sim.namespace_index, flush=True)
    server = sim._server  # the benchmark writes in bulk, past the profile machinery
    assert server is not None
    n = 0.0
    while True:
        started = time.monotonic()
        n += 1
        now = ua.DateTime.now(UTC)
        for node_id in ids:
            dv = ua.DataValue(ua.Variant(n), SourceTimestamp=now, ServerTimestamp=now)
            await server.write_attribute_value(node_id, dv)
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


# -- the client processes --------------------------------------------------------------------


async def run_ours(endpoint: str, ns: int, items: int, duration: float) -> dict[str, Any]:
    from agent.clock import SystemClock
    from agent.tags import TagInfo, TagTable
    from connectors.opcua.config import OpcUaSourceConfig
    from connectors.opcua.source import OpcUaSource

    tags = [{"name": f"v{i}", "node_id": f"ns={ns};s=bench.v{i}"} for i in range(items)]
    config = OpcUaSourceConfig.model_validate(
        {
            "type": "opcua",
            "name": "bench",
            "endpoint": endpoint,
            "machine": "bench",
            "tags": tags,
            "timeout": "30s",
        }
    )
    table = TagTable(
        [
            TagInfo(i, f"s/a/l/bench/v{i}", "bench", f"v{i}", "bench", "", 0.0, 0.0)
            for i in range(items)
        ]
    )
    source = OpcUaSource(config, table, SystemClock())
    await source.connect()
    groups = list(source.poll_groups())
    await asyncio.sleep(2.0)  # initial values
    await source.poll(groups)
    values = 0
    ages: list[np.ndarray[Any, Any]] = []
    cpu0, t0 = time.process_time(), time.monotonic()
    deadline = t0 + duration
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        for batch in await source.poll(groups):
            values += len(batch)
            ages.append((time.time_ns() - batch.timestamps()) / 1e9)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    stats = dict(source.statistics())
    await source.close()
    return _figures(values, cpu, wall, ages) | {"subscriptions": stats["subscriptions"]}


async def run_naive(endpoint: str, ns: int, items: int, duration: float) -> dict[str, Any]:
    from asyncua.client.client import Client

    async with Client(endpoint, timeout=30) as client:
        nodes = [client.get_node(f"ns={ns};s=bench.v{i}") for i in range(items)]
        values = 0
        ages: list[np.ndarray[Any, Any]] = []
        cpu0, t0 = time.process_time(), time.monotonic()
        deadline = t0 + duration
        while time.monotonic() < deadline:
            started = time.monotonic()
            dvs = await client.read_attributes(nodes)
            now = time.time()
            values += len(dvs)
            stamps = [dv.SourceTimestamp for dv in dvs]
            ages.append(np.array([now - t.timestamp() for t in stamps if t is not None]))
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    return _figures(values, cpu, wall, ages)


def _figures(
    values: int, cpu: float, wall: float, ages: list[np.ndarray[Any, Any]]
) -> dict[str, Any]:
    age = np.concatenate(ages) if ages else np.zeros(0)
    return {
        "values": values,
        "values_per_s": values / wall,
        "cpu_s": cpu,
        "cpu_share_of_one_core": cpu / wall,
        "cpu_s_per_1m_values": cpu / values * 1e6 if values else None,
        "rss_peak_mb": _rss_peak_bytes() / 2**20,
        "age_p50_s": float(np.percentile(age, 50)) if age.size else None,
        "age_p99_s": float(np.percentile(age, 99)) if age.size else None,
    }


# -- orchestration ---------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.opcua", *args],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


def run(item_counts: list[int], duration: float) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for items in item_counts:
        server = _child("--serve", str(items))
        try:
            assert server.stdout is not None
            endpoint, ns = server.stdout.readline().split()
            figures: dict[str, Any] = {}
            for kind in ("ours", "naive"):
                client = _child("--client", kind, endpoint, ns, str(items), str(duration))
                out, _ = client.communicate(timeout=duration + 300)
                lines = out.strip().splitlines()
                # A client that failed (e.g. the saturated server stopped answering its
                # health probe) is recorded as such; the other figures still count.
                figures[kind] = (
                    json.loads(lines[-1]) if lines else {"error": f"exit {client.returncode}"}
                )
            ours = figures["ours"].get("cpu_s_per_1m_values")
            naive = figures["naive"].get("cpu_s_per_1m_values")
            figures["cpu_per_value_naive_over_ours"] = naive / ours if ours and naive else None
            runs[str(items)] = figures
        finally:
            server.kill()
            server.wait()
    top = runs.get("20000", {}).get("ours", {})
    share = top.get("cpu_share_of_one_core")
    return {
        "benchmark": "opcua",
        "duration_s": duration,
        "interval_s": 1.0,
        "runs": runs,
        "target": {
            "what": "20k monitored items at 1 s under 50 % of one core",
            "cpu_share": share,
            "met": None if share is None else share < TARGET_CPU_SHARE,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.opcua", description=__doc__)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 20000])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    if args.client:
        kind, endpoint, ns, items, duration = args.client
        runner = run_ours if kind == "ours" else run_naive
        result = asyncio.run(runner(endpoint, int(ns), int(items), float(duration)))
        print(json.dumps(result))
        return 0
    result = run(args.items, args.duration)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""OPC UA acquisition: the agent (subscriptions into SQLite) against a naive asyncua polling loop.

    python -m benchmarks.opcua [--items 1000 10000 20000] [--duration 5] [--out FILE]

Per item count, one server process (firmware-sim's `SimOpcUaServer`, pinned to the last core)
serves N Double variables and changes every one of them once a second, in 20 slices spread over
the second (`write_doubles`, the bulk path). The value written is the change time itself
(seconds since the epoch, also the source timestamp), so a value read back from anywhere says
how old it is. Then, one after the other and each in its own process pinned to the first core:

- ours: the real `Agent` with one OPC UA source in subscribe mode (publishing interval 1 s,
  queue size 1) and the SQLite store (defaults: `synchronous = FULL`, 100 ms flushes), built
  from a generated config file and tag CSV;
- naive: `asyncua.Client.read_attributes` of every node once a second, no storage (what a first
  script does).

Each is measured over `--duration` seconds once set up (subscriptions created and the first
values stored; first read done): values per second, CPU-seconds per 1M values and CPU share of
one core of the whole process (every thread: the agent's SQLite writer included), RSS now and
at its peak, and the age of a value: for ours when the transaction holding it has committed to
SQLite (commit time from the store writer's commit listener, values read back from the store
after the run), for naive when its read returns. The server's CPU share over the same window
is recorded, to show it kept up. JSON: benchmarks/results/opcua.json.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.procstat import cpu_seconds

RESULTS = Path(__file__).parent / "results" / "opcua.json"
TARGET_ITEMS = 20000
TARGET_CPU_SHARE = 0.5  # 20k items at 1 s under half a core
SLICES = 20  # server updates per second, each changing 1/SLICES of the nodes
SETUP_TIMEOUT = 300.0
MACHINE = "bench"


def _cores() -> tuple[int, int]:
    """(client core, server core): the first and last allowed CPUs (the same on one CPU)."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[-1]


def _pin(core: int) -> None:
    os.sched_setaffinity(0, {core})


def _memory() -> dict[str, float]:
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "rss_peak_mb": out.get("VmHWM", 0.0)}


def _ages(age: npt.NDArray[np.float64]) -> dict[str, float | None]:
    if not age.size:
        return {"age_p50_s": None, "age_p99_s": None, "age_max_s": None}
    return {
        "age_p50_s": float(np.percentile(age, 50)),
        "age_p99_s": float(np.percentile(age, 99)),
        "age_max_s": float(age.max()),
    }


# -- the server process ----------------------------------------------------------------------


async def serve(items: int) -> None:
    from firmware_sim.opcua_server import SimOpcUaServer
    from firmware_sim.profile import profile_from_toml

    class Folder:
        """A machine without profile tags: its folder holds the benchmark's variables."""

        name = MACHINE
        profile = profile_from_toml('kind = "press"\ndescription = "bench"\ntags = []\n')

        def values(self) -> dict[str, float]:
            return {}

    sim = SimOpcUaServer([Folder()])
    await sim.start()
    ids = await sim.add_doubles(MACHINE, [f"v{i}" for i in range(items)])
    print(sim.endpoint, sim.namespace_index, flush=True)
    # Slices on a drift-free grid: a late slice is written at once, not skipped, so every node
    # still changes once a second on average.
    bounds = [round(items * k / SLICES) for k in range(SLICES + 1)]
    period = 1.0 / SLICES
    tick = time.monotonic()
    while True:
        for k in range(SLICES):
            chunk = ids[bounds[k] : bounds[k + 1]]
            now = time.time()
            await sim.write_doubles(chunk, [now] * len(chunk))
            tick += period
            await asyncio.sleep(max(0.0, tick - time.monotonic()))


# -- the client processes --------------------------------------------------------------------


def _write_config(folder: Path, endpoint: str, ns: int, items: int) -> Path:
    with open(folder / "tags.csv", "w", encoding="utf-8") as f:
        f.write("name,node_id\n")
        f.writelines(f"v{i},ns={ns};s={MACHINE}.v{i}\n" for i in range(items))
    config = folder / "lineside.toml"
    config.write_text(
        f"""config_version = 1

[agent]
id = "opcua-bench"
data_dir = "data"

[plant]
site = "bench"

[web]
enabled = false

[[machines]]
name = "{MACHINE}"
area = "a"
line = "l"
kind = "press"

[[sources]]
name = "ua"
type = "opcua"
endpoint = "{endpoint}"
machine = "{MACHINE}"
mode = "subscribe"
interval = "1s"
timeout = "30s"
tags_file = "tags.csv"
""",
        encoding="utf-8",
    )
    return config


async def run_ours(endpoint: str, ns: int, items: int, duration: float) -> dict[str, Any]:
    from agent.config import load_config
    from agent.runtime import Agent
    from agent.store import Store

    with tempfile.TemporaryDirectory(prefix="opcua-bench-") as tmp:
        agent = Agent(load_config(_write_config(Path(tmp), endpoint, ns, items)))
        source = agent.sources[0]
        writer = agent.writer
        # (commit time, last telemetry seq committed) per commit, from the writer thread.
        commits: list[tuple[int, int]] = []

        def committed() -> None:
            commits.append((time.time_ns(), writer.statistics().last_seq["telemetry"]))

        writer.add_commit_listener(committed)
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        setup_deadline = time.monotonic() + SETUP_TIMEOUT
        while (
            source.statistics().extras.get("monitored_items", 0) < items
            or writer.statistics().readings_written < items
        ):
            if running.done() or time.monotonic() > setup_deadline:
                stop.set()
                await running
                return {"error": f"not set up: {source.statistics().figures()}"}
            await asyncio.sleep(0.1)
        print("steady", flush=True)
        seq0 = writer.statistics().last_seq["telemetry"]
        notes0 = source.statistics().extras["notifications"]
        stored0 = writer.statistics().readings_written
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(duration)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        notes = source.statistics().extras["notifications"] - notes0
        stored = writer.statistics().readings_written - stored0
        seq1 = writer.statistics().last_seq["telemetry"]
        memory = _memory()
        print("done", flush=True)
        stop.set()
        await running
        stats = source.statistics().figures()
        ages = []
        last_seqs = [c[1] for c in commits]
        with Store(Path(tmp) / "data") as store:
            for record in store.read_telemetry(seq0, seq1 - seq0):
                at = commits[bisect.bisect_left(last_seqs, record.seq)][0]
                ages.append(at / 1e9 - record.batch.values)
        age = np.concatenate(ages) if ages else np.zeros(0)
    return (
        {
            "notifications": notes,
            "notifications_per_s": notes / wall,
            "stored_per_s": stored / wall,
            "cpu_s": cpu,
            "cpu_share_of_one_core": cpu / wall,
            "cpu_s_per_1m_values": cpu / notes * 1e6 if notes else None,
        }
        | memory
        | _ages(age)
        | {
            "subscriptions": stats["subscriptions"],
            "monitored_items": stats["monitored_items"],
            "publishes": stats["publishes"],
            "records": seq1 - seq0,
        }
    )


async def run_naive(endpoint: str, ns: int, items: int, duration: float) -> dict[str, Any]:
    from asyncua.client.client import Client

    # asyncua probes the server every second with a 1 s deadline by default; decoding a read of
    # 20k values blocks the loop longer than that and the probe drops the session. The same
    # budget as ours (a probe every timeout / 2) keeps the baseline measuring reads, not probes.
    async with Client(endpoint, timeout=30, watchdog_intervall=15) as client:
        nodes = [client.get_node(f"ns={ns};s={MACHINE}.v{i}") for i in range(items)]
        await client.read_attributes(nodes)
        print("steady", flush=True)
        values = 0
        ages: list[npt.NDArray[np.float64]] = []
        cpu0, t0 = time.process_time(), time.monotonic()
        tick = t0
        while time.monotonic() - t0 < duration:
            dvs = await client.read_attributes(nodes)
            now = time.time()
            values += len(dvs)
            got = [dv.Value.Value for dv in dvs if dv.Value is not None]
            ages.append(now - np.array(got, dtype=np.float64))
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        memory = _memory()
        print("done", flush=True)
    age = np.concatenate(ages) if ages else np.zeros(0)
    return (
        {
            "notifications": values,
            "notifications_per_s": values / wall,
            "cpu_s": cpu,
            "cpu_share_of_one_core": cpu / wall,
            "cpu_s_per_1m_values": cpu / values * 1e6 if values else None,
        }
        | memory
        | _ages(age)
    )


# -- orchestration ---------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.opcua", *args],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


def _measure(server_pid: int, *args: str, timeout: float) -> dict[str, Any]:
    """Run one client to its end; its figures plus the server's CPU share over its window."""
    client = _child(*args)
    assert client.stdout is not None
    figures: dict[str, Any] = {}
    server_cpu0 = t0 = 0.0
    try:
        for line in client.stdout:
            if line.startswith("steady"):
                server_cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
            elif line.startswith("done") and t0:
                figures["server_cpu_share"] = (cpu_seconds(server_pid) - server_cpu0) / (
                    time.monotonic() - t0
                )
            elif line.startswith("{"):
                figures |= json.loads(line)
        client.wait(timeout=timeout)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if client.returncode != 0 and "error" not in figures:
        figures["error"] = f"exit {client.returncode}"
    return figures


def run(item_counts: list[int], duration: float) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    load_before = os.getloadavg()
    for items in item_counts:
        server = _child("--serve", str(items))
        try:
            assert server.stdout is not None
            endpoint, ns = server.stdout.readline().split()
            figures: dict[str, Any] = {}
            for kind in ("ours", "naive"):
                args = ("--client", kind, endpoint, ns, str(items), str(duration))
                figures[kind] = _measure(server.pid, *args, timeout=duration + SETUP_TIMEOUT)
            ours = figures["ours"].get("cpu_s_per_1m_values")
            naive = figures["naive"].get("cpu_s_per_1m_values")
            figures["cpu_per_value_naive_over_ours"] = naive / ours if ours and naive else None
            runs[str(items)] = figures
        finally:
            server.kill()
            server.wait()
    top = runs.get(str(TARGET_ITEMS), {}).get("ours", {})
    share = top.get("cpu_share_of_one_core")
    return {
        "benchmark": "opcua",
        "duration_s": duration,
        "interval_s": 1.0,
        "server_slices_per_s": SLICES,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "runs": runs,
        "target": {
            "what": "20k monitored items at 1 s under 50 % of one core (agent process)",
            "cpu_share": share,
            "met": None if share is None else share < TARGET_CPU_SHARE,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.opcua", description=__doc__)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000, 20000])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    client_core, server_core = _cores()
    if args.serve:
        _pin(server_core)
        asyncio.run(serve(args.serve))
        return 0
    if args.client:
        _pin(client_core)
        kind, endpoint, ns, items, duration = args.client
        runner = run_ours if kind == "ours" else run_naive
        result = asyncio.run(runner(endpoint, int(ns), int(items), float(duration)))
        print(json.dumps(result), flush=True)
        return 0 if "error" not in result else 1
    result = run(args.items, args.duration)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

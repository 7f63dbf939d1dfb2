"""S7 acquisition: lineside's S7 source against a naive python-snap7 loop and snap7's optimizer.

    python -m benchmarks.s7 [--duration 5] [--workloads S7-W1,S7-W3] [--out FILE]

One server process (firmware-sim's `SimS7Server`, python-snap7's server, one per PLC, pinned to
the last core) serves every PLC of a workload; it counts the read jobs it answers. Then, one
after the other and each in its own process pinned to the first core, for the same duration:

- ours: one `S7Source` per PLC (the planner's multi-reads, the vectorised codec), each polled
  on the workload's grid in its own task, readings counted, not stored (the acquisition path
  alone: benchmarks/acquisition.py measures the whole agent with storage);
- naive: python-snap7's synchronous `Client`, one `db_read` (or `mb_read`) per tag and its
  `snap7.util` getter, PLC after PLC: what a first script does;
- optimizer: python-snap7's own multi-variable read optimizer (`Client.read_multi_vars`, in
  chunks of its 20-variable limit) with the same getters.

Measured per contender: samples (tag readings) per second, CPU seconds per 1M samples (every
thread, over the window), and read jobs per poll of one PLC as the server counted them; the
planner's own count (`minimum_requests` of the plan) is printed beside it. JSON results go to
benchmarks/results/s7.json, a table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.window import measure

RESULTS = Path(__file__).parent / "results" / "s7.json"
CONTENDERS = ("ours", "naive", "optimizer")
TARGET_CPU_VS_NAIVE = 0.5  # at least 2x cheaper per sample
DB_SIZE = 1024
MARKERS = 256


@dataclass(frozen=True, slots=True)
class S7Workload:
    name: str
    title: str
    plcs: int
    tags: tuple[str, ...]  # addresses; every PLC of a workload has the same
    interval: float


def contiguous_reals(n: int) -> tuple[str, ...]:
    return tuple(f"DB1.DBD{4 * i}:REAL" for i in range(n))


SCATTERED = (
    "DB1.DBD0:REAL",
    "DB1.DBD4:REAL",
    "DB1.DBW18:INT",
    "DB1.DBD50:UDINT",
    "DB1.DBD80:REAL",
    "DB1.DBW122:INT",
    "DB1.DBB180:LREAL",
    "DB1.DBW400",
    "DB2.DBW0",
    "DB2.DBD10:DINT",
    "DB2.DBD60:REAL",
    "DB2.DBW140",
    "DB2.DBW260:INT",
    "DB2.DBD270:UDINT",
    "DB3.DBX0.0",
    "DB3.DBX0.3",
    "DB3.DBX5.0",
    "MW10",
    "M2.1",
    "MD100:REAL",
)

WORKLOADS = {
    "S7-W1": S7Workload("S7-W1", "10 CPUs x 100 REAL, contiguous in DB1, every 100 ms", 10,
                        contiguous_reals(100), 0.1),
    "S7-W3": S7Workload("S7-W3", "50 CPUs x 20 scattered tags (3 DBs, markers), every 1 s", 50,
                        SCATTERED, 1.0),
}  # fmt: skip


# --- the server process --------------------------------------------------------------------


def serve(plcs: int) -> None:
    """Start `plcs` CPUs; print their ports; answer each stdin line with the read-job count."""
    from snap7.type import SrvArea

    from firmware_sim.faults import Faults
    from firmware_sim.s7_server import SimS7Server

    servers = []
    for n in range(plcs):
        dbs = {db: bytearray((n + db + i) % 251 for i in range(DB_SIZE)) for db in (1, 2, 3)}
        server = SimS7Server(dbs, Faults())
        server.register_area(SrvArea.MK, 0, bytearray(MARKERS))
        server.start_on("127.0.0.1", 0)
        servers.append(server)
    ports = [s.server_socket.getsockname()[1] for s in servers if s.server_socket is not None]
    print(json.dumps({"ports": ports}), flush=True)
    for _ in sys.stdin:
        print(json.dumps({"reads": sum(s.reads for s in servers)}), flush=True)
    for server in servers:
        server.stop()


class Server:
    def __init__(self, plcs: int, core: int | None) -> None:
        def pin() -> None:
            if core is not None:
                os.sched_setaffinity(0, {core})

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.s7", "serve", "--plcs", str(plcs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pin,
        )
        assert self.proc.stdout is not None
        self.ports: list[int] = json.loads(self.proc.stdout.readline())["ports"]

    def reads(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        count: int = json.loads(self.proc.stdout.readline())["reads"]
        return count

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


# --- the contenders (each `python -m benchmarks.s7 client ...`) ----------------------------


def _config_text(workload: S7Workload, ports: list[int]) -> str:
    lines = ['config_version = 1\n[agent]\nid = "bench-s7"\n[plant]\nsite = "bench"']
    for k in range(len(ports)):
        lines.append(f'[[machines]]\nname = "m{k:03d}"\narea = "a"\nline = "l"')
    rows = ",\n".join(
        f'  {{ name = "t{i:03d}", address = "{a}" }}' for i, a in enumerate(workload.tags)
    )
    for k, port in enumerate(ports):
        lines.append(
            f'[[sources]]\nname = "plc{k:03d}"\ntype = "s7"\nhost = "127.0.0.1"\nport = {port}\n'
            f'machine = "m{k:03d}"\npoll_interval = "{round(workload.interval * 1000)}ms"\n'
            f"max_gap = 16\ntags = [\n{rows}\n]"
        )
    return "\n".join(lines) + "\n"


async def _ours(workload: S7Workload, ports: list[int], duration: float) -> dict[str, Any]:
    from agent.config import load_config
    from agent.model import Quality
    from agent.tags import TagTable
    from connectors.s7.config import S7SourceConfig
    from connectors.s7.source import S7Source

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lineside.toml"
        path.write_text(_config_text(workload, ports), encoding="utf-8")
        config = load_config(path)
    tags = TagTable.from_config(config)
    sources: list[S7Source] = []
    for source_config in config.sources:
        assert isinstance(source_config, S7SourceConfig)
        source = S7Source(source_config, tags)
        await source.connect()
        sources.append(source)
    counts = {"samples": 0, "polls": 0}
    planned = sources[0].plans()[next(iter(sources[0].poll_groups()))]
    print("started", flush=True)
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def run(source: S7Source) -> None:
        group = list(source.poll_groups())
        next_at = loop.time()
        while next_at < end:
            for batch in await source.poll(group):
                counts["samples"] += int((batch.quality == Quality.GOOD).sum())
            counts["polls"] += 1
            next_at += workload.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    await asyncio.gather(*(run(s) for s in sources))
    for source in sources:
        await source.close()
    return {**counts, "planned_requests": planned.minimum_requests}


def _snap7_reader(workload: S7Workload) -> tuple[list[dict[str, Any]], list[Callable[[Any], Any]]]:
    """snap7 read items and getters for the workload's tags (what a script would write)."""
    from snap7.type import Area
    from snap7.util import get_bool, get_dint, get_int, get_lreal, get_real, get_udint, get_word

    from connectors.s7.address import Area as S7Area
    from connectors.s7.address import parse_address

    getters = {"REAL": get_real, "INT": get_int, "DINT": get_dint, "UDINT": get_udint,
               "WORD": get_word, "DWORD": get_udint, "LREAL": get_lreal}  # fmt: skip
    items: list[dict[str, Any]] = []
    decoders: list[Callable[[Any], Any]] = []
    for text in workload.tags:
        a = parse_address(text)
        area = Area.DB if a.area is S7Area.DB else Area.MK
        items.append({"area": area, "db_number": a.db, "start": a.start, "size": a.size})
        if a.type == "BOOL":
            decoders.append(functools.partial(_bit, get_bool, bit=a.bit or 0))
        else:
            decoders.append(functools.partial(_value, getters[a.type]))
    return items, decoders


def _bit(get: Callable[..., Any], data: Any, *, bit: int) -> Any:
    return get(data, 0, bit)


def _value(get: Callable[..., Any], data: Any) -> Any:
    return get(data, 0)


def _snap7_loop(
    workload: S7Workload, ports: list[int], duration: float, optimizer: bool
) -> dict[str, Any]:
    import snap7

    items, decoders = _snap7_reader(workload)
    clients = []
    for port in ports:
        client = snap7.Client()
        client.connect("127.0.0.1", 0, 1, port)
        clients.append(client)
    counts = {"samples": 0, "polls": 0}
    print("started", flush=True)
    end = time.monotonic() + duration
    next_at = time.monotonic()
    while next_at < end:
        for client in clients:
            if optimizer:
                values = []
                for at in range(0, len(items), snap7.Client.MAX_VARS):
                    chunk = items[at : at + snap7.Client.MAX_VARS]
                    _, data = client.read_multi_vars(chunk)
                    values += [
                        d(x) for d, x in zip(decoders[at : at + len(chunk)], data, strict=True)
                    ]
            else:
                values = [
                    d(client.read_area(i["area"], i["db_number"], i["start"], i["size"]))
                    for i, d in zip(items, decoders, strict=True)
                ]
            counts["samples"] += len(values)
            counts["polls"] += 1
        next_at += workload.interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    for client in clients:
        client.disconnect()
    return counts


def client(contender: str, workload_name: str, ports: list[int], duration: float) -> None:
    workload = WORKLOADS[workload_name]
    if contender == "ours":
        result = asyncio.run(_ours(workload, ports, duration))
    else:
        result = _snap7_loop(workload, ports, duration, optimizer=contender == "optimizer")
    print(json.dumps(result), flush=True)


# --- the run -------------------------------------------------------------------------------


def _cores() -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[-1]) if len(allowed) > 1 else (None, None)


def run_workload(workload: S7Workload, duration: float) -> dict[str, Any]:
    client_core, server_core = _cores()
    server = Server(workload.plcs, server_core)
    rows: dict[str, Any] = {}
    try:
        for contender in CONTENDERS:
            before = server.reads()
            cmd = [sys.executable, "-m", "benchmarks.s7", "client", "--contender", contender]
            cmd += ["--workload", workload.name, "--duration", str(duration)]
            cmd += ["--ports", ",".join(map(str, server.ports))]
            m = measure(cmd, lambda line: line == "started", client_core, duration)
            if m.returncode != 0:
                raise RuntimeError(f"{contender} failed:\n" + "\n".join(m.stderr[-20:]))
            result = json.loads(m.stdout[-1])
            reads = server.reads() - before
            samples = result["samples"]
            rows[contender] = {
                "samples": samples,
                "samples_per_s": samples / duration,
                "cpu_s": m.cpu_s,
                "cpu_s_per_1m_samples": m.cpu_s / samples * 1e6 if samples else None,
                "requests_per_poll": reads / result["polls"] if result["polls"] else None,
                **({"planned_requests": result["planned_requests"]} if contender == "ours" else {}),
            }
    finally:
        server.close()
    ours, naive = rows["ours"], rows["naive"]
    ratio = (
        ours["cpu_s_per_1m_samples"] / naive["cpu_s_per_1m_samples"]
        if ours["cpu_s_per_1m_samples"] and naive["cpu_s_per_1m_samples"]
        else None
    )
    return {
        "title": workload.title,
        "contenders": rows,
        "cpu_per_sample_ours_vs_naive": ratio,
        "cpu_target_met": ratio is not None and ratio <= TARGET_CPU_VS_NAIVE,
        "requests_target_met": ours["requests_per_poll"] is not None
        and ours["requests_per_poll"] <= ours["planned_requests"] + 1e-9,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s7")
    sub = parser.add_subparsers(dest="command")
    serve_p = sub.add_parser("serve")
    serve_p.add_argument("--plcs", type=int, required=True)
    client_p = sub.add_parser("client")
    client_p.add_argument("--contender", choices=CONTENDERS, required=True)
    client_p.add_argument("--workload", choices=list(WORKLOADS), required=True)
    client_p.add_argument("--ports", required=True)
    client_p.add_argument("--duration", type=float, required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.plcs)
        return 0
    if args.command == "client":
        client(
            args.contender, args.workload, [int(p) for p in args.ports.split(",")], args.duration
        )
        return 0
    results = {}
    for name in args.workloads.split(","):
        results[name] = run_workload(WORKLOADS[name], args.duration)
        print(f"{name}: {WORKLOADS[name].title}")
        print(f"  {'contender':<10} {'samples/s':>10} {'CPU-s/1M':>10} {'requests/poll':>14}")
        for contender, row in results[name]["contenders"].items():
            per_1m = row["cpu_s_per_1m_samples"]
            per_poll = row["requests_per_poll"]
            print(
                f"  {contender:<10} {row['samples_per_s']:>10,.0f} "
                f"{per_1m if per_1m is None else round(per_1m, 2)!s:>10} "
                f"{per_poll if per_poll is None else round(per_poll, 2)!s:>14}"
            )
        planned = results[name]["contenders"]["ours"]["planned_requests"]
        print(f"  planner's minimum: {planned} per poll; ours/naive CPU per sample: "
              f"{results[name]['cpu_per_sample_ours_vs_naive']}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    for name, r in results.items():
        met = r["cpu_target_met"] and r["requests_target_met"]
        print(f"{name}: targets {'met' if met else 'NOT met'} (2x cheaper than naive per sample; "
              "no more requests than the planner's minimum)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

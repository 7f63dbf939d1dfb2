"""End to end at plant rates: the agent from its CLI, poll → SQLite → MQTT, against two ceilings.

    python -m benchmarks.endtoend [--duration 10] [--reps 2] [--workloads W1,W3,W2,S200,C1000]
                                  [--out FILE]

One mosquitto (stock settings, benchmarks/broker.py) and one subscriber in this process take
every telemetry message under `lineside/#`. Per workload (benchmarks/workloads.py, END_TO_END)
one plant process (benchmarks/plant.py, pinned to the last core) serves the PLCs and counts the
tag-samples it serves itself. Then, one after the other and for the same window, each
contender polls it from its own process pinned to core 0:

- `agent`: `lineside run -c CONFIG --duration D --stats FILE` with a generated config:
  `report = "all"`, SQLite with `synchronous = FULL` (the default), an MQTT sink to the broker
  (QoS 1, `batch = "auto"`);
- `ceiling-mqtt`: the raw-socket ceiling (benchmarks/baselines.py: uvloop, pipelined
  hand-framed reads planned with every gap bridged that a read's size allows, numpy decoding)
  publishing one JSON message per poll and PLC with paho
  (QoS 1), in the agent's payload format; no storage;
- `naive`: one pymodbus client per PLC, the ceiling's reads, struct decoding, no storage, no
  MQTT.

The agent plans its reads itself (its default `max_gap`); the others use the bridging plan.

The repetitions are interleaved (rep 1: every workload, every contender; then rep 2, the
contenders in reverse order), so a change in the shared machine's load hits all of them.

Measured over the window (from the contender's "polling" line to `--duration` later):
- CPU seconds of the contender's whole process tree (/proc schedstat of every thread of every
  descendant), per 1M tag-samples the plant served in the window, and as % of one core;
- samples served (the plant's count) and requests it answered, so requests per poll;
- jitter: lateness of each poll behind its grid point (the worst of the links' p99);
- data age at the broker: the subscriber's receive time minus the reading's `ts` (ms), for
  every record whose `ts` falls in the window after a one-second warm-up, p50 and p99;
- samples delivered to the broker in the window (live), and for the agent, readings stored;
- RSS: the largest sum of VmRSS over the process tree sampled in the window.

W2 runs the agent back to back with `poll_interval = "0s"` when the config accepts it, else
"1ms" (the JSON says which). C1000 starts the agent with a soft RLIMIT_NOFILE of 1024, so the
run shows whether it raises the limit itself and opens every connection. The agent's window
opens 2 s after its "polling" line (5 s at C1000), once its connections and its MQTT sink are
up: the baselines connect before they say "start".

Where each part lives: the contenders' commands and configs in benchmarks/contenders.py, one
process's measured window in benchmarks/window.py, the subscriber and the data age in
benchmarks/subscriber.py; this module runs the workloads and repetitions, turns each window
into figures and writes the results, the table and the targets. JSON goes to
benchmarks/results/endtoend.json, a summary table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.acquisition import machine
from benchmarks.broker import Broker
from benchmarks.contenders import (
    CONTENDERS,
    CONTENDERS_OF,
    back_to_back_interval,
    run_agent,
    run_baseline,
)
from benchmarks.plant import start_plant
from benchmarks.subscriber import WARM_UP_S, Arrival, Subscriber, delivery
from benchmarks.window import Window
from benchmarks.workloads import BRIDGING_GAP, END_TO_END, Workload, read_blocks

RESULTS = Path(__file__).parent / "results" / "endtoend.json"

# Targets of issue 17 (CPU per 1M samples, ratios in the same run, absolute ages and sizes).
TARGET_W1_CPU_PER_1M = 2.0
TARGET_W1_CPU_VS_CEILING = 1.5
TARGET_JITTER_P99_S = 0.005
TARGET_W3_CPU_PER_1M = 15.0
TARGET_W2_RATE = 600_000.0
TARGET_AGE_P99_MS = 50.0
TARGET_W1_RSS_BYTES = 60 * 1024 * 1024
TARGET_S200_CORE_PERCENT = 10.0
# A Raspberry Pi 4 core is about 3-4 times slower than this machine's.
PI4_SLOWDOWN = (3.0, 4.0)


# --- one contender's figures ---------------------------------------------------------------


def figures(
    workload: Workload, m: Window, extra: dict[str, Any], got: list[Arrival], mqtt_path: bool
) -> dict[str, Any]:
    """One contender's figures: the plant's count first, the contender's own beside it."""
    seconds = (m.end_ns - m.start_ns) / 1e9
    assert m.served is not None  # every contender's window is measured with the plant
    plant_cpu, requests, served = m.served
    polls = served / len(workload.tags) if workload.tags else 0
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "samples_served": served,
        "served_per_s": served / seconds if seconds else None,
        "requests_served": requests,
        "requests_per_poll": requests / polls if polls else None,
        "cpu_s": round(m.cpu_s, 3),
        "cpu_s_per_1m_samples": m.cpu_s / served * 1e6 if served else None,
        "core_percent": 100 * m.cpu_s / seconds if seconds else None,
        "rss_bytes": m.rss_bytes,
        "plant_cpu_s": round(plant_cpu, 3),
        **extra,
    }
    if mqtt_path:
        out.update(delivery(got, extra["agent_id"], m.start_ns, m.end_ns))
    return out


# --- orchestration -------------------------------------------------------------------------


def _cores() -> tuple[int | None, int | None]:
    """(the measured process's core, the plant's core); no pinning on a single core."""
    cores = sorted(os.sched_getaffinity(0))
    return (cores[0], cores[-1]) if len(cores) >= 2 else (None, None)


def run_workload(
    workload: Workload,
    rep: int,
    duration: float,
    broker: Broker,
    subscriber: Subscriber,
    work: Path,
    fast_interval: str,
) -> dict[str, Any]:
    core, plant_core = _cores()
    contenders = CONTENDERS_OF.get(workload.name, CONTENDERS)
    if rep % 2:
        contenders = tuple(reversed(contenders))
    plant = start_plant(workload, plant_core)
    runs: dict[str, Any] = {}
    try:
        for name in contenders:
            subscriber.take()  # whatever a previous contender left in flight
            try:
                if name == "agent":
                    folder = work / f"{workload.name}-{rep}"
                    m, extra = run_agent(
                        workload, plant, broker, duration, core, folder, fast_interval
                    )
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    m, extra = run_baseline(name, workload, plant, broker, duration, core)
            except RuntimeError as exc:  # recorded, and the other runs go on
                print(f"{workload.name} {name} failed: {exc}", file=sys.stderr, flush=True)
                runs[name] = {"failed": str(exc)[-3000:]}
                continue
            time.sleep(0.5)  # the last messages of the window reach the subscriber
            runs[name] = figures(workload, m, extra, subscriber.take(), name != "naive")
    finally:
        plant.stop()
    return {
        "workload": workload.name,
        "title": workload.title,
        "rep": rep + 1,
        "tags": workload.total_tags,
        "interval_s": workload.interval,
        "ceiling_plan_requests_per_poll": len(read_blocks(workload.tags, BRIDGING_GAP)),
        "runs": runs,
        "ratios": ratios(runs),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(runs: dict[str, Any]) -> dict[str, float | None]:
    agent = runs.get("agent")
    out: dict[str, float | None] = {}
    if agent is None or "failed" in agent:
        return out
    for base in ("ceiling-mqtt", "naive"):
        other = runs.get(base)
        if other is not None and "failed" not in other:
            out[f"cpu_per_sample_agent_over_{base}"] = _ratio(
                agent["cpu_s_per_1m_samples"], other["cpu_s_per_1m_samples"]
            )
            out[f"rate_agent_over_{base}"] = _ratio(agent["served_per_s"], other["served_per_s"])
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, per repetition: the value, the limit and whether it was met."""
    out: list[dict[str, Any]] = []

    def target(rep: int, name: str, value: float | None, limit: float, at_least: bool) -> None:
        met = value is not None and (value >= limit if at_least else value <= limit)
        out.append({"rep": rep, "target": name, "value": value, "limit": limit, "met": met})

    for w in result["runs"]:
        rep, name = w["rep"], w["workload"]
        agent = w["runs"].get("agent", {"failed": "not run"})
        if "failed" in agent:
            target(rep, f"{name}: the agent ran", None, 1, True)
            continue
        if name == "W1":
            target(rep, "W1 CPU-s per 1M <=", agent["cpu_s_per_1m_samples"],
                   TARGET_W1_CPU_PER_1M, False)  # fmt: skip
            target(rep, "W1 CPU per sample / raw+MQTT <=",
                   w["ratios"].get("cpu_per_sample_agent_over_ceiling-mqtt"),
                   TARGET_W1_CPU_VS_CEILING, False)  # fmt: skip
            target(rep, "W1 jitter p99 (s) <=", agent["jitter_p99_s"], TARGET_JITTER_P99_S, False)
            target(rep, "W1 data age p99 (ms) <=", agent["age_p99_ms"], TARGET_AGE_P99_MS, False)
            target(rep, "W1 RSS (bytes) <=", agent["rss_bytes"], TARGET_W1_RSS_BYTES, False)
        elif name == "W3":
            target(rep, "W3 CPU-s per 1M <=", agent["cpu_s_per_1m_samples"],
                   TARGET_W3_CPU_PER_1M, False)  # fmt: skip
            target(rep, "W3 requests per poll <=", agent["requests_per_poll"],
                   w["ceiling_plan_requests_per_poll"], False)  # fmt: skip
            target(rep, "W3 data age p99 (ms) <=", agent["age_p99_ms"], TARGET_AGE_P99_MS, False)
        elif name == "W2":
            target(rep, "W2 stored/s >=", agent["stored_per_s"], TARGET_W2_RATE, True)
            target(rep, "W2 delivered live/s >=", agent["delivered_per_s"], TARGET_W2_RATE, True)
        elif name == "S200":
            target(rep, "S200 % of one core <", agent["core_percent"],
                   TARGET_S200_CORE_PERCENT, False)  # fmt: skip
        elif name == "C1000":
            target(rep, "C1000 sources answering >=", agent["sources_answering"], 1000, True)
    return out


def run(workloads: list[str], duration: float, reps: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # the plant of C1000 holds 2,000 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs = []
    with tempfile.TemporaryDirectory(prefix="lineside-e2e-") as tmp:
        work = Path(tmp)
        fast_interval = back_to_back_interval(work)
        with Broker(work / "broker") as broker:
            subscriber = Subscriber(broker.host, broker.port)
            try:
                for rep in range(reps):
                    for name in workloads:
                        runs.append(
                            run_workload(
                                END_TO_END[name], rep, duration, broker, subscriber, work,
                                fast_interval,
                            )
                        )  # fmt: skip
                        print(table_rows(runs[-1]), flush=True)
            finally:
                subscriber.close()
    result = {
        "benchmark": "endtoend",
        "machine": machine(),
        "load_average": os.getloadavg(),
        "duration_s": duration,
        "reps": reps,
        "back_to_back_interval": fast_interval,
        "runs": runs,
    }
    result["targets"] = targets(result)
    return result


# --- output --------------------------------------------------------------------------------


def _num(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


TABLE_HEAD = (
    "| workload | rep | contender | served/s | CPU-s per 1M | % core (Pi 4) | req/poll "
    "| jitter p99 ms | age p50/p99 ms | delivered/s | stored/s | RSS MB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_rows(w: dict[str, Any]) -> str:
    rows = []
    for name, r in w["runs"].items():
        if "failed" in r:
            rows.append(f"| {w['workload']} | {w['rep']} | {name} | failed |")
            continue
        core = r["core_percent"]
        pi4 = "-" if core is None else f"{core * PI4_SLOWDOWN[0]:.0f}-{core * PI4_SLOWDOWN[1]:.0f}"
        rows.append(
            f"| {w['workload']} | {w['rep']} | {name} | {_num(r['served_per_s'], digits=0)} "
            f"| {_num(r['cpu_s_per_1m_samples'], digits=2)} | {_num(core)} ({pi4}) "
            f"| {_num(r['requests_per_poll'])} | {_num(r['jitter_p99_s'], 1000)} "
            f"| {_num(r.get('age_p50_ms'))}/{_num(r.get('age_p99_ms'))} "
            f"| {_num(r.get('delivered_per_s'), digits=0)} "
            f"| {_num(r.get('stored_per_s'), digits=0)} | {_num(r['rss_bytes'], 1 / 2**20)} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.endtoend")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--workloads", default=",".join(END_TO_END))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in END_TO_END]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}: one of {', '.join(END_TO_END)}")
    if args.duration <= WARM_UP_S:
        parser.error(f"--duration must be more than the {WARM_UP_S:g} s warm-up")
    print(TABLE_HEAD, flush=True)
    result = run(names, args.duration, args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for t in result["targets"]:
        print(f"rep {t['rep']}: {t['target']} {t['limit']:g}: {t['value']} "
              f"{'met' if t['met'] else 'NOT met'}")  # fmt: skip
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

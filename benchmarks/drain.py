"""Forwarding benchmarks: drain rate of a stored backlog to MQTT, HTTP and Sparkplug B, and the
latency from poll to broker at W1 load.

    python -m benchmarks.drain [--records 20000] [--tags 50] [--batch 1000]
                               [--latency-duration 8] [--latency-workloads W1[,W3,W2]]
                               [--latency-report changes|all] [--no-latency] [--no-drain]
                               [--broker-nodelay] [--out FILE]

Drain: a store is filled with `--records` telemetry records (one machine's poll of `--tags`
float64 readings each, an hour old: a backlog after an outage; benchmarks/backlog.py). Then, one
after the other, each contender drains a copy of it in its own process pinned to core 0, while
mosquitto (stock settings) and a minimal HTTP receiver (benchmarks/http_receiver.py) run on
core 1 (benchmarks/drain_contenders.py):

- `mqtt`: `Forwarder` + `MqttSink` (QoS 1, MQTT 5, `batch = "auto"`: the backlog goes as one
  columnar message per `--batch` records, two sends in flight), against `mqtt-paho`: bare paho
  publishing the same messages (built before the clock starts) and waiting for every PUBACK,
  the ceiling of one MQTT connection and of the broker;
- `http`: `Forwarder` + `HttpSink` in POSTs of `--batch` records (columnar bodies), against
  `http-httpx`: httpx posting the same bodies, built beforehand;
- `sparkplug`: `Forwarder` + `SparkplugSink` (DDATA at QoS 0, one fence per send), against
  `sparkplug-paho`: bare paho, same-size QoS 0 messages with one fence per `--batch`.

Reported: records/s (and readings/s), CPU-seconds per 1M records of the draining process (every
thread), and the ratios forwarder / baseline in the same run.

Latency: the plant of each `--latency-workloads` (default W1; benchmarks/plant.py, core 1) and
`lineside run` (core 0) with an MQTT sink to the same broker; a subscriber in this process takes
`receive time - ts` of every telemetry message (`ts` is the poll's timestamp, in whole
milliseconds; a batch message gives one figure per record), after one second of warm-up.
`--latency-report all` stores (and so sends) every sample instead of the workload's own
report mode. It also counts the records delivered (distinct seqs) against the records the agent
stored: with W2 (back to back) that says whether the live path keeps up with acquisition.
`--broker-nodelay` runs the broker with `set_tcp_nodelay true` (benchmarks/broker.py says why).

JSON goes to benchmarks/results/drain.json, a summary to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

from agent.store import DB_NAME
from benchmarks import backlog
from benchmarks.acquisition import machine
from benchmarks.broker import Broker
from benchmarks.drain_contenders import BASELINES, FORWARDERS
from benchmarks.http_receiver import start_receiver
from benchmarks.plant import start_plant
from benchmarks.subscriber import percentile, subscribed
from benchmarks.workloads import WORKLOADS, write_agent_config

RESULTS = Path(__file__).parent / "results" / "drain.json"
# Records per send: 1000 records of 50 float64 readings are a 0.7 MB batch message with binary
# values (1.2 MB JSON); a stock mosquitto takes any valid MQTT packet (max_packet_size and
# message_size_limit default to no limit, the protocol's bound is 256 MB).
BATCH = 1000
TARGET_RECORDS_PER_S = 200_000  # the issue: drained to a local mosquitto in batches
CONTENDER_TIMEOUT = 900.0  # seconds for one drain process, start-up included
WARM_UP_S = 1.0  # latency: messages of the agent's first second are left out


def _cores() -> tuple[int | None, int | None]:
    """(the measured process's core, the far sides' core), or None on a one-core machine."""
    cores = sorted(os.sched_getaffinity(0))
    return (cores[0], cores[1]) if len(cores) >= 2 else (None, None)


def _pin(pid: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(pid, {core})


# --- drain ---------------------------------------------------------------------------------


def run_contender(
    kind: str, seed: Path, work: Path, records: int, batch: int, port: int, url: str
) -> dict[str, Any]:
    data_dir = work / kind
    shutil.copytree(seed, data_dir)  # every contender drains the same, untouched backlog
    core, _ = _cores()
    cmd = [sys.executable, "-m", "benchmarks.drain_contenders", kind, "--data-dir", str(data_dir)]
    cmd += ["--records", str(records), "--batch", str(batch), "--port", str(port), "--url", url]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=CONTENDER_TIMEOUT,
            preexec_fn=(lambda: _pin(0, core)) if core is not None else None,
            check=False,
        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    seconds, cpu = result["seconds"], result["cpu_s"]
    result["records_per_s"] = result["records"] / seconds
    result["cpu_s_per_1m_records"] = cpu / result["records"] * 1e6
    result["core_percent"] = 100 * cpu / seconds
    return result


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run_drains(
    work: Path, records: int, tags: int, batch: int, broker: Broker, url: str
) -> dict[str, Any]:
    seed = work / "seed"
    started = time.perf_counter()
    backlog.fill(seed, records, tags)
    fill_s = time.perf_counter() - started
    runs: dict[str, Any] = {}
    for forwarder, baseline in zip(FORWARDERS, BASELINES, strict=True):
        for kind in (forwarder, baseline):
            print(f"   {kind} ...", flush=True)
            runs[kind] = run_contender(kind, seed, work, records, batch, broker.port, url)
            runs[kind]["readings_per_s"] = runs[kind]["records_per_s"] * tags
    ratios = {}
    for forwarder, baseline in zip(FORWARDERS, BASELINES, strict=True):
        ours, ceiling = runs[forwarder], runs[baseline]
        ratios[forwarder] = {
            "rate": _ratio(ours["records_per_s"], ceiling["records_per_s"]),
            "cpu_per_record": _ratio(ours["cpu_s_per_1m_records"], ceiling["cpu_s_per_1m_records"]),
        }
    return {"fill_s": fill_s, "runs": runs, "ratios": ratios}


# --- latency -------------------------------------------------------------------------------


class Subscriber:
    """Every telemetry message under `lineside/#`: (receive time ns, the payload's ts in ms),
    one per record (a batch message gives one per record it carries), and the seqs seen."""

    def __init__(self, host: str, port: int) -> None:
        self.samples: list[tuple[int, int]] = []
        self.received_at: dict[int, int] = {}  # seq → receive time ns (the first message's)
        self.seqs: set[int] = set()
        self.readings = 0
        self.client = subscribed("bench-latency", host, port, self._on_message)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received = time.time_ns()  # first, before any parsing
        if message.topic.endswith("/telemetry"):
            body = orjson.loads(message.payload)
            self.samples.append((received, int(body["ts"])))
            self.seqs.add(int(body["seq"]))
            self.received_at.setdefault(int(body["seq"]), received)
            self.readings += len(body["values"])
        elif message.topic.endswith("/telemetry/_batch"):
            body = orjson.loads(message.payload)
            self.samples.extend((received, int(ts)) for ts in body["ts"])
            self.seqs.update(int(seq) for seq in body["seq"])
            for seq in body["seq"]:
                self.received_at.setdefault(int(seq), received)
            self.readings += sum(body["n"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stored_records(data_dir: Path) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """(telemetry records, readings) the agent stored: what the live path had to deliver; and
    each record's (first timestamp, stored_ns: its commit's start) in ns, by seq."""
    with sqlite3.connect(f"file:{data_dir / DB_NAME}?mode=ro", uri=True) as conn:
        records, readings = conn.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM telemetry"
        ).fetchone()
        times = {
            int(seq): (int(ts), int(stored))
            for seq, ts, stored in conn.execute("SELECT seq, ts_first_ns, stored_ns FROM telemetry")
        }
    return int(records), int(readings), times


def _split(
    times: dict[int, tuple[int, int]], received_at: dict[int, int], from_ns: int
) -> dict[str, float | None]:
    """Where the age goes: poll → commit start (acquisition, the writer's queue) and commit
    start → receipt (the fsync, the forwarder, the broker, the subscriber), p50 and p99 in ms,
    records polled after `from_ns`."""
    to_commit, to_broker = [], []
    for seq, received in received_at.items():
        if seq in times and times[seq][0] >= from_ns:
            ts, stored = times[seq]
            to_commit.append((stored - ts) / 1e6)
            to_broker.append((received - stored) / 1e6)
    if not to_commit:
        return {}
    to_commit.sort()
    to_broker.sort()
    return {
        "poll_to_commit_p50_ms": percentile(to_commit, 0.50),
        "poll_to_commit_p99_ms": percentile(to_commit, 0.99),
        "commit_to_receipt_p50_ms": percentile(to_broker, 0.50),
        "commit_to_receipt_p99_ms": percentile(to_broker, 0.99),
    }


def run_latency(
    work: Path, broker: Broker, duration: float, name: str = "W1", report: str | None = None
) -> dict[str, Any]:
    workload = WORKLOADS[name]
    if report is not None:
        workload = dataclasses.replace(workload, report=report)  # type: ignore[arg-type]
    core, far_core = _cores()
    plant = start_plant(workload, far_core)
    directory = work / f"latency-{name}"
    try:
        config = write_agent_config(workload, plant.endpoints, directory)
        with config.open("a", encoding="utf-8") as f:
            f.write(
                f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\n'
                f"port = {broker.port}\nqos = 1\n"
            )
        subscriber = Subscriber(broker.host, broker.port)
        try:
            cmd = [sys.executable, "-m", "agent", "run", "-c", str(config)]
            cmd += ["--duration", str(duration)]
            done = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=duration + 120,
                preexec_fn=(lambda: _pin(0, core)) if core is not None else None,
                check=False,
            )
        finally:
            subscriber.close()
    finally:
        plant.stop()
    if done.returncode != 0:
        raise RuntimeError(f"lineside run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    samples = subscriber.samples
    if not samples:
        raise RuntimeError("no telemetry message reached the broker")
    first_ms = min(ts for _, ts in samples)
    kept = sorted(
        received / 1e6 - ts for received, ts in samples if ts >= first_ms + WARM_UP_S * 1000
    )
    if not kept:
        raise RuntimeError("no telemetry message after the warm-up")
    stored, stored_readings, times = _stored_records(directory / "data")
    return {
        "workload": workload.name,
        "report": workload.report,
        "duration_s": duration,
        "stored_records": stored,
        "stored_readings": stored_readings,
        "delivered_records": len(subscriber.seqs),
        "delivered_readings": subscriber.readings,
        **_split(times, subscriber.received_at, (first_ms + round(WARM_UP_S * 1000)) * 1_000_000),
        "messages": len(samples),
        "measured": len(kept),
        "latency_p50_ms": percentile(kept, 0.50),
        "latency_p99_ms": percentile(kept, 0.99),
        "latency_max_ms": kept[-1],
        "latency_mean_ms": statistics.fmean(kept),
    }


# --- the whole run and its output ------------------------------------------------------------


def run(
    records: int,
    tags: int,
    batch: int,
    latency_duration: float | None,
    *,
    drain: bool = True,
    latency_workloads: tuple[str, ...] = ("W1",),
    latency_report: str | None = None,
    broker_nodelay: bool | None = None,
) -> dict[str, Any]:
    core, far_core = _cores()
    affinity = os.sched_getaffinity(0)
    if far_core is not None:
        os.sched_setaffinity(0, {far_core})  # this process mostly waits: off the measured core
    receiver = start_receiver(far_core)
    try:
        with tempfile.TemporaryDirectory(prefix="lineside-drain-") as tmp:
            work = Path(tmp)
            with Broker(work / "broker", tcp_nodelay=broker_nodelay) as broker:
                nodelay = broker.tcp_nodelay
                _pin(broker.pid, far_core)
                drains = (
                    run_drains(work, records, tags, batch, broker, receiver.url)
                    if drain
                    else {"runs": {}, "ratios": {}}
                )
                latencies = (
                    [
                        run_latency(work, broker, latency_duration, name, latency_report)
                        for name in latency_workloads
                    ]
                    if latency_duration is not None
                    else []
                )
        http_requests, _ = receiver.counts()
    finally:
        receiver.stop()
        os.sched_setaffinity(0, affinity)
    # The target is counted on the faster MQTT form: JSON values (the default) or binary ones.
    kinds = [k for k in ("mqtt", "mqtt-b64") if k in drains["runs"]]
    mqtt_kind = max(kinds, key=lambda k: drains["runs"][k]["records_per_s"]) if kinds else None
    best = drains["runs"][mqtt_kind]["records_per_s"] if mqtt_kind else 0.0
    return {
        "benchmark": "drain",
        "machine": {**machine(), "measured_core": core, "far_side_core": far_core},
        "records": records,
        "tags_per_record": tags,
        "batch": batch,
        "http_requests_received": http_requests,
        "broker_tcp_nodelay": nodelay,
        **drains,
        "latency": latencies[0] if latencies else None,
        "latencies": latencies,
        "target": {
            "records_per_s": TARGET_RECORDS_PER_S,
            "mqtt_records_per_s": best,
            "mqtt_contender": mqtt_kind,
            "met_as_records": best >= TARGET_RECORDS_PER_S,
            "met_as_readings": best * tags >= TARGET_RECORDS_PER_S,
        },
    }


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| contender | records/s | readings/s | CPU-s per 1M records | % core | messages | MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, r in result["runs"].items():
        lines.append(
            f"| {kind} | {_num(r['records_per_s'])} | {_num(r['readings_per_s'])} "
            f"| {_num(r['cpu_s_per_1m_records'], 1)} | {_num(r['core_percent'], 1)} "
            f"| {r['messages']:,} | {_num(r['bytes'] / 1e6, 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.drain")
    parser.add_argument("--records", type=int, default=20_000, help="telemetry records to drain")
    parser.add_argument("--tags", type=int, default=backlog.TAGS_PER_RECORD, help="per record")
    parser.add_argument("--batch", type=int, default=BATCH, help="records per send")
    parser.add_argument("--latency-duration", type=float, default=8.0, help="seconds of W1")
    parser.add_argument(
        "--latency-workloads", default="W1", help="comma-separated: W1, W2, W3 (default W1)"
    )
    parser.add_argument(
        "--latency-report", choices=("changes", "all"), help="override the workloads' report"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    parser.add_argument("--no-drain", action="store_true", help="skip the backlog drains")
    parser.add_argument(
        "--broker-nodelay",
        action="store_true",
        help="set_tcp_nodelay true in the broker (default: stock, see benchmarks/broker.py)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.records <= 0 or args.tags <= 0 or args.batch <= 0:
        parser.error("--records, --tags and --batch must be more than zero")
    if args.latency_duration <= WARM_UP_S:
        parser.error(f"--latency-duration must be more than the {WARM_UP_S:g} s warm-up")
    names = tuple(n.strip() for n in args.latency_workloads.split(",") if n.strip())
    unknown = [n for n in names if n not in ("W1", "W2", "W3")]
    if unknown or not names:
        parser.error(f"--latency-workloads: W1, W2 or W3, got {args.latency_workloads!r}")
    latency = None if args.no_latency else args.latency_duration
    result = run(
        args.records,
        args.tags,
        args.batch,
        latency,
        drain=not args.no_drain,
        latency_workloads=names,
        latency_report=args.latency_report,
        broker_nodelay=True if args.broker_nodelay else None,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if result["runs"]:
        print(table(result))
    for kind, ratio in result["ratios"].items():
        print(f"{kind} / baseline: rate {_num(ratio['rate'], 3)}, "
              f"CPU per record {_num(ratio['cpu_per_record'], 2)}")  # fmt: skip
    for lat in result["latencies"]:
        print(
            f"{lat['workload']} poll-to-broker latency (report {lat['report']}): "
            f"p50 {lat['latency_p50_ms']:.1f} ms, p99 {lat['latency_p99_ms']:.1f} ms, "
            f"max {lat['latency_max_ms']:.1f} ms ({lat['measured']:,} records); "
            f"delivered {lat['delivered_records']:,} of {lat['stored_records']:,} stored "
            f"records ({lat['delivered_readings']:,} of {lat['stored_readings']:,} readings)"
        )
        if "poll_to_commit_p50_ms" in lat:
            print(
                f"   poll → commit p50 {lat['poll_to_commit_p50_ms']:.1f} / p99 "
                f"{lat['poll_to_commit_p99_ms']:.1f} ms, commit → receipt p50 "
                f"{lat['commit_to_receipt_p50_ms']:.1f} / p99 "
                f"{lat['commit_to_receipt_p99_ms']:.1f} ms"
            )
    if not result["runs"]:
        print(f"results: {args.out}")
        return 0
    target = result["target"]
    print(f"target {TARGET_RECORDS_PER_S:,} records/s to mosquitto: "
          f"{_num(target['mqtt_records_per_s'])} records/s ({target['mqtt_contender']}) "
          f"({'met' if target['met_as_records'] else 'NOT met'}; counted as readings: "
          f"{'met' if target['met_as_readings'] else 'NOT met'})")  # fmt: skip
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Acquisition benchmarks W1-W4: the agent against a naive pymodbus loop and a raw-socket ceiling.

    python -m benchmarks.acquisition [--duration 10] [--workloads W1,W2,W3,W4] [--no-rss]

For each workload one plant process serves the PLCs (benchmarks/plant.py, pinned to its own
core); then the agent (`lineside run`, storing into SQLite), the naive pymodbus loop and the
raw-socket ceiling (benchmarks/baselines.py) poll it in turn, each in its own process pinned to
the other core, each for the same duration. Measured per run: tag-samples per second, CPU
seconds per 1M tag-samples (every thread of the process tree, from /proc, over the run's
duration from the moment the process starts polling, so start-up imports are left out;
benchmarks/window.py; `cpu_s_to_exit` counts on to its exit, the agent's final flush
included), poll-interval jitter (lateness of each poll behind its grid point) and read
latency (median of the links' p50, worst of their p99), readings stored per second, and RSS.
A separate run measures the agent's RSS with 10,000 tags. JSON results go to
benchmarks/results/acquisition.json, a summary table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.plant import Plant, start_plant
from benchmarks.window import Window, agent_started, baseline_started, measure
from benchmarks.workloads import RSS_WORKLOAD, WORKLOADS, Workload, write_agent_config

RESULTS = Path(__file__).parent / "results" / "acquisition.json"
CONTENDERS = ("agent", "naive", "ceiling")

# Targets of the issue, as ratios measured in one run (or absolute where the issue says so).
TARGET_W2_RATE_VS_CEILING = 0.5
TARGET_W1_CPU_VS_CEILING = 1.5
TARGET_W1_JITTER_P99_S = 0.005
TARGET_W3_CORE_PERCENT = 2.0
TARGET_RSS_10K_BYTES = 80 * 1024 * 1024


def _spread(pairs: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """(median of the links' p50, worst of their p99): one figure for many links."""
    if not pairs:
        return None, None
    return statistics.median(p for p, _ in pairs), max(q for _, q in pairs)


# --- the contenders ------------------------------------------------------------------------


def run_agent(
    workload: Workload, plant: Plant, duration: float, core: int | None, work: Path
) -> dict[str, Any]:
    config = write_agent_config(workload, plant.endpoints, work)
    stats_file = work / "stats.json"
    cmd = [sys.executable, "-m", "agent", "run", "-c", str(config)]
    cmd += ["--duration", str(duration), "--stats", str(stats_file)]
    m = measure(cmd, agent_started, core, duration)
    if m.returncode != 0 or not stats_file.exists():
        raise RuntimeError(f"the agent failed ({m.returncode}):\n" + "\n".join(m.stderr[-20:]))
    stats = json.loads(stats_file.read_text())
    sources = stats["sources"].values()
    latency = [(s["latency_p50_s"], s["latency_p99_s"]) for s in sources if s["responses"]]
    lateness = [
        (g["lateness_p50"], g["lateness_p99"])
        for s in sources
        for g in s["groups"].values()
        if g["lateness_p50"] is not None
    ]
    db = work / "data" / "lineside.db"
    stored = stats["store"]["readings_written"]
    return _figures(
        samples=stats["samples"],
        errors=sum(s["timeouts"] + s["exceptions"] + s["malformed"] for s in sources),
        requests=sum(s["requests"] for s in sources),
        seconds=duration,
        measured=m,
        latency=latency,
        lateness=lateness,
        workload=workload,
        extra={
            "readings_stored": stored,
            "stored_readings_per_s": stored / duration,
            "stored_batches": stats["store"]["batches_written"],
            "sqlite_bytes": db.stat().st_size if db.exists() else None,
            "overruns": sum(g["overruns"] for s in sources for g in s["groups"].values()),
        },
    )


def run_baseline(
    kind: str, workload: Workload, plant: Plant, duration: float, core: int | None
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.baselines", kind, "--workload", workload.name]
    cmd += ["--endpoints", json.dumps(plant.endpoints), "--duration", str(duration)]
    m = measure(cmd, baseline_started, core, duration)
    if m.returncode != 0 or not m.stdout:
        raise RuntimeError(f"{kind} failed ({m.returncode}):\n" + "\n".join(m.stderr[-20:]))
    result = json.loads(m.stdout[-1])
    return _figures(
        samples=result["samples"],
        errors=result["errors"],
        requests=result["requests"],
        seconds=duration,
        measured=m,
        latency=[tuple(p) for p in result["latency"]],
        lateness=[tuple(p) for p in result["lateness"]],
        workload=workload,
        extra={"readings_stored": 0, "stored_readings_per_s": 0.0, "overruns": result["overruns"]},
    )


def _figures(
    *,
    samples: int,
    errors: int,
    requests: int,
    seconds: float,
    measured: Window,
    latency: list[Any],
    lateness: list[Any],
    workload: Workload,
    extra: dict[str, Any],
) -> dict[str, Any]:
    latency_p50, latency_p99 = _spread(latency)
    jitter_p50, jitter_p99 = _spread(lateness)
    if workload.interval is None:
        jitter_p50 = jitter_p99 = None  # back to back: there is no grid to be late for
    return {
        "samples": samples,
        "requests": requests,
        "errors": errors,
        "seconds": round(seconds, 3),
        "samples_per_s": samples / seconds,
        "cpu_s": round(measured.cpu_s, 3),
        "cpu_s_to_exit": round(measured.cpu_total_s, 3),
        "cpu_s_per_1m_samples": measured.cpu_s / samples * 1e6 if samples else None,
        "core_percent": 100 * measured.cpu_s / seconds,
        "jitter_p50_s": jitter_p50,
        "jitter_p99_s": jitter_p99,
        "latency_p50_s": latency_p50,
        "latency_p99_s": latency_p99,
        "rss_bytes": measured.rss_bytes,
        **extra,
    }


# --- orchestration -------------------------------------------------------------------------


# (the measured process's core, the plant's core), chosen once before this process pins itself.
_CORES: tuple[int | None, int | None] | None = None


def _cores() -> tuple[int | None, int | None]:
    """(the measured process's core, the plant's core); no pinning on a single core."""
    global _CORES
    if _CORES is None:
        cores = sorted(os.sched_getaffinity(0))
        _CORES = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    return _CORES


def run_workload(
    workload: Workload, duration: float, contenders: tuple[str, ...] = CONTENDERS
) -> dict[str, Any]:
    measured_core, plant_core = _cores()
    plant = start_plant(workload, plant_core)
    runs: dict[str, Any] = {}
    try:
        for name in contenders:
            before = plant.snapshot()
            if name == "agent":
                with tempfile.TemporaryDirectory(prefix="lineside-bench-") as work:
                    runs[name] = run_agent(workload, plant, duration, measured_core, Path(work))
            else:
                runs[name] = run_baseline(name, workload, plant, duration, measured_core)
            after = plant.snapshot()
            runs[name]["plant_cpu_s"] = round(after[0] - before[0], 3)
            runs[name]["plant_requests"] = after[1] - before[1]
    finally:
        plant.stop()
    return {
        "workload": workload.name,
        "title": workload.title,
        "tags": workload.total_tags,
        "interval_s": workload.interval,
        "report": workload.report,
        "runs": runs,
        "ratios": _ratios(runs),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ratios(runs: dict[str, Any]) -> dict[str, float | None]:
    agent = runs.get("agent")
    out: dict[str, float | None] = {}
    if agent is None:
        return out
    for base in ("naive", "ceiling"):
        other = runs.get(base)
        if other is None:
            continue
        out[f"rate_agent_over_{base}"] = _ratio(agent["samples_per_s"], other["samples_per_s"])
        out[f"cpu_per_sample_agent_over_{base}"] = _ratio(
            agent["cpu_s_per_1m_samples"], other["cpu_s_per_1m_samples"]
        )
    return out


def _targets(workloads: dict[str, Any], rss: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []

    def target(name: str, value: float | None, limit: float, at_least: bool) -> None:
        met = value is not None and (value >= limit if at_least else value <= limit)
        out.append({"target": name, "value": value, "limit": limit, "met": met})

    if "W2" in workloads:
        ratios = workloads["W2"]["ratios"]
        target("W2 rate / ceiling >=", ratios.get("rate_agent_over_ceiling"),
               TARGET_W2_RATE_VS_CEILING, True)  # fmt: skip
    if "W1" in workloads:
        ratios = workloads["W1"]["ratios"]
        target("W1 CPU per sample / ceiling <=", ratios.get("cpu_per_sample_agent_over_ceiling"),
               TARGET_W1_CPU_VS_CEILING, False)  # fmt: skip
        target("W1 jitter p99 (s) <=", workloads["W1"]["runs"]["agent"]["jitter_p99_s"],
               TARGET_W1_JITTER_P99_S, False)  # fmt: skip
    if "W3" in workloads:
        target("W3 % of one core <", workloads["W3"]["runs"]["agent"]["core_percent"],
               TARGET_W3_CORE_PERCENT, False)  # fmt: skip
    if rss is not None:
        target("RSS at 10,000 tags (bytes) <", rss["runs"]["agent"]["rss_bytes"],
               TARGET_RSS_10K_BYTES, False)  # fmt: skip
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop  # noqa: F401

        has_uvloop = True
    except ImportError:
        has_uvloop = False
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "uvloop": has_uvloop,
        "pymodbus": metadata.version("pymodbus"),
        "numpy": metadata.version("numpy"),
        "sqlite": sqlite3.sqlite_version,
        "measured_core": _cores()[0],
        "plant_core": _cores()[1],
    }


def run(workloads: list[str], duration: float, rss: bool) -> dict[str, Any]:
    affinity = os.sched_getaffinity(0)
    _, plant_core = _cores()
    if plant_core is not None:
        # This process mostly sleeps; keep its samplers off the measured core.
        os.sched_setaffinity(0, {plant_core})
    try:
        results = {name: run_workload(WORKLOADS[name], duration) for name in workloads}
        rss_result = run_workload(RSS_WORKLOAD, duration, ("agent",)) if rss else None
    finally:
        os.sched_setaffinity(0, affinity)
    return {
        "benchmark": "acquisition",
        "machine": machine(),
        "duration_s": duration,
        "workloads": results,
        "rss_10k_tags": rss_result,
        "targets": _targets(results, rss_result),
    }


# --- output --------------------------------------------------------------------------------


def _num(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def table(result: dict[str, Any]) -> str:
    head = (
        "| workload | client | tag-samples/s | CPU-s per 1M | % core | jitter p50/p99 ms "
        "| latency p50/p99 ms | stored/s | RSS MB | errors |"
    )
    lines = [head, "|" + "---|" * 10]
    rows = list(result["workloads"].values())
    if result["rss_10k_tags"] is not None:
        rows.append(result["rss_10k_tags"])
    for w in rows:
        for name, r in w["runs"].items():
            jitter = f"{_num(r['jitter_p50_s'], 1e3)} / {_num(r['jitter_p99_s'], 1e3)}"
            latency = f"{_num(r['latency_p50_s'], 1e3)} / {_num(r['latency_p99_s'], 1e3)}"
            lines.append(
                f"| {w['workload']} | {name} | {_num(r['samples_per_s'], digits=0)} "
                f"| {_num(r['cpu_s_per_1m_samples'])} | {_num(r['core_percent'], digits=1)} "
                f"| {jitter} | {latency} | {_num(r['stored_readings_per_s'], digits=0)} "
                f"| {_num(r['rss_bytes'], 1 / 2**20, 1)} | {r['errors']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.acquisition")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. W1,W3")
    parser.add_argument("--no-rss", action="store_true", help="skip the 10,000-tag RSS run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or not names:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.duration <= 0:
        parser.error("--duration must be more than zero")
    result = run(names, args.duration, rss=not args.no_rss)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    for name, w in result["workloads"].items():
        ratios = ", ".join(f"{k} {_num(v)}" for k, v in w["ratios"].items())
        print(f"{name}: {ratios}")
    for t in result["targets"]:
        print(f"target {t['target']} {t['limit']:g}: {_num(t['value'], digits=3)} "
              f"{'met' if t['met'] else 'NOT met'}")  # fmt: skip
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The end-to-end benchmark's contenders: how each is started, with what config, and what it
reports of itself beside the plant's count.

- `agent`: `lineside run -c CONFIG --duration D --stats FILE`, the CLI as a user starts it, with
  a generated config (`report = "all"`, SQLite `synchronous = FULL`, an MQTT sink to the
  broker at QoS 1) and its own read plan;
- `ceiling-mqtt` and `naive`: benchmarks/baselines.py on the bridging read plan, the first
  publishing to the broker.

Each runs in its own process, measured over one window (benchmarks/window.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.broker import Broker
from benchmarks.plant import Plant
from benchmarks.window import Window, agent_started, baseline_started, measure
from benchmarks.workloads import BRIDGING_GAP, END_TO_END, Workload, write_agent_config

CONTENDERS: tuple[str, ...] = ("agent", "ceiling-mqtt", "naive")
# The contenders of each workload: at 1,000 connections the ceiling shows what the plant serves.
CONTENDERS_OF: dict[str, tuple[str, ...]] = {"C1000": ("agent", "ceiling-mqtt")}
START_TIMEOUT = 90.0  # seconds from launch to the first poll (1,000 sources take a while)
C1000_SOFT_NOFILE = 1024  # the soft open-files limit C1000's agent starts with
# Seconds the agent runs before its window opens: it logs "polling" before its connections are
# up and its sinks connected (the baselines connect first), and 1,000 connections take a while
# on a loaded machine. The window then measures the steady state, as the baselines' does.
AGENT_SETTLE_S = 2.0
SETTLE_S = {"C1000": 5.0}
# The back-to-back interval the issue asks for, and the one to fall back on.
BACK_TO_BACK = ("0s", "1ms")


def lineside() -> list[str]:
    """The `lineside` command of this environment (its CLI, as a user starts it)."""
    script = Path(sys.executable).parent / "lineside"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


def sink_toml(broker: Broker) -> str:
    return (
        f'\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "{broker.host}"\n'
        f"port = {broker.port}\nqos = 1\n"
    )


def back_to_back_interval(work: Path) -> str:
    """ "0s" if the agent's config accepts it (re-poll as soon as a poll ends), else "1ms"."""
    from agent.config import load_config
    from agent.errors import ConfigError

    probe = END_TO_END["W2"]
    for interval in BACK_TO_BACK[:-1]:
        config = write_agent_config(probe, [1] * probe.plcs, work / "probe", fast_interval=interval)
        try:
            load_config(config)
        except ConfigError:
            continue
        return interval
    return BACK_TO_BACK[-1]


def run_agent(
    workload: Workload,
    plant: Plant,
    broker: Broker,
    duration: float,
    core: int | None,
    work: Path,
    fast_interval: str,
) -> tuple[Window, dict[str, Any]]:
    assert isinstance(plant.endpoints, list)
    config = write_agent_config(
        workload,
        plant.endpoints,
        work,
        fast_interval=fast_interval,
        extra=sink_toml(broker),
        max_gap=None,  # the agent's own default plan, measured against the bridging one
    )
    stats_file = work / "stats.json"
    settle = SETTLE_S.get(workload.name, AGENT_SETTLE_S)
    cmd = [*lineside(), "run", "-c", str(config), "--duration", str(duration + settle)]
    cmd += ["--stats", str(stats_file)]
    nofile = C1000_SOFT_NOFILE if workload.name == "C1000" else None
    m = measure(cmd, agent_started, core, duration, plant, nofile, settle, START_TIMEOUT)
    if m.returncode != 0 or not stats_file.exists():
        raise RuntimeError(f"the agent failed ({m.returncode}):\n" + "\n".join(m.stderr[-20:]))
    stats = json.loads(stats_file.read_text())
    sources = stats["sources"].values()
    lateness = [
        g["lateness_p99"]
        for s in sources
        for g in s["groups"].values()
        if g.get("lateness_p99") is not None
    ]
    return m, {
        "agent_id": f"bench-{workload.name.lower()}",
        "samples": stats["samples"],
        "errors": sum(s["timeouts"] + s["exceptions"] + s["malformed"] for s in sources),
        "sources_answering": sum(1 for s in sources if s["responses"]),
        # Back to back there is no grid to be late for.
        "jitter_p99_s": max(lateness) if lateness and workload.interval is not None else None,
        "readings_stored": stats["store"]["readings_written"],
        "stored_per_s": stats["store"]["readings_written"] / (duration + settle),
        "open_files_log": [line for line in m.stderr if "open files" in line],
        "poll_interval": fast_interval if workload.interval is None else workload.interval,
    }


def run_baseline(
    kind: str, workload: Workload, plant: Plant, broker: Broker, duration: float, core: int | None
) -> tuple[Window, dict[str, Any]]:
    cmd = [sys.executable, "-m", "benchmarks.baselines", kind, "--workload", workload.name]
    cmd += ["--endpoints", json.dumps(plant.endpoints), "--duration", str(duration)]
    cmd += ["--max-gap", str(BRIDGING_GAP)]
    if kind == "ceiling-mqtt":
        cmd += ["--broker", f"{broker.host}:{broker.port}"]
    m = measure(cmd, baseline_started, core, duration, plant, start_timeout=START_TIMEOUT)
    if m.returncode != 0 or not m.stdout:
        raise RuntimeError(f"{kind} failed ({m.returncode}):\n" + "\n".join(m.stderr[-20:]))
    try:
        result = json.loads(m.stdout[-1])
    except ValueError as exc:
        raise RuntimeError(f"{kind}: its result line is not JSON ({exc})") from None
    lateness = [q for _, q in result["lateness"]]
    return m, {
        "agent_id": f"ceiling-{workload.name.lower()}",
        "samples": result["samples"],
        "errors": result["errors"],
        "jitter_p99_s": max(lateness) if lateness and workload.interval is not None else None,
    }

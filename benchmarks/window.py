"""One measured window of a contender's process: run a command, wait for the line that says it
polls, then read its CPU time and memory from /proc for a fixed span.

CPU and RSS are those of the process's whole tree (benchmarks/procstat.py: schedstat of every
thread of every descendant, the largest sum of VmRSS), read at the start line (or `settle`
seconds after it) and again `window` seconds later: the steady state, the same span for every
contender, without start-up imports or interpreter teardown. Used by the acquisition and the
end-to-end benchmarks.
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from benchmarks.plant import Plant
from benchmarks.procstat import reap, tree_cpu_seconds, tree_rss_bytes

START_TIMEOUT = 60.0  # seconds from launch to the start line, by default
EXIT_TIMEOUT = 60.0  # seconds after the window for the process to end on its own
SAMPLE_PERIOD = 0.2  # seconds between RSS samples


def agent_started(line: str) -> bool:
    """The agent's log line just before its TaskGroup starts polling (Agent.run)."""
    return "lineside.agent: agent " in line and " sources, " in line


def baseline_started(line: str) -> bool:
    """benchmarks/baselines.py prints "start" once its connections are up."""
    return line == "start"


@dataclass
class Window:
    """One process's measured window."""

    returncode: int
    start_ns: int  # wall clock at the window's start and end (the records' `ts` is wall time)
    end_ns: int
    cpu_s: float  # over the window, or to the exit if the process ended first
    cpu_total_s: float  # from the window's start to exit (teardown and final flush included)
    rss_bytes: int  # the largest VmRSS of the tree sampled in the window
    served: tuple[float, int, int] | None  # the plant's (CPU s, requests, samples) in the window
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def running(pid: int) -> bool:
    # WNOWAIT: look without reaping, so `reap` can still collect the child's rusage.
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def measure(
    cmd: list[str],
    started: Callable[[str], bool],
    core: int | None,
    window: float,
    plant: Plant | None = None,
    nofile: int | None = None,
    settle: float = 0.0,
    start_timeout: float = START_TIMEOUT,
) -> Window:
    """Run `cmd` and measure it for `window` seconds, from `settle` seconds after the first
    line `started` accepts; pinned to `core`, with a soft open-files limit `nofile`, and with
    `plant`'s count of what it served over the same window."""

    def prepare() -> None:
        if core is not None:
            os.sched_setaffinity(0, {core})
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=prepare)
    out: list[str] = []
    err: list[str] = []
    seen = threading.Event()

    def read(stream: Iterable[bytes], lines: list[str]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if not seen.is_set() and started(line):
                seen.set()

    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=read, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=read, args=(proc.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not seen.wait(0.05):
            if not running(proc.pid) or time.monotonic() > deadline:
                raise RuntimeError(f"{cmd[:4]} never started polling:\n" + "\n".join(err[-20:]))
        time.sleep(settle)
        before = plant.snapshot() if plant is not None else None
        start_ns = time.time_ns()
        cpu0 = tree_cpu_seconds(proc.pid)
        end_at = time.monotonic() + window
        rss = 0
        cpu: float | None = None
        end_ns = 0
        after = before
        while running(proc.pid):
            now = time.monotonic()
            if cpu is None and now >= end_at:
                cpu = tree_cpu_seconds(proc.pid) - cpu0
                end_ns = time.time_ns()
                after = plant.snapshot() if plant is not None else None
            elif cpu is None:
                rss = max(rss, tree_rss_bytes(proc.pid))
            if now > end_at + EXIT_TIMEOUT:
                proc.kill()
                break
            time.sleep(min(SAMPLE_PERIOD, max(0.0, end_at - now)) or SAMPLE_PERIOD)
        end = reap(proc)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        raise
    for reader in readers:
        reader.join(5)
    total = end.cpu_s - cpu0
    if cpu is None:  # it ended before the window did: count to its exit
        cpu = total
        end_ns = time.time_ns()
        after = plant.snapshot() if plant is not None else None
    served = None
    if before is not None and after is not None:
        served = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    return Window(end.returncode, start_ns, end_ns, cpu, total, rss, served, out, err)

"""CPU time and memory of another process, read from /proc (Linux), without psutil.

CPU time is the sum over the process's threads (the agent's SQLite writer thread included), in
nanoseconds from schedstat. A process that has exited can no longer be read, so
its total comes from `os.wait4`'s rusage instead (`reap`).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU seconds the process `pid` has used so far, all its live threads together.

    Read from each thread's /proc/<pid>/task/<tid>/schedstat (nanoseconds on a CPU) where the
    kernel has it: /proc/<pid>/stat counts clock ticks of 10 ms, too coarse for a process that
    uses a few tens of milliseconds in a run. Falls back to stat's utime + stime.
    """
    total_ns = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    total_ns += int(f.read().split()[0])
            except FileNotFoundError:  # the thread ended between listdir and open
                continue
    except FileNotFoundError:
        total_ns = 0
    if total_ns:
        return total_ns / 1e9
    return _stat_cpu_seconds(pid)


def _stat_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = raw[raw.rindex(b")") + 2 :].split()
    # After the name: state is field 3, utime field 14 and stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (children, their children, ...), as /proc lists them."""
    out = [pid]
    for each in out:  # grows while it is walked: breadth first
        try:
            for tid in os.listdir(f"/proc/{each}/task"):
                with open(f"/proc/{each}/task/{tid}/children", encoding="ascii") as f:
                    out.extend(int(child) for child in f.read().split())
        except FileNotFoundError:  # ended while walked
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants: a process's whole tree."""
    total = 0.0
    for each in descendants(pid):
        try:
            total += cpu_seconds(each)
        except FileNotFoundError:
            continue
    return total


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of `pid` and its live descendants, added up."""
    total = 0
    for each in descendants(pid):
        try:
            total += rss_bytes(each)
        except (FileNotFoundError, ValueError):  # gone, or a zombie without memory
            continue
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of `pid` now, in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS line")


@dataclass(frozen=True, slots=True)
class Exit:
    """How a child ended: its exit code and its total CPU seconds and peak RSS."""

    returncode: int
    cpu_s: float
    max_rss_bytes: int


def reap(proc: subprocess.Popen[bytes]) -> Exit:
    """Wait for `proc` to end and return its totals (rusage of that one child)."""
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # Popen did not reap it itself: tell it, so it does not try
    # ru_maxrss is in KiB on Linux.
    return Exit(code, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)

"""One measured window (benchmarks/window.py), on real child processes: it opens at the start
line, counts the CPU of the whole process tree, and a process that never starts is an error."""

from __future__ import annotations

import sys

import pytest

from benchmarks.window import agent_started, baseline_started, measure

# Prints "start", then waits for a child of its own that burns CPU past the window's end: the
# parent itself is blocked in wait() for the whole window.
_PARENT = """
import subprocess, sys
print("start", flush=True)
burn = "import time\\nend = time.monotonic() + 0.8\\nwhile time.monotonic() < end: pass"
subprocess.run([sys.executable, "-c", burn], check=True)
print("done", flush=True)
"""


def test_the_window_counts_the_cpu_of_the_whole_process_tree() -> None:
    m = measure([sys.executable, "-c", _PARENT], baseline_started, None, 0.4)
    assert m.returncode == 0
    assert m.stdout == ["start", "done"]
    assert m.served is None  # no plant to count
    assert m.end_ns > m.start_ns
    # The parent slept through the window; only its child's CPU makes this more than zero.
    assert m.cpu_s > 0.01
    assert m.rss_bytes > 1_000_000


def test_a_process_that_never_starts_is_an_error() -> None:
    cmd = [sys.executable, "-c", "print('something else')"]
    with pytest.raises(RuntimeError, match="never started polling"):
        measure(cmd, baseline_started, None, 0.4)


def test_the_start_lines() -> None:
    assert agent_started("INFO lineside.agent: agent edge-1: 10 sources, 1000 tags")
    assert not agent_started("INFO lineside.agent: agent edge-1 stopping")
    assert baseline_started("start") and not baseline_started("started")

"""Running the agent (`run`) and the demo plant with an agent polling it (`demo`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.exits import Refused, refusing
from agent.cli.options import ConfigOption, DurationOption
from agent.cli.output import console
from agent.extras import needs


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's config and SQLite store go.")
    ] = Path("demo"),
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per second.")] = 10.0,
    duration: DurationOption = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="The status page's port (default 8470).", min=0, max=65535),
    ] = None,
) -> None:
    """Start the demo plant with the agent polling it into SQLite, and show it live."""
    from agent.demo import run_demo

    # The plant (the simulator) and its camera inspection (vision): said before anything starts.
    with needs("The demo", "sim", "vision"):
        import firmware_sim.plant  # noqa: F401
        import vision.inspector  # noqa: F401

    run_demo(directory=directory, speed=speed, duration=duration, console=console, port=port)


def run(
    config_file: ConfigOption,
    duration: DurationOption = None,
    stats: Annotated[
        Path | None, typer.Option("--stats", help="Write the agent's statistics here (JSON).")
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="debug, info, warning (default: \\[log] level)"),
    ] = None,
) -> None:
    """Run the agent: poll every source into the SQLite log until SIGTERM or Ctrl-C.

    SIGHUP reloads the config file: changed sources, sinks and tags apply while it polls."""
    import asyncio
    import contextlib
    import gc
    import signal

    from agent.config.loader import load_config
    from agent.eventloop import run as run_loop
    from agent.lock import DataDirLock
    from agent.logs import LogError, configure
    from agent.openfiles import raise_for
    from agent.runtime import Agent

    config = load_config(config_file)
    if log_level is not None and log_level.lower() not in ("debug", "info", "warning", "error"):
        raise Refused(f"--log-level: expected debug, info, warning or error, got {log_level!r}")
    with refusing(LogError):
        configure(config.log, log_level)
    raise_for(config)  # 1,000 PLC connections need more than a soft limit of 1024

    async def main() -> dict[str, object]:
        agent = Agent(config)
        # What the agent is built of (the modules, the config, its tags) lives as long as the
        # process: out of the collector's sight, a full pass scans only what running allocates.
        # Left in, each full pass (every few seconds at plant rates) walked them all and held
        # the event loop 16 ms at W1, 44 ms at 200 PLCs: every poll of that tick that late.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            # SIGHUP reloads the config file (agent/reload.py); SIGTERM stops and drains.
            loop.add_signal_handler(signal.SIGHUP, agent.request_reload)
        await agent.run(stop, duration)
        return agent.statistics()

    # One agent per store: a second one would interleave sequence numbers and cursors.
    with DataDirLock(config.agent.data_dir):
        figures = run_loop(main)
    if stats is not None:
        stats.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")

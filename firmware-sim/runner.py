"""Run a simulated plant from the command line: `lineside sim` and `python -m firmware_sim`.

Both start the plant, print a table of its endpoints, and serve until interrupted (Ctrl-C or
SIGTERM) or until `duration` real seconds have passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, PlantError, load_plant

__all__ = ["PlantError", "endpoints_table", "run_loop", "serve"]

T = TypeVar("T")


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main` on uvloop where it is installed (Linux x86-64/aarch64), asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def endpoints_table(plant: Plant) -> Table:
    rtu = plant.rtu_path
    table = Table(
        title=f"plant {plant.spec.name!r}: {plant.spec.description}", title_justify="left"
    )
    table.add_column("machine")
    table.add_column("kind")
    table.add_column("Modbus TCP")
    table.add_column("unit id", justify="right")
    table.add_column(f"RTU unit on {rtu}" if rtu else "RTU", justify="right")
    s7 = any(e.s7 for e in plant.endpoints())
    if s7:
        table.add_column("S7 (rack 0 slot 1)")
    table.add_column("MC protocol")
    for e in plant.endpoints():
        rtu_unit = str(e.rtu_unit_id) if e.rtu_unit_id is not None else "-"
        row = [e.machine, e.kind, e.modbus_tcp, str(e.unit_id), rtu_unit]
        table.add_row(*row, *([e.s7 or "-"] if s7 else []), e.mc or "-")
    if plant.opcua_endpoint:
        table.caption = f"OPC UA: {plant.opcua_endpoint} (a folder per machine)"
    return table


async def _wait_for_stop(duration: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)


def serve(
    plant_name: str,
    *,
    speed: float = 1.0,
    host: str = "127.0.0.1",
    ephemeral: bool = False,
    opcua: bool = True,
    rtu: bool = True,
    s7: bool = False,
    duration: float | None = None,
    console: Console | None = None,
) -> None:
    """Start the plant, print its endpoints, serve until stopped. Raises PlantError."""
    console = console or Console()
    spec = load_plant(plant_name)
    if ephemeral:
        spec = spec.with_ephemeral_ports()
    if speed <= 0:
        raise PlantError(f"--speed must be positive, got {speed}")

    async def main() -> None:
        plant = Plant(spec, ScaledClock(speed), host=host, opcua=opcua, rtu=rtu, s7=s7)
        async with plant:
            console.print(endpoints_table(plant))
            console.print(f"simulated time runs at {speed:g}x; Ctrl-C stops", style="dim")
            await _wait_for_stop(duration)

    run_loop(main)

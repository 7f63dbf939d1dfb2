"""`sim`: a simulated plant serving Modbus TCP, Modbus RTU on a pty, OPC UA and S7."""

from __future__ import annotations

from typing import Annotated

import typer

from agent.cli.exits import refusing
from agent.cli.options import DurationOption
from agent.cli.output import console
from agent.extras import needs


def sim(
    plant: Annotated[
        str, typer.Option("--plant", help="demo, press, cement, loom, or a plant TOML file.")
    ] = "demo",
    speed: Annotated[
        float, typer.Option("--speed", help="Simulated seconds per real second.")
    ] = 1.0,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    ephemeral: Annotated[
        bool, typer.Option("--ephemeral", help="Bind free ports instead of the plant's own.")
    ] = False,
    opcua: Annotated[bool, typer.Option("--opcua/--no-opcua", help="Serve OPC UA too.")] = True,
    rtu: Annotated[
        bool, typer.Option("--rtu/--no-rtu", help="Serve Modbus RTU on a pseudo-terminal too.")
    ] = True,
    s7: Annotated[
        bool, typer.Option("--s7/--no-s7", help="Serve each machine over S7 too (snap7's server).")
    ] = False,
    duration: DurationOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the values live, read back over Modbus TCP.")
    ] = False,
) -> None:
    """Run a simulated plant (Modbus TCP, Modbus RTU on a pty, OPC UA) and print its endpoints."""
    with needs("The simulator", "sim"):
        from firmware_sim.plant import load_plant
        from firmware_sim.runner import PlantError, serve
        from firmware_sim.watch import watch_plant

    with refusing(PlantError):
        if watch:
            spec = load_plant(plant)
            spec = spec.with_ephemeral_ports() if ephemeral else spec
            watch_plant(spec, speed=speed, host=host, duration=duration, console=console)
            return
        serve(
            plant,
            speed=speed,
            host=host,
            ephemeral=ephemeral,
            opcua=opcua,
            rtu=rtu,
            s7=s7,
            duration=duration,
            console=console,
        )

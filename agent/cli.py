"""The `lineside` command line.

Commands import what they need inside their bodies: `lineside --help` and `lineside validate`
must stay fast and never load a protocol library, ONNX Runtime or OpenCV.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agent import __version__
from agent.errors import ConfigError

app = typer.Typer(
    name="lineside",
    help="Edge agent and MES connector: PLCs in, OEE and KPIs out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_BAD_INPUT = 2

console = Console()
err_console = Console(stderr=True)


def _fail(lines: list[str]) -> typer.Exit:
    """Print one line per problem on stderr (no traceback, no wrapping) and exit with code 2."""
    for line in lines:
        err_console.print(line, markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


@app.command()
def version() -> None:
    """Print lineside's version."""
    console.print(__version__, markup=False, highlight=False)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="The config file (TOML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a config file: a summary when it is valid, one line per problem (exit 2) when not."""
    from agent.config import load_config
    from agent.summary import render_summary, summary_dict

    try:
        config = load_config(file)
    except ConfigError as exc:
        raise _fail([str(p) for p in exc.problems]) from None
    if as_json:
        print(json.dumps(summary_dict(config), indent=2, default=str))
    else:
        render_summary(config, console)


@app.command()
def init(
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Kind of line: press, cement or loom.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of standard output.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write an annotated starter config for a kind of line (it matches `lineside sim`)."""
    from agent.starter import PROFILES, starter_config

    if profile not in PROFILES:
        raise _fail([f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}"])
    text = starter_config(profile)
    if out is None:
        sys.stdout.write(text)
        return
    if out.exists() and not force:
        raise _fail([f"{out}: already exists; pass --force to overwrite it"])
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail([f"{out}: cannot write: {exc.strerror}"]) from None
    err_console.print(f"wrote {out}; check it with: lineside validate {out}", markup=False)


@app.command()
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
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many real seconds.")
    ] = None,
) -> None:
    """Run a simulated plant (Modbus TCP, Modbus RTU on a pty, OPC UA) and print its endpoints."""
    from firmware_sim.runner import PlantError, serve

    try:
        serve(
            plant,
            speed=speed,
            host=host,
            ephemeral=ephemeral,
            opcua=opcua,
            rtu=rtu,
            duration=duration,
            console=console,
        )
    except PlantError as exc:
        raise _fail([str(exc)]) from None


@app.command()
def demo(
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per second.")] = 10.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many real seconds.")
    ] = None,
) -> None:
    """Start the demo plant and show its values, read over Modbus TCP, in a live table."""
    from firmware_sim.watch import watch_demo

    watch_demo(speed=speed, duration=duration, console=console)


def main() -> None:
    app()

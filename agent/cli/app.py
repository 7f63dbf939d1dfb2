"""The `lineside` command: the typer app, its groups, and every command registered in the order
`--help` lists them.

Each command lives in the module of its group (agent/cli/*.py) and imports what it needs inside
its body: `lineside --help` and `lineside validate` must stay fast and never load a protocol
library, ONNX Runtime or OpenCV. Every invocation runs inside `exits()`, the one place lineside's
errors become a line on stderr and an exit code (agent/cli/root.py: the group, `--version`).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from agent import __version__
from agent.cli import (
    commissioning,
    discover,
    fleet,
    inspection,
    kpi,
    opcua,
    plan,
    run,
    service,
    sim,
    store,
)
from agent.cli.exits import Refused
from agent.cli.output import console
from agent.cli.root import new_app


class _Protocols(TyperGroup):
    """`discover`'s group: a protocol it does not know is said in one line, as before the
    protocols were commands of their own."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands:
            raise Refused(f"cannot discover {name!r}: choose modbus, opcua, s7 or mc")
        return super().resolve_command(ctx, args)


app = new_app()


@app.command()
def version() -> None:
    """Print lineside's version."""
    console.print(__version__, markup=False, highlight=False)


for command in (
    commissioning.validate,
    commissioning.init,
    sim.sim,
    run.demo,
    run.run,
    plan.plan,
    commissioning.read,
    store.export,
    store.status,
    store.quarantine,
    inspection.inspect,
    kpi.oee,
    kpi.report,
):
    app.command()(command)

discover_app = typer.Typer(
    help="Find the Modbus unit ids and address ranges that read, an OPC UA server's variables, "
    "or an S7 CPU's identity and data blocks.",
    no_args_is_help=True,
    cls=_Protocols,
)
discover_app.command("modbus")(discover.modbus)
discover_app.command("opcua")(opcua.discover_opcua)
discover_app.command("s7")(discover.s7)
discover_app.command("mc")(discover.mc)
app.add_typer(discover_app, name="discover")

service_app = typer.Typer(help="Run the agent as a systemd service.", no_args_is_help=True)
service_app.command("install")(service.service_install)
app.add_typer(service_app, name="service")

certs_app = typer.Typer(help="The agent's OPC UA application certificate.", no_args_is_help=True)
certs_app.command("create")(opcua.certs_create)
app.add_typer(certs_app, name="certs")

vision_app = typer.Typer(
    help="Vision models: fit one from good images, measure one, benchmark one."
)
vision_app.command("fit")(inspection.vision_fit)
vision_app.command("evaluate")(inspection.vision_evaluate)
vision_app.command("backbone")(inspection.vision_backbone)
vision_app.command("bench")(inspection.vision_bench)
app.add_typer(vision_app, name="vision")

fleet_app = typer.Typer(
    help="Every agent of a site, as the MQTT broker they publish to sees them.",
    no_args_is_help=True,
)
fleet_app.command("status")(fleet.fleet_status)
app.add_typer(fleet_app, name="fleet")

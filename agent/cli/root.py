"""The top of the `lineside` command: the group every invocation runs in (inside `exits()`), a
new app with the group's settings and `--version`, and `lineside run` as an app of that one
command.

agent/cli/app.py registers every command on `new_app()`; `run_app()` registers `run` only and
loads no other command's module: the running agent keeps neither their code nor typer's click
objects for them (~1 MB; benchmarks/README.md, "Memory").
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from agent import __version__
from agent.cli import run
from agent.cli.exits import exits
from agent.cli.output import console
from agent.helptext import plain_flags


class Commands(TyperGroup):
    """The app's group: every command it runs, in any sub-group, runs inside `exits()`."""

    def invoke(self, ctx: Any) -> Any:  # typer's click Context (vendored by typer 0.29)
        with exits():
            return super().invoke(ctx)


plain_flags()


def _print_version(wanted: bool) -> None:
    if wanted:
        console.print(f"lineside {__version__}", markup=False, highlight=False)
        raise typer.Exit()


def options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Edge agent and MES connector: PLCs in, OEE and KPIs out."""


def new_app() -> typer.Typer:
    """The top-level app with its `--version` option, before any command is registered."""
    app = typer.Typer(
        name="lineside",
        help="Edge agent and MES connector: PLCs in, OEE and KPIs out.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        cls=Commands,
    )
    app.callback()(options)
    return app


def run_app() -> typer.Typer:
    """`lineside run` as an app of that one command, with the same options, help and errors.

    typer turns every command of the app it runs into click objects, and they live as long as
    the command does: ~0.5 MB of a running agent for commands it never runs."""
    only = new_app()
    only.command()(run.run)
    return only

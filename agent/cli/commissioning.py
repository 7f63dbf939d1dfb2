"""Commissioning a config: `validate` it, write a starter (`init`), `read` every tag once."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.exits import EXIT_FAILED, Refused, writing
from agent.cli.options import ConfigOption, JsonOption
from agent.cli.output import console, err_console, print_json, quiet_asyncua


@dataclass(frozen=True, slots=True)
class ReadingRow:
    """One tag's reading in `read --json`."""

    path: str
    value: object
    name: str | None
    unit: str
    quality: str
    reason: str | None
    ts_ns: int


def validate(
    file: Annotated[
        Path | None, typer.Argument(help="The config file (TOML), or give it with -c.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="The config file (TOML).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Check a config file: a summary when it is valid, one line per problem (exit 2) when not."""
    from agent.config.loader import load_config
    from agent.summary import render_summary, summary_dict

    if (file is None) == (config_file is None):
        raise Refused("give the config file once: lineside validate -c FILE (or validate FILE)")
    file = file if file is not None else config_file
    assert file is not None

    config = load_config(file)
    if as_json:
        print_json(summary_dict(config))
    else:
        render_summary(config, console)


def init(
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Kind of line: press, cement or loom.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of standard output.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    protocol: Annotated[
        str, typer.Option("--protocol", help="How the PLCs are read: modbus, s7 or mc.")
    ] = "modbus",
) -> None:
    """Write an annotated starter config for a kind of line (it matches `lineside sim`)."""
    from agent.starter import PROFILES, PROTOCOLS, starter_config

    if profile not in PROFILES:
        raise Refused(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    if protocol not in PROTOCOLS:
        raise Refused(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    text = starter_config(profile, protocol)
    if out is None:
        sys.stdout.write(text)
        return
    if out.exists() and not force:
        raise Refused(f"{out}: already exists; pass --force to overwrite it")
    with writing(out):
        out.write_text(text, encoding="utf-8")
    err_console.print(f"wrote {out}; check it with: lineside validate {out}", markup=False)


def read(
    config_file: ConfigOption,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Only tags whose path or name matches this glob.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Read every tag once and print it, with the reason of each bad one (exit 1 when a tag
    reads bad or a source cannot be reached)."""
    from rich.markup import escape
    from rich.table import Table

    from agent.codenames import CodeNames
    from agent.config.loader import load_config
    from agent.eventloop import run as run_loop
    from agent.oneshot import read_once
    from agent.values import models_by_path, plain, text

    config = load_config(config_file)
    quiet_asyncua()
    result = run_loop(lambda: read_once(config, tag))
    models, names = models_by_path(config), CodeNames.of(config)
    if tag is not None and not result.readings and not result.errors:
        raise Refused(f"no tag matches {tag!r}")
    if as_json:
        rows = [
            ReadingRow(
                path=r.tag.path,
                value=r.text if r.text is not None else plain(r.value, models.get(r.tag.path)),
                name=names.name(r.tag.path, r.value),
                unit=r.tag.unit,
                quality=r.quality.name.lower(),
                reason=r.reason or None,
                ts_ns=r.ts_ns,
            )
            for r in result.readings
        ]
        print_json({"readings": rows, "errors": result.errors})
    else:
        table = Table(title_justify="left")
        columns = ("tag", "value", "unit", "quality", "reason")
        for column in columns if result.bad else columns[:-1]:
            table.add_column(column, justify="right" if column == "value" else "left")
        for r in result.readings:
            good = r.quality.name == "GOOD"
            shown, name = text(r.value, models.get(r.tag.path)), names.name(r.tag.path, r.value)
            shown = r.text if r.text is not None else shown  # a text tag's string
            cells = [r.tag.path, escape(f"{name} ({shown})" if name else shown), r.tag.unit]
            cells.append(r.quality.name.lower())
            if result.bad:
                cells.append(escape(r.reason))  # a reason is text, not rich markup
            table.add_row(*cells, style=None if good else "red")
        console.print(table)
        for name, why in result.errors.items():
            err_console.print(f"{name}: {why}", markup=False, highlight=False)
        if result.bad and not result.errors:
            n = len(result.bad)
            err_console.print(
                f"{n} of {len(result.readings)} tags read bad", markup=False, highlight=False
            )
    if result.errors or result.bad:
        raise typer.Exit(EXIT_FAILED)

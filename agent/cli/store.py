"""The store on the command line: `export` readings, the `status` of store and sinks, the
`quarantine` of refused records; and the checks every command reading a store makes first."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.exits import Refused
from agent.cli.options import DataOption, JsonOption, OptionalConfig
from agent.cli.output import console, err_console, print_json

if TYPE_CHECKING:
    from agent.config.sections import Config
    from agent.export import Labels


def export(
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="The agent's config (for its store).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="The data directory, instead of -c.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="ISO-8601 (2026-03-01T06:00), today, yesterday, now or back from now (-2h); "
            "read in the plant calendar's zone (UTC without one).",
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="As --from; the first moment excluded.")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Glob on the tag path.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write; its folder must exist.")
    ] = None,
) -> None:
    """Export stored readings, one row per reading, as CSV or JSON lines."""
    from agent.config.loader import load_config
    from agent.export import export_readings, parse_time, write_csv, write_file, write_jsonl

    if fmt not in ("csv", "jsonl"):
        raise Refused(f"unknown format {fmt!r}; choose csv or jsonl")
    import time

    from agent.timerange import parse_moment, plant_zone, zone_name

    store_dir = data_dir(config_file, data)
    config = load_config(config_file) if config_file is not None else None
    zone, now_ns = plant_zone(config), time.time_ns()
    try:
        start_ns = parse_moment(start, zone, now_ns, parse_time) if start else None
        end_ns = parse_moment(end, zone, now_ns, parse_time) if end else None
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if start_ns is not None and end_ns is not None and start_ns >= end_ns:
        raise Refused(f"--from {start} is not before --to {end}: that range holds no readings")
    # A missing folder is refused, not created: it is more likely a typo than a wish.
    if out is not None and not out.parent.is_dir():
        raise Refused(f"{out.parent}: no such folder for --out (export does not create one)")
    from functools import partial

    labels = _export_labels(config)
    writer = partial(write_csv if fmt == "csv" else write_jsonl, labels=labels)
    store_here(store_dir, "has the agent run with this data_dir?")
    try:
        # Opened and checked whole before the first line is written.
        rows = export_readings(store_dir, start_ns=start_ns, end_ns=end_ns, tag_glob=tag)
        if out is None:
            count = writer(rows, sys.stdout)
        else:
            count = write_file(out, lambda f: writer(rows, f))
    except OSError as exc:  # the store's own errors arrive as StoreError (exit 1)
        where = out if out is not None else "standard output"
        raise Refused(f"{where}: cannot write: {exc.strerror}") from None
    err_console.print(f"{count} readings exported (times read in {zone_name(zone)})", markup=False)


def _export_labels(config: Config | None) -> Labels:
    """The config's tag types and code names for `export` (none with --data)."""
    from agent.codenames import CodeNames
    from agent.export import Labels
    from agent.values import models_by_path

    if config is None:
        return Labels()
    return Labels(models_by_path(config), CodeNames.of(config))


def store_here(directory: Path, hint: str, *, whole: bool = False) -> None:
    """Exit 2 when `directory` holds no store; a store that cannot be used raises its StoreError
    (exit 1, the one-line "damaged ... move it aside" error). `whole`: read all of it
    (quick_check) now, for commands that have no other check before their output."""
    from agent.store import NoStore, find_store

    try:
        find_store(directory, whole=whole)
    except NoStore:
        raise Refused(f"{directory}: no store here ({hint})") from None


def data_dir(config_file: Path | None, data: Path | None) -> Path:
    if (config_file is None) == (data is None):
        raise Refused("give either --config FILE or --data DIR")
    if data is not None:
        return data
    from agent.config.loader import load_config

    assert config_file is not None
    return load_config(config_file).agent.data_dir


def status(
    config_file: OptionalConfig = None, data: DataOption = None, as_json: JsonOption = False
) -> None:
    """The store and every sink: backlog, oldest unsent record, quarantine, last error."""
    from rich.table import Table

    from agent.reasons import one_line
    from agent.status import collect

    directory = data_dir(config_file, data)
    store_here(directory, "has the agent run with this data_dir?")
    report = collect(directory)
    if as_json:
        print_json(report)
        return
    store = report["store"]
    depth = ", ".join(f"{k} {v['depth']:,}" for k, v in store["streams"].items())
    console.print(f"store {store['path']}: {store['bytes'] / 1e6:.1f} MB; held: {depth}")
    agent = report["agent"]
    if agent["status_age_s"] is None:
        console.print("agent: no status written yet (not running?)")
    else:
        state = "running" if agent["status_age_s"] < 10 else "not running"
        console.print(f"agent: {state} (status written {agent['status_age_s']:.0f}s ago)")
        for name, link in agent["sources"].items():
            line = f"  source {name}: {link.get('state')} {link.get('last_error', '')}".rstrip()
            bad = one_line(link.get("bad_reasons") or {}, link.get("tags") or 0)
            console.print(f"{line}; {bad}" if bad else line, markup=False, highlight=False)
        console.print(
            f"  readings dropped by the store's bounds: {agent['dropped_readings'] or 0:,}"
        )
        if agent["store_full"]:
            why = f" ({agent['full_reason']})" if agent.get("full_reason") else ""
            console.print(
                f"  ALARM: the store is full{why}; readings wait in memory up to a bound, "
                "then are dropped and counted; events wait",
                style="bold red",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    table = Table(title="sinks", title_justify="left")
    for column in ("sink", "state", "backlog", "oldest unsent", "quarantined", "last error"):
        table.add_column(column)
    for name, sink in report["sinks"].items():
        ages = [a for a in sink["oldest_unsent_age_s"].values() if a is not None]
        table.add_row(
            name,
            str(sink["state"] or "-"),
            f"{sink['backlog']['telemetry']:,} batches, {sink['backlog']['events']:,} events",
            f"{max(ages):.0f}s" if ages else "-",
            str(sink["quarantined"]),
            str(sink["last_error"] or ""),
        )
    if report["sinks"]:
        console.print(table)
    else:
        console.print("no sinks configured: readings stay in the store")


def quarantine(
    action: Annotated[str, typer.Argument(help="list or retry")],
    config_file: OptionalConfig = None,
    data: DataOption = None,
    sink: Annotated[str | None, typer.Option("--sink", help="Only this sink.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Records a sink's far side refused: list them, or have them sent again."""
    from agent.store import Store

    if action not in ("list", "retry"):
        raise Refused(f"unknown action {action!r}; choose list or retry")
    directory = data_dir(config_file, data)
    store_here(directory, "has the agent run with this data_dir?")
    with Store(directory) as store:
        if action == "retry":
            count = store.request_retry(sink)
            console.print(f"{count} records will be sent again by the running agent")
            return
        entries = store.quarantined(sink)
    if as_json:
        print_json(entries)
        return
    if not entries:
        console.print("nothing in quarantine")
    for e in entries:
        retry = " (retry asked)" if e.retry else ""
        console.print(f"{e.sink} {e.stream} seq {e.seq}: {e.reason}{retry}", markup=False)

"""The `lineside` command line.

Commands import what they need inside their bodies: `lineside --help` and `lineside validate`
must stay fast and never load a protocol library, ONNX Runtime or OpenCV.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from agent import __version__
from agent.errors import ConfigError, LinesideError

if TYPE_CHECKING:
    from agent.config import Config

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


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The config file (TOML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _load(file: Path) -> Config:
    from agent.config import load_config

    try:
        return load_config(file)
    except ConfigError as exc:
        raise _fail([str(p) for p in exc.problems]) from None


def _setup_logging(level: str) -> None:
    import logging

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


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
    watch: Annotated[
        bool, typer.Option("--watch", help="Show the values live, read back over Modbus TCP.")
    ] = False,
) -> None:
    """Run a simulated plant (Modbus TCP, Modbus RTU on a pty, OPC UA) and print its endpoints."""
    from firmware_sim.plant import load_plant
    from firmware_sim.runner import PlantError, serve
    from firmware_sim.watch import watch_plant

    try:
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
            duration=duration,
            console=console,
        )
    except PlantError as exc:
        raise _fail([str(exc)]) from None


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo's config and SQLite store go.")
    ] = Path("demo"),
    speed: Annotated[float, typer.Option("--speed", help="Simulated seconds per second.")] = 10.0,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many real seconds.")
    ] = None,
) -> None:
    """Start the demo plant with the agent polling it into SQLite, and show it live."""
    from agent.demo import run_demo

    run_demo(directory=directory, speed=speed, duration=duration, console=console)


@app.command()
def run(
    config_file: ConfigOption,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    stats: Annotated[
        Path | None, typer.Option("--stats", help="Write the agent's statistics here (JSON).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning")] = "info",
) -> None:
    """Run the agent: poll every source into the SQLite log until SIGTERM or Ctrl-C."""
    import asyncio
    import contextlib
    import signal

    from agent.eventloop import run as run_loop
    from agent.runtime import Agent

    config = _load(config_file)
    _setup_logging(log_level)

    async def main() -> dict[str, object]:
        agent = Agent(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await agent.run(stop, duration)
        return agent.statistics()

    try:
        figures = run_loop(main)
    except LinesideError as exc:
        err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if stats is not None:
        stats.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")


@app.command()
def plan(config_file: ConfigOption, as_json: JsonOption = False) -> None:
    """Print the Modbus read plan: requests per poll, registers, bytes and waste, per unit."""
    from rich.table import Table

    from agent.registry import runtime_class
    from agent.tags import TagTable

    config = _load(config_file)
    tags = TagTable.from_config(config)
    rows = []
    for source_config in config.sources:
        if not source_config.type.startswith("modbus"):
            continue
        source = runtime_class(source_config.type)(source_config, tags)
        for group in source.poll_groups():
            for unit in source.unit_groups(group):
                rows.append(
                    {
                        "source": source_config.name,
                        "unit_id": unit.unit_id,
                        "machine": unit.machine,
                        "group": group,
                        "tags": int(unit.tag_ids.shape[0]),
                        "requests": unit.plan.requests_per_poll,
                        "registers": unit.plan.registers_read,
                        "bits": unit.plan.bits_read,
                        "wasted_registers": unit.plan.wasted_registers,
                        "bytes": unit.plan.bytes_per_poll,
                        "reads": [str(r) for r in unit.plan.requests],
                    }
                )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no Modbus sources in this config")
        return
    table = Table(title="Modbus read plan, per poll", title_justify="left")
    for column in ("source", "unit", "machine", "every"):
        table.add_column(column)
    for column in ("tags", "requests", "registers", "bits", "unused", "bytes"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            *(str(r[k]) for k in ("source", "unit_id", "machine", "group", "tags", "requests")),
            *(str(r[k]) for k in ("registers", "bits", "wasted_registers", "bytes")),
        )
    console.print(table)
    console.print("unused: registers read only to bridge gaps; bytes: request + response on TCP")
    for r in rows:
        reads = ", ".join(r["reads"])
        console.print(f"{r['source']} unit {r['unit_id']} every {r['group']}: {reads}")


@app.command()
def read(
    config_file: ConfigOption,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Only tags whose path or name matches this glob.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Read every tag once and print it (exit 1 when a source cannot be reached)."""
    from rich.table import Table

    from agent.eventloop import run as run_loop
    from agent.oneshot import read_once

    config = _load(config_file)
    result = run_loop(lambda: read_once(config, tag))
    if tag is not None and not result.readings and not result.errors:
        raise _fail([f"no tag matches {tag!r}"])
    if as_json:
        out = {
            "readings": [
                {
                    "path": r.tag.path,
                    "value": None if r.value != r.value else r.value,
                    "unit": r.tag.unit,
                    "quality": r.quality.name.lower(),
                    "ts_ns": r.ts_ns,
                }
                for r in result.readings
            ],
            "errors": result.errors,
        }
        print(json.dumps(out, indent=2))
    else:
        table = Table(title_justify="left")
        for column in ("tag", "value", "unit", "quality"):
            table.add_column(column, justify="right" if column == "value" else "left")
        for r in result.readings:
            good = r.quality.name == "GOOD"
            table.add_row(
                r.tag.path,
                f"{r.value:g}" if r.value == r.value else "-",
                r.tag.unit,
                r.quality.name.lower(),
                style=None if good else "red",
            )
        console.print(table)
        for name, why in result.errors.items():
            err_console.print(f"{name}: {why}", markup=False, highlight=False)
    if result.errors:
        raise typer.Exit(1)


@app.command()
def export(
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="The agent's config (for its store).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="The data directory, instead of -c.")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="ISO-8601 time, e.g. 2026-03-01T06:00")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO-8601 time (excluded).")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Glob on the tag path.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl")] = "csv",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write.")] = None,
) -> None:
    """Export stored readings, one row per reading, as CSV or JSON lines."""
    from agent.errors import StoreError
    from agent.export import export_readings, parse_time, write_csv, write_jsonl

    if fmt not in ("csv", "jsonl"):
        raise _fail([f"unknown format {fmt!r}; choose csv or jsonl"])
    store_dir = _data_dir(config_file, data)
    try:
        start_ns = parse_time(start) if start else None
        end_ns = parse_time(end) if end else None
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    writer = write_csv if fmt == "csv" else write_jsonl
    try:
        rows = export_readings(store_dir, start_ns=start_ns, end_ns=end_ns, tag_glob=tag)
        if out is None:
            count = writer(rows, sys.stdout)
        else:
            with out.open("w", encoding="utf-8", newline="") as f:
                count = writer(rows, f)
    except StoreError as exc:
        raise _fail([str(exc)]) from None
    err_console.print(f"{count} readings exported", markup=False)


@app.command()
def discover(
    protocol: Annotated[str, typer.Argument(help="What to discover: modbus.")],
    target: Annotated[str, typer.Argument(help="HOST or HOST:PORT (port 502 if not given).")],
    units: Annotated[
        str, typer.Option("--units", help='Unit ids to probe, e.g. "1-247" or "1,2,10-20".')
    ] = "1-247",
    max_address: Annotated[
        int, typer.Option("--max-address", help="Highest 0-based address scanned per table.")
    ] = 9999,
    timeout: Annotated[str, typer.Option("--timeout", help="Limit per request.")] = "300ms",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write a tag list (tags_file CSV) of what reads."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find the Modbus unit ids that answer and the address ranges each one can read."""
    from rich.progress import Progress

    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop
    from connectors.modbus import discover as found

    if protocol != "modbus":
        raise _fail(
            [
                "only modbus can be discovered in this version; "
                "OPC UA discovery comes with the OPC UA connector"
            ]
        )
    try:
        host, port = found.parse_target(target)
        unit_ids = found.parse_units(units)
        found.check_max_address(max_address)
        time_limit = parse_duration(timeout)
        if time_limit <= 0:
            raise ValueError(f"--timeout must be more than zero, got {timeout!r}")
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    if out is not None and not out.parent.is_dir():
        raise _fail([f"{out}: no such directory: {out.parent}"])  # before a long scan, not after

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("connecting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        try:
            result = run_loop(
                lambda: found.discover(
                    host,
                    port,
                    unit_ids,
                    max_address=max_address,
                    time_limit=time_limit,
                    progress=progress,
                )
            )
        except LinesideError as exc:
            err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    files: list[dict[str, object]] = []
    if out is not None:
        for scan in result.scans:
            path = found.tags_path(out, scan.unit_id, len(result.scans) > 1)
            rows, left_out = found.tag_rows(scan)
            try:
                found.write_tags(path, rows)
            except OSError as exc:
                raise _fail([f"{path}: cannot write: {exc.strerror}"]) from None
            files.append(
                {
                    "unit_id": scan.unit_id,
                    "path": str(path),
                    "rows": len(rows),
                    "left_out": left_out,
                }
            )
    where = f"{host}:{port}"
    if as_json:
        print(
            json.dumps(
                {
                    "target": where,
                    "unit_ids_probed": len(result.probes),
                    "answering": list(result.answering),
                    "answers_any_unit_id": result.any_unit,
                    "probes": [
                        {
                            "unit_id": p.unit_id,
                            "present": p.present,
                            "answer": found.describe(p.answer, time_limit),
                        }
                        for p in result.probes
                    ],
                    "units": [
                        {
                            "unit_id": s.unit_id,
                            "requests": s.requests,
                            "tables": {
                                str(t.table): {
                                    "readable": [
                                        {"first": a, "last": b - 1, "count": b - a}
                                        for a, b in t.readable
                                    ],
                                    "requests": t.requests,
                                    "doubtful": t.doubtful,
                                    "unsupported": t.unsupported,
                                }
                                for t in s.tables
                            },
                        }
                        for s in result.scans
                    ],
                    "requests": result.requests,
                    "tags_files": files,
                },
                indent=2,
            )
        )
    else:
        _print_discovery(result, files)
    if not result.answering:
        err_console.print(
            f"lineside: no unit id answered on {where} ({len(result.probes)} probed)",
            markup=False,
        )
        raise typer.Exit(1)


if TYPE_CHECKING:
    from connectors.modbus.discover import Discovery


def _print_discovery(result: Discovery, files: list[dict[str, object]]) -> None:
    from rich.table import Table

    from connectors.modbus.discover import format_units

    where = f"{result.host}:{result.port}"
    console.print(
        f"{where}: {len(result.answering)} of {len(result.probes)} unit ids answered: "
        + (format_units(result.answering) or "none"),
        markup=False,
        highlight=False,
    )
    if result.any_unit:
        console.print(
            "every unit id probed answered: the device likely ignores the unit id; "
            f"scanned once, as unit {result.answering[0]}",
            markup=False,
            highlight=False,
        )
    table = Table(title_justify="left")
    for column in ("unit", "table", "readable", "addresses", "requests"):
        table.add_column(column, justify="right" if column in ("addresses", "requests") else "left")
    for scan in result.scans:
        for t in scan.tables:
            readable = ", ".join(t.spans()) or ("no such function" if t.unsupported else "-")
            if t.doubtful:
                readable += f" ({t.doubtful} reads failed otherwise: may be incomplete)"
            table.add_row(
                str(scan.unit_id), t.table.noun, readable, str(t.addresses), str(t.requests)
            )
    if result.scans:
        console.print(table)
    console.print(f"{result.requests} requests in all", markup=False, highlight=False)
    for f in files:
        note = (
            f" (the cap; {f['left_out']} more readable addresses left out)" if f["left_out"] else ""
        )
        console.print(f"wrote {f['path']}: {f['rows']} tags{note}", markup=False, highlight=False)


def _data_dir(config_file: Path | None, data: Path | None) -> Path:
    if (config_file is None) == (data is None):
        raise _fail(["give either --config FILE or --data DIR"])
    return data if data is not None else _load(config_file).agent.data_dir  # type: ignore[arg-type]


DataOption = Annotated[
    Path | None, typer.Option("--data", help="The data directory, instead of --config.")
]
OptionalConfig = Annotated[
    Path | None, typer.Option("--config", "-c", help="The agent's config (for its store).")
]


@app.command()
def status(
    config_file: OptionalConfig = None, data: DataOption = None, as_json: JsonOption = False
) -> None:
    """The store and every sink: backlog, oldest unsent record, quarantine, last error."""
    from rich.table import Table

    from agent.errors import StoreError
    from agent.status import collect

    directory = _data_dir(config_file, data)
    if not (directory / "lineside.db").is_file():
        raise _fail([f"{directory}: no store here (has the agent run with this data_dir?)"])
    try:
        report = collect(directory)
    except StoreError as exc:
        raise _fail([str(exc)]) from None
    if as_json:
        print(json.dumps(report, indent=2))
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
            console.print(f"  source {name}: {link.get('state')} {link.get('last_error', '')}")
        console.print(
            f"  readings dropped by the store's bounds: {agent['dropped_readings'] or 0:,}"
        )
        if agent["store_full"]:
            console.print("  ALARM: the store is full; events wait in memory", style="bold red")
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


@app.command()
def quarantine(
    action: Annotated[str, typer.Argument(help="list or retry")],
    config_file: OptionalConfig = None,
    data: DataOption = None,
    sink: Annotated[str | None, typer.Option("--sink", help="Only this sink.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Records a sink's far side refused: list them, or have them sent again."""
    from dataclasses import asdict

    from agent.errors import StoreError
    from agent.store import Store

    if action not in ("list", "retry"):
        raise _fail([f"unknown action {action!r}; choose list or retry"])
    directory = _data_dir(config_file, data)
    if not (directory / "lineside.db").is_file():
        raise _fail([f"{directory}: no store here (has the agent run with this data_dir?)"])
    try:
        with Store(directory) as store:
            if action == "retry":
                count = store.request_retry(sink)
                console.print(f"{count} records will be sent again by the running agent")
                return
            entries = store.quarantined(sink)
    except StoreError as exc:
        raise _fail([str(exc)]) from None
    if as_json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return
    if not entries:
        console.print("nothing in quarantine")
    for e in entries:
        retry = " (retry asked)" if e.retry else ""
        console.print(f"{e.sink} {e.stream} seq {e.seq}: {e.reason}{retry}", markup=False)


def main() -> None:
    app()

"""The `lineside` command line.

Commands import what they need inside their bodies: `lineside --help` and `lineside validate`
must stay fast and never load a protocol library, ONNX Runtime or OpenCV.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from agent import __version__
from agent.errors import ConfigError, LinesideError, StoreError
from agent.extras import MissingExtra, needs
from agent.helptext import plain_flags

if TYPE_CHECKING:
    from agent.config import Config
    from agent.export import Labels
    from connectors.mqtt.config import MqttSinkConfig

app = typer.Typer(
    name="lineside",
    help="Edge agent and MES connector: PLCs in, OEE and KPIs out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

plain_flags()

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


def _seconds(text: str) -> float:
    from agent.duration import parse_cli_duration

    try:
        return parse_cli_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


DurationOption = Annotated[
    float | None,
    typer.Option(
        "--duration", parser=_seconds, metavar="DURATION", help='Stop after this long ("30s").'
    ),
]


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
    if level.upper() != "DEBUG":
        _quiet_asyncua()


def _quiet_asyncua() -> None:
    """asyncua logs each refusal and failure itself, some with a traceback; lineside says each
    one in its own line (the source's status, the command's error), so only debug shows them."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)


def _print_version(wanted: bool) -> None:
    if wanted:
        console.print(f"lineside {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Edge agent and MES connector: PLCs in, OEE and KPIs out."""


@app.command()
def version() -> None:
    """Print lineside's version."""
    console.print(__version__, markup=False, highlight=False)


@app.command()
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
    from agent.config import load_config
    from agent.summary import render_summary, summary_dict

    if (file is None) == (config_file is None):
        raise _fail(["give the config file once: lineside validate -c FILE (or validate FILE)"])
    file = file if file is not None else config_file
    assert file is not None

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
    protocol: Annotated[
        str, typer.Option("--protocol", help="How the PLCs are read: modbus, s7 or mc.")
    ] = "modbus",
) -> None:
    """Write an annotated starter config for a kind of line (it matches `lineside sim`)."""
    from agent.starter import PROFILES, PROTOCOLS, starter_config

    if profile not in PROFILES:
        raise _fail([f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}"])
    if protocol not in PROTOCOLS:
        raise _fail([f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}"])
    text = starter_config(profile, protocol)
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
            s7=s7,
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


@app.command()
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
    import signal

    from agent.errors import AlreadyRunning, StoreTooNew
    from agent.eventloop import run as run_loop
    from agent.lock import DataDirLock
    from agent.logs import LogError, configure
    from agent.openfiles import raise_for
    from agent.runtime import Agent

    config = _load(config_file)
    if log_level is not None and log_level.lower() not in ("debug", "info", "warning", "error"):
        raise _fail([f"--log-level: expected debug, info, warning or error, got {log_level!r}"])
    try:
        configure(config.log, log_level)
    except LogError as exc:
        raise _fail([str(exc)]) from None
    raise_for(config)  # 1,000 PLC connections need more than a soft limit of 1024

    async def main() -> dict[str, object]:
        agent = Agent(config)
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

    try:
        # One agent per store: a second one would interleave sequence numbers and cursors.
        with DataDirLock(config.agent.data_dir):
            figures = run_loop(main)
    except MissingExtra:
        raise  # exit 2 from main(), like every command
    except (AlreadyRunning, StoreTooNew) as exc:
        raise _fail([f"lineside: {exc}"]) from None
    except LinesideError as exc:
        err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if stats is not None:
        stats.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")


@app.command()
def plan(config_file: ConfigOption, as_json: JsonOption = False) -> None:
    """Print the read plans: Modbus and MC requests per unit, S7 multi-reads per CPU, with waste."""
    from rich.table import Table

    from agent.registry import runtime_class
    from agent.source import PlansReads
    from agent.tags import TagTable

    config = _load(config_file)
    tags = TagTable.from_config(config)
    rows = []
    s7_rows: list[dict[str, object]] = []
    for source_config in config.sources:
        if source_config.type == "s7":  # multi-reads per CPU, not requests per unit
            s7_rows += _s7_plan_rows(source_config, tags)
            continue
        try:
            runtime = runtime_class(source_config.type)
        except MissingExtra:  # its library is not installed, and it plans no reads (OPC UA)
            continue
        source = runtime(source_config, tags)
        if not isinstance(source, PlansReads):  # a source that plans no reads (OPC UA)
            continue
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
        print(json.dumps([*rows, *s7_rows], indent=2))
        return
    if s7_rows:
        _print_s7_plan(s7_rows)
    if not rows:
        if not s7_rows:
            console.print("no Modbus, MC or S7 sources in this config")
        return
    kinds = {"MC" if s.type == "mc" else "Modbus" for s in config.sources if s.type != "opcua"}
    title = " and ".join(sorted(kinds, key=lambda k: k != "Modbus"))  # "Modbus and MC"
    table = Table(title=f"{title} read plan, per poll", title_justify="left")
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


def _discover_s7(
    target: str | None, rack: int, slot: int, timeout: str | None, out: Path | None, as_json: bool
) -> None:
    from agent.duration import parse_duration
    from agent.errors import ConnectorError
    from agent.eventloop import run as run_loop

    if target is None:
        raise _fail(["discover s7 needs a target: HOST or HOST:PORT"])
    with needs("Siemens S7", "s7"):
        from connectors.s7 import discover as found

    try:
        host, port = found.parse_target(target)
        time_limit = parse_duration(timeout or "3s")
        if time_limit <= 0 or not 0 <= rack <= 7 or not 0 <= slot <= 31:
            raise ValueError("--timeout must be more than zero, --rack 0..7, --slot 0..31")
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    if out is not None and not out.parent.is_dir():
        raise _fail([f"{out}: its folder does not exist"])
    try:
        result = run_loop(lambda: found.discover(host, port, rack, slot, time_limit))
    except ConnectorError as exc:
        raise _fail([str(exc)]) from None
    rows, left_out = found.tag_rows(result)
    if out is not None and rows:
        try:
            found.write_tags_file(out, rows)
        except OSError as exc:
            raise _fail([f"{out}: cannot write: {exc.strerror}"]) from None
    if as_json:
        summary = {
            "endpoint": result.endpoint,
            "pdu_size": result.pdu_size,
            "order_code": result.order_code,
            "firmware": result.firmware,
            "module_name": result.module_name,
            "module_type": result.module_type,
            "as_name": result.as_name,
            "serial": result.serial,
            "data_blocks": None
            if result.data_blocks is None
            else [{"number": n, "bytes": b} for n, b in result.data_blocks],
            "notes": result.notes,
            "tags_file": None
            if out is None or not rows
            else {"path": str(out), "rows": len(rows), "left_out": left_out},
        }
        print(json.dumps(summary, indent=2))
        return
    console.print(f"S7 CPU at {result.endpoint}, PDU {result.pdu_size}", markup=False)
    for label, value in (
        ("order number", result.order_code),
        ("firmware", result.firmware),
        ("module", result.module_name),
        ("module type", result.module_type),
        ("plant designation", result.as_name),
        ("serial number", result.serial),
    ):
        console.print(f"  {label}: {value or '-'}", markup=False)
    if result.data_blocks is not None:
        blocks = ", ".join(f"DB{n} ({b} bytes)" for n, b in result.data_blocks) or "none"
        console.print(f"  data blocks: {blocks}", markup=False)
    for note in result.notes:
        console.print(f"  note: {note}", markup=False)
    if out is not None and rows:
        more = f" ({left_out} more left out)" if left_out else ""
        console.print(f"wrote {len(rows)} rows to {out}{more}: a tags_file to edit", markup=False)


def _s7_plan_rows(source_config: Any, tags: Any) -> list[dict[str, object]]:
    from connectors.s7.source import S7Source

    source = S7Source(source_config, tags)
    rows: list[dict[str, object]] = []
    for group, plan in source.plans().items():
        rows.append(
            {
                "type": "s7",
                "source": source_config.name,
                "machine": source_config.machine,
                "group": group,
                "tags": sum(len(i.tags) for r in plan.requests for i in r.items),
                "requests": plan.requests_per_poll,
                "minimum_requests": plan.minimum_requests,
                "items": plan.items,
                "bytes": plan.bytes_read,
                "wasted_bytes": plan.wasted_bytes,
                "pdu_size": plan.pdu_size,
                "reads": [str(r) for r in plan.requests],
            }
        )
    return rows


def _print_s7_plan(rows: list[dict[str, object]]) -> None:
    from rich.table import Table

    table = Table(title="S7 read plan, per poll", title_justify="left")
    for column in ("source", "machine", "every"):
        table.add_column(column)
    for column in ("tags", "requests", "at least", "items", "bytes", "unused", "PDU"):
        table.add_column(column, justify="right")
    keys = ("tags", "requests", "minimum_requests", "items", "bytes", "wasted_bytes", "pdu_size")
    for r in rows:
        table.add_row(
            str(r["source"]), str(r["machine"]), str(r["group"]), *(str(r[k]) for k in keys)
        )
    console.print(table)
    console.print(
        "PDU: the size asked for (the CPU may grant less; the plan is then made again for it)"
    )
    for r in rows:
        reads = r["reads"]
        assert isinstance(reads, list)
        for read in reads:
            console.print(f"{r['source']} every {r['group']}: {read}", markup=False)


@app.command()
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
    from agent.eventloop import run as run_loop
    from agent.oneshot import read_once
    from agent.values import models_by_path, plain, text

    config = _load(config_file)
    _quiet_asyncua()
    result = run_loop(lambda: read_once(config, tag))
    models, names = models_by_path(config), CodeNames.of(config)
    if tag is not None and not result.readings and not result.errors:
        raise _fail([f"no tag matches {tag!r}"])
    if as_json:
        out = {
            "readings": [
                {
                    "path": r.tag.path,
                    "value": plain(r.value, models.get(r.tag.path)),
                    "name": names.name(r.tag.path, r.value),
                    "unit": r.tag.unit,
                    "quality": r.quality.name.lower(),
                    "reason": r.reason or None,
                    "ts_ns": r.ts_ns,
                }
                for r in result.readings
            ],
            "errors": result.errors,
        }
        print(json.dumps(out, indent=2))
    else:
        table = Table(title_justify="left")
        columns = ("tag", "value", "unit", "quality", "reason")
        for column in columns if result.bad else columns[:-1]:
            table.add_column(column, justify="right" if column == "value" else "left")
        for r in result.readings:
            good = r.quality.name == "GOOD"
            shown, name = text(r.value, models.get(r.tag.path)), names.name(r.tag.path, r.value)
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
    from agent.errors import StoreError
    from agent.export import export_readings, parse_time, write_csv, write_file, write_jsonl

    if fmt not in ("csv", "jsonl"):
        raise _fail([f"unknown format {fmt!r}; choose csv or jsonl"])
    import time

    from agent.timerange import parse_moment, plant_zone, zone_name

    store_dir = _data_dir(config_file, data)
    config = _load(config_file) if config_file is not None else None
    zone, now_ns = plant_zone(config), time.time_ns()
    try:
        start_ns = parse_moment(start, zone, now_ns, parse_time) if start else None
        end_ns = parse_moment(end, zone, now_ns, parse_time) if end else None
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    if start_ns is not None and end_ns is not None and start_ns >= end_ns:
        raise _fail([f"--from {start} is not before --to {end}: that range holds no readings"])
    # A missing folder is refused, not created: it is more likely a typo than a wish.
    if out is not None and not out.parent.is_dir():
        raise _fail([f"{out.parent}: no such folder for --out (export does not create one)"])
    from functools import partial

    labels = _export_labels(config)
    writer = partial(write_csv if fmt == "csv" else write_jsonl, labels=labels)
    _store_here(store_dir, "has the agent run with this data_dir?")
    try:
        # Opened and checked whole before the first line is written.
        rows = export_readings(store_dir, start_ns=start_ns, end_ns=end_ns, tag_glob=tag)
        if out is None:
            count = writer(rows, sys.stdout)
        else:
            count = write_file(out, lambda f: writer(rows, f))
    except StoreError as exc:
        raise _store_failed(exc) from None
    except OSError as exc:  # the store's own errors arrive as StoreError
        where = out if out is not None else "standard output"
        raise _fail([f"{where}: cannot write: {exc.strerror}"]) from None
    err_console.print(f"{count} readings exported (times read in {zone_name(zone)})", markup=False)


def _export_labels(config: Config | None) -> Labels:
    """The config's tag types and code names for `export` (none with --data)."""
    from agent.codenames import CodeNames
    from agent.export import Labels
    from agent.values import models_by_path

    if config is None:
        return Labels()
    return Labels(models_by_path(config), CodeNames.of(config))


@app.command()
def discover(
    protocol: Annotated[str, typer.Argument(help="What to discover: modbus, opcua, s7 or mc.")],
    target: Annotated[
        str | None,
        typer.Argument(
            help="modbus: HOST or HOST:PORT (port 502 if not given); opcua: opc.tcp://HOST:PORT "
            "(with --source: the source's endpoint if not given); s7: HOST or HOST:PORT (102); "
            "mc: HOST or HOST:PORT (5007)"
        ),
    ] = None,
    units: Annotated[
        str, typer.Option("--units", help='Unit ids to probe, e.g. "1-247" or "1,2,10-20".')
    ] = "1-247",
    unit: Annotated[
        int | None, typer.Option("--unit", help="modbus: only this unit id (as --units N).")
    ] = None,
    focus: Annotated[
        str | None,
        typer.Option("--range", help='modbus: scan only these addresses, e.g. "hr:0-99".'),
    ] = None,
    max_address: Annotated[
        int, typer.Option("--max-address", help="Highest 0-based address scanned per table.")
    ] = 9999,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            help="Limit per request (modbus: 300ms, opcua: 5s or the --source's timeout).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write a tag list (tags_file CSV) of what reads."),
    ] = None,
    root: Annotated[
        str, typer.Option("--root", help="opcua: the node to browse from (a node id).")
    ] = "Objects",
    depth: Annotated[int, typer.Option("--depth", help="opcua: levels browsed below --root.")] = 5,
    out_format: Annotated[
        str, typer.Option("--format", help="opcua: the --out file as csv or toml.")
    ] = "csv",
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="opcua: the config file holding --source."),
    ] = None,
    source_name: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="opcua: connect as this \\[\\[sources]] entry does (security, trust, login).",
        ),
    ] = None,
    rack: Annotated[int, typer.Option("--rack", help="s7: the CPU's rack.")] = 0,
    slot: Annotated[
        int, typer.Option("--slot", help="s7: the CPU's slot (S7-1200/1500: 1, S7-300: 2).")
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Find the Modbus unit ids and address ranges that read, an OPC UA server's variables, or
    an S7 CPU's identity and data blocks."""
    from rich.progress import Progress

    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop

    if protocol == "opcua":
        _discover_opcua(
            target, root, depth, timeout, out, out_format, as_json, config_file, source_name
        )
        return
    if protocol == "s7":
        _discover_s7(target, rack, slot, timeout, out, as_json)
        return
    if protocol == "mc":
        _discover_mc(target, timeout, max_address, out, as_json)
        return
    if protocol != "modbus":
        raise _fail([f"cannot discover {protocol!r}: choose modbus, opcua, s7 or mc"])
    if config_file is not None or source_name is not None:
        raise _fail(["--config and --source are for discover opcua"])
    if target is None:
        raise _fail(["discover modbus needs a target: HOST or HOST:PORT"])
    from connectors.modbus import discover as found

    timeout = timeout or "300ms"
    try:
        host, port = found.parse_target(target)
        unit_ids = found.parse_units(units if unit is None else str(unit))
        focused = found.parse_focus(focus) if focus is not None else None
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
                    focus=focused,
                    read_values=out is not None,
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


def _discover_mc(
    target: str | None, timeout: str | None, max_number: int, out: Path | None, as_json: bool
) -> None:
    """`discover mc`: the CPU model, each device's readable range, a starter tags file."""
    from rich.table import Table

    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop
    from connectors.mc import discover as found

    if target is None:
        raise _fail(["discover mc needs a target: HOST or HOST:PORT"])
    try:
        host, port = found.parse_target(target)
        time_limit = parse_duration(timeout or "1s")
        if time_limit <= 0 or not 0 <= max_number <= 0xFFFFFF:
            raise ValueError("--timeout must be more than zero, --max-address 0..16777215")
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    if out is not None and not out.parent.is_dir():
        raise _fail([f"{out}: no such directory: {out.parent}"])
    try:
        result = run_loop(
            lambda: found.discover(host, port, max_number=max_number, time_limit=time_limit)
        )
    except LinesideError as exc:
        err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if out is not None:
        try:
            found.write_tags(out, result.rows)
        except OSError as exc:
            raise _fail([f"{out}: cannot write: {exc.strerror}"]) from None
    if as_json:
        devices = [
            {"device": d.device, "last": d.last, "span": d.span(), "why": d.why}
            for d in result.devices
        ]
        doc = {
            "target": result.target,
            "model": result.model,
            "model_code": result.model_code,
            "devices": devices,
            "tags_file": str(out) if out is not None else None,
            "rows": len(result.rows),
            "left_out": result.left_out,
            "requests": result.requests,
        }
        print(json.dumps(doc, indent=2))
        return
    model = f"{result.model} (code {result.model_code:04X})" if result.model_code else "not told"
    table = Table(title=f"{result.target}: CPU {model}", title_justify="left")
    table.add_column("device")
    table.add_column("reads", justify="right")
    for d in result.devices:
        table.add_row(d.device, d.span())
    console.print(table)
    if out is not None:
        more = f" ({result.left_out} more left out)" if result.left_out else ""
        console.print(f"{len(result.rows)} non-zero words written to {out}{more}")


def _discover_opcua(
    endpoint: str | None,
    root: str,
    depth: int,
    timeout: str | None,
    out: Path | None,
    out_format: str,
    as_json: bool,
    config_file: Path | None,
    source_name: str | None,
) -> None:
    """`discover opcua`: browse, describe, and write the tag list (CSV or TOML).

    Anonymously with policy None, or (`--config --source`) as the agent connects for a source.
    """
    from rich.progress import Progress

    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop

    with needs("OPC UA", "opcua"):
        from connectors.opcua import discover as found

    if out_format not in ("csv", "toml"):
        raise _fail([f"--format must be csv or toml, got {out_format!r}"])
    try:
        found.parse_node_id(root)
        found.check_depth(depth)
        time_limit = parse_duration(timeout or "5s")
        if time_limit <= 0:
            raise ValueError(f"--timeout must be more than zero, got {timeout!r}")
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    if endpoint is not None and not endpoint.startswith("opc.tcp://"):
        raise _fail([f'expected an endpoint like "opc.tcp://host:4840", got {endpoint!r}'])
    if (config_file is None) != (source_name is None):
        raise _fail(["--config and --source go together: -c CONFIG --source NAME"])
    if out is not None and not out.parent.is_dir():
        raise _fail([f"{out}: no such directory: {out.parent}"])
    source = None
    if config_file is not None and source_name is not None:
        try:
            source = found.pick_source(_load(config_file).sources, source_name)
        except ValueError as exc:
            raise _fail([f"{config_file}: {exc}"]) from None
        # URL given: the same security towards another address of the server (a tunnel, say).
        changes: dict[str, object] = {"endpoint": endpoint} if endpoint is not None else {}
        if timeout is not None:
            changes["timeout"] = time_limit
        source = source.model_copy(update=changes)
        endpoint = source.endpoint
        command = f"lineside discover opcua -c {config_file} --source {source_name}"
    elif endpoint is None:
        raise _fail(['give an endpoint ("opc.tcp://host:4840") or -c CONFIG --source NAME'])
    else:
        command = f"lineside discover opcua {endpoint}"
    target = endpoint  # a str here; a name of its own keeps it one inside the closure below
    # asyncua warns of every ServiceFault (a refused login, say) on stderr; the one line below
    # says it in lineside's words. lineside's own warnings (a certificate pinned) still show.
    _quiet_asyncua()

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("connecting", total=None)

        def progress(what: str, done: int, total: int | None) -> None:
            bar.update(task, description=what, completed=done, total=total)

        try:
            result = run_loop(
                lambda: (
                    found.discover(
                        target, root=root, depth=depth, time_limit=time_limit, progress=progress
                    )
                    if source is None
                    else found.discover_source(source, root=root, depth=depth, progress=progress)
                )
            )
        except LinesideError as exc:
            err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    rows, left_out = found.tag_rows(result.variables)
    line = found.summary(result, len(rows), left_out)
    # A CSV per machine folder when the server has several: each is one unit's tags_file.
    files = {out: rows} if out is not None else {}
    groups = found.by_machine(result.variables)
    if out is not None and out_format == "csv" and len(groups) > 1:
        files = {found.machine_path(out, m): found.tag_rows(vs)[0] for m, vs in groups.items()}
    for path, part in files.items():
        text = (
            found.to_csv(part) if out_format == "csv" else found.to_toml(part, f"{command}\n{line}")
        )
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail([f"{path}: cannot write: {exc.strerror}"]) from None
    if as_json:
        print(
            json.dumps(
                {
                    "endpoint": result.endpoint,
                    "source": source_name,
                    "security": result.security,
                    "root": result.root,
                    "depth": result.depth,
                    "nodes_browsed": result.nodes_browsed,
                    "requests": result.requests,
                    "variables": [
                        {
                            "node_id": v.node_id,
                            "browse_path": v.browse_path,
                            "data_type": v.data_type,
                            "access": v.access,
                            "array_length": v.array_length,
                            "left_out": found.why_left_out(v),
                        }
                        for v in result.variables
                    ],
                    "tags": len(rows),
                    "tags_file": str(out) if out is not None and out in files else None,
                    "tags_files": {str(p): len(part) for p, part in files.items()},
                },
                indent=2,
            )
        )
    else:
        console.print(line, markup=False, highlight=False)
        for path, part in files.items():
            console.print(f"wrote {path}: {len(part)} tags", markup=False, highlight=False)
    if not result.variables:
        err_console.print(f"lineside: no variables under {result.root}", markup=False)
        raise typer.Exit(1)


service_app = typer.Typer(help="Run the agent as a systemd service.", no_args_is_help=True)
app.add_typer(service_app, name="service")


@service_app.command("install")
def service_install(
    config_file: Annotated[
        Path, typer.Option("--config", "-c", help="The config file the service runs.")
    ] = Path("/etc/lineside/lineside.toml"),
    user: Annotated[
        str, typer.Option("--user", help="The dedicated unprivileged user it runs as.")
    ] = "lineside",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit instead of writing it.")
    ] = False,
    unit_dir: Annotated[Path, typer.Option("--unit-dir", help="Where the unit file goes.")] = Path(
        "/etc/systemd/system"
    ),
) -> None:
    """Write the systemd unit (Type=notify, watchdog, restart on failure, hardened)."""
    import re

    from agent.service import UNIT_NAME, UnitSpec, serial_groups, unit_text, writable_paths

    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user) or user == "root":
        raise _fail([f"--user: expected an unprivileged user name like lineside, got {user!r}"])
    config = _load(config_file)
    executable = Path(sys.executable).parent / "lineside"
    if not executable.is_file():
        raise _fail([f"{executable}: the lineside command is not next to {sys.executable}"])
    spec = UnitSpec(
        executable=executable.absolute(),
        config=config_file.resolve(),
        user=user,
        writable=writable_paths(config),
        groups=serial_groups(config),
        description=f"lineside edge agent {config.agent.id}",
    )
    text = unit_text(spec)
    if print_only:
        sys.stdout.write(text)
        return
    target = unit_dir / UNIT_NAME
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _fail(
            [f"{target}: cannot write: {exc.strerror} (run as root, or use --print)"]
        ) from None
    folders = " ".join(str(p) for p in spec.writable)
    err_console.print(
        f"wrote {target}; then, as root:\n"
        f"  useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}\n"
        f"  install -d -o {user} -g {user} -m 0750 {folders}\n"
        "  systemctl daemon-reload && systemctl enable --now lineside\n"
        "  journalctl -u lineside -f",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


certs_app = typer.Typer(help="The agent's OPC UA application certificate.", no_args_is_help=True)
app.add_typer(certs_app, name="certs")


@certs_app.command("create")
def certs_create(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for cert.der and key.pem.")],
    uri: Annotated[
        str, typer.Option("--uri", help="The application URI, e.g. urn:acme:lineside:edge-1.")
    ],
    days: Annotated[int, typer.Option("--days", help="How long it is valid.")] = 365,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="DNS name in the certificate (this host's).")
    ] = None,
    key_password_env: Annotated[
        str | None,
        typer.Option("--key-password-env", help="Encrypt the key with this variable's value."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing files.")] = False,
) -> None:
    """Create a self-signed client certificate and key (mode 0600) for OPC UA security."""
    import os

    with needs("OPC UA", "opcua"):
        from connectors.opcua import certs

    passphrase = None
    if key_password_env is not None:
        passphrase = os.environ.get(key_password_env)
        if not passphrase:
            raise _fail(
                [f"--key-password-env: the environment variable {key_password_env} is unset"]
            )
    try:
        made = certs.create(
            out, uri, days=days, hostname=hostname, passphrase=passphrase, overwrite=force
        )
    except certs.CertificateError as exc:
        raise _fail([str(exc)]) from None
    console.print(made.application_uri, markup=False, highlight=False)
    err_console.print(
        f"wrote {made.certificate} (thumbprint {made.thumbprint}, valid until "
        f"{made.not_after:%Y-%m-%d}) and {made.private_key}; in the source: "
        f'certificate = "{made.certificate}", private_key = "{made.private_key}", '
        f'application_uri = "{made.application_uri}"',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


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


def _store_failed(exc: StoreError) -> typer.Exit:
    """A store that cannot be used (damaged, unreadable): one line on stderr, the same for every
    command (`run` says it so too), and exit 1."""
    err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _store_here(directory: Path, hint: str, *, whole: bool = False) -> None:
    """Exit 2 when `directory` holds no store; exit 1 with the one-line "damaged ... move it
    aside" error when what is there cannot be used. `whole`: read all of it (quick_check) now,
    for commands that have no other check before their output."""
    from agent.errors import StoreError
    from agent.store import NoStore, find_store

    try:
        find_store(directory, whole=whole)
    except NoStore:
        raise _fail([f"{directory}: no store here ({hint})"]) from None
    except StoreError as exc:
        raise _store_failed(exc) from None


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
    from agent.reasons import one_line
    from agent.status import collect

    directory = _data_dir(config_file, data)
    _store_here(directory, "has the agent run with this data_dir?")
    try:
        report = collect(directory)
    except StoreError as exc:
        raise _store_failed(exc) from None
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
    _store_here(directory, "has the agent run with this data_dir?")
    try:
        with Store(directory) as store:
            if action == "retry":
                count = store.request_retry(sink)
                console.print(f"{count} records will be sent again by the running agent")
                return
            entries = store.quarantined(sink)
    except StoreError as exc:
        raise _store_failed(exc) from None
    if as_json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return
    if not entries:
        console.print("nothing in quarantine")
    for e in entries:
        retry = " (retry asked)" if e.retry else ""
        console.print(f"{e.sink} {e.stream} seq {e.seq}: {e.reason}{retry}", markup=False)


@app.command()
def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The ONNX model file.")],
    adapter: Annotated[
        str, typer.Option("--adapter", help="auto, classify, detect or anomaly.")
    ] = "auto",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write annotated images to this folder.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Override the adapter's threshold.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="Inference threads.")] = 1,
    tile: Annotated[
        bool, typer.Option("--tile", help="Cut large images into model-sized tiles.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run an ONNX inspection model on images: verdicts as a table or JSON."""
    if adapter not in ("auto", "classify", "detect", "anomaly"):
        raise _fail([f"unknown adapter {adapter!r}: choose auto, classify, detect or anomaly"])
    with needs("Vision", "vision"):
        from vision.inspect_cli import run as run_inspect

    code = run_inspect(
        paths,
        model,
        adapter=adapter,
        out=out,
        as_json=as_json,
        threshold=threshold,
        threads=max(threads, 1),
        tile=tile,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    raise typer.Exit(code)


vision_app = typer.Typer(
    help="Vision models: fit one from good images, measure one, benchmark one."
)
app.add_typer(vision_app, name="vision")


def _rate(text: str, option: str) -> float:
    """ "1%", "1 %" or "0.01" → 0.01; a clear error for anything else."""
    raw = text.strip()
    try:
        value = float(raw[:-1].strip()) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise _fail([f"{option} {text!r}: expected a rate such as 1% or 0.01"]) from None
    if not 0 < value < 1:
        raise _fail([f"{option} {text!r}: expected a rate between 0 % and 100 %"])
    return value


@vision_app.command("fit")
def vision_fit(
    good: Annotated[Path, typer.Option("--good", help="Folder of images of good parts only.")],
    backbone: Annotated[
        Path,
        typer.Option("--backbone", help="ONNX feature backbone, or an ImageNet classifier to cut."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX model to write.")],
    method: Annotated[str, typer.Option("--method", help="gaussian or coreset.")] = "gaussian",
    size: Annotated[
        int | None, typer.Option("--size", help="Input size (px) for a dynamic backbone.")
    ] = None,
    percentile: Annotated[
        float, typer.Option("--percentile", help="Of good scores: the 0.5 boundary.")
    ] = 100.0,
    max_false_reject: Annotated[
        str | None,
        typer.Option(
            "--max-false-reject",
            help="Target share of good parts rejected, e.g. 1% (overrides --percentile).",
        ),
    ] = None,
    bad: Annotated[
        Path | None,
        typer.Option("--bad", help="Folder of defective images: report the escape rate."),
    ] = None,
) -> None:
    """Fit an anomaly model (anomalib layout) on good images, without PyTorch."""
    if method not in ("gaussian", "coreset"):
        raise _fail([f"unknown method {method!r}: choose gaussian or coreset"])
    rate = None if max_false_reject is None else _rate(max_false_reject, "--max-false-reject")
    with needs("Vision", "vision"):
        from vision.fit import FitError
        from vision.fit import run as run_fit

    try:
        result = run_fit(
            good,
            backbone,
            out,
            method=method,  # type: ignore[arg-type]
            size=size,
            percentile=percentile,
            max_false_reject=rate,
            bad=bad,
        )
    except FitError as exc:
        raise _fail([str(exc)]) from None
    for problem in result.skipped:
        err_console.print(f"skipped: {problem}", markup=False, highlight=False, soft_wrap=True)
    calibration = (
        f"{result.folds}-fold out-of-fold scores"
        if result.folds
        else "the fitted images themselves (too few for folds: expect more false rejects)"
    )
    rejected = round(result.false_reject * result.calibrated_on)
    lines = [
        f"{result.path}: {result.method} head on {result.feature_shape} features of "
        f"{result.images} good images ({len(result.skipped)} skipped), threshold from "
        f"{calibration}, in {result.seconds:.1f} s",
        f"backbone: {result.backbone_cut}",
        f"false rejects on held-out good images: {result.false_reject:.1%} "
        f"({rejected} of {result.calibrated_on}); raw threshold {result.threshold:.4g}",
    ]
    if result.escape is not None:
        lines.append(
            f"escapes (defective images accepted): {result.escape:.1%} of {result.bad_images}"
        )
    lines.append(f"measure it: lineside vision evaluate {result.path} --good DIR --bad DIR")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@vision_app.command("evaluate")
def vision_evaluate(
    model: Annotated[Path, typer.Argument(help="The ONNX model to measure.")],
    good: Annotated[Path, typer.Option("--good", help="Folder of images of good parts.")],
    bad: Annotated[
        Path | None,
        typer.Option("--bad", help="Folder of defective images (one sub-folder per defect)."),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option("--masks", help="Defect masks, laid out as --bad (white = defect)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for index.html, MODEL_CARD.md, evaluation.json."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """AUROC, false-reject and escape rates, pixel metrics and latency on labelled images."""
    with needs("Vision", "vision"):
        from vision.model import ModelError
        from vision.report import ReportError, lines
        from vision.report import run as run_report

    try:
        report, folder = run_report(model, good, bad, masks, out)
    except (ModelError, ReportError) as exc:
        raise _fail([str(exc)]) from None
    for problem in report.skipped:
        err_console.print(f"skipped: {problem}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    for line in [*lines(report), f"page and model card: {folder}/index.html, MODEL_CARD.md"]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@vision_app.command("backbone")
def vision_backbone(
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX backbone to write.")],
    variant: Annotated[
        str, typer.Option("--variant", help="EfficientNet-Lite variant: lite0, lite1, lite2.")
    ] = "lite0",
    size: Annotated[
        int, typer.Option("--size", help="Fixed input size in px; 0 (default) for dynamic.")
    ] = 0,
) -> None:
    """Export an ImageNet feature backbone to ONNX for `vision fit` (no PyTorch needed)."""
    if size < 0:
        raise _fail([f"--size {size}: expected a size in px, or 0 for dynamic"])
    with needs("Vision", "vision"):
        from vision.backbone import BackboneError, export

    try:
        result = export(out, variant=variant, size=size or None)
    except BackboneError as exc:
        raise _fail([str(exc)]) from None
    meta = {p.key: p.value for p in result.model.metadata_props}
    console.print(f"{out}: {result.describe()}", markup=False, highlight=False, soft_wrap=True)
    for key in ("weights_source", "weights_licence", "weights_sha256"):
        console.print(f"{key}: {meta[key]}", markup=False, highlight=False, soft_wrap=True)


@vision_app.command("bench")
def vision_bench(
    model: Annotated[Path, typer.Option("--model", "-m", help="The ONNX model file.")],
    frames: Annotated[int, typer.Option("--frames", help="JPEG frames per case.")] = 200,
    threads: Annotated[str, typer.Option("--threads", help="Inference threads to try.")] = "1,2",
    sizes: Annotated[str, typer.Option("--sizes", help="Frame sizes WxH.")] = "640x480,1280x1024",
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the results as JSON here.")
    ] = None,
) -> None:
    """Bare inference, bare decode+preprocess and full pipeline rates for one model."""
    with needs("Vision", "vision"):
        from vision.bench import main as run_bench

    argv = ["--model", str(model), "--frames", str(frames), "--threads", threads]
    argv += ["--sizes", sizes]
    argv += ["--out", str(json_out)] if json_out is not None else ["--no-json"]
    raise typer.Exit(run_bench(argv))


KpiConfig = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="The agent's config (TOML); its store is read, never changed."
    ),
]
ShiftOption = Annotated[
    str,
    typer.Option(
        "--shift",
        help="current, today, yesterday, a date (2026-11-23) or one shift (2026-11-23/A).",
    ),
]
LineOption = Annotated[
    str | None, typer.Option("--line", help="Only this line (area/line or line).")
]

if TYPE_CHECKING:
    from agent.kpi.replay import KpiWindow


def _kpi_windows(
    config: Config,
    shift: str,
    window: str | None,
    line: str | None,
    machine: str | None,
    *,
    with_hours: bool = False,
) -> tuple[list[KpiWindow], list[str]]:
    """The KPI windows selected, replayed from the store and kept to the line or machine asked
    for, and the machines without readings. Exit 2 on bad input, 1 on a store that cannot be
    read."""
    import time

    from rich.progress import Progress

    from agent.errors import StoreError
    from agent.kpi.replay import Selection, SelectionError, hours_of, replay, select

    with_kpi = [m for m in config.machines if m.kpi is not None]
    if not with_kpi:
        raise _fail([f"{config.file}: no machine has a [machines.kpi] section (see docs/kpi.md)"])
    lines = sorted({f"{m.area}/{m.line}" for m in with_kpi})

    def on_line(full: str) -> bool:
        return line is None or line in (full, full.split("/", 1)[1])

    if machine is not None and machine not in {m.name for m in with_kpi}:
        known = ", ".join(m.name for m in with_kpi)
        raise _fail([f"unknown machine {machine!r}; the machines with KPIs: {known}"])
    if not any(on_line(x) for x in lines):
        raise _fail([f"unknown line {line!r}; the lines: {', '.join(lines)}"])
    if window not in (None, "hour", "shift", "day"):
        raise _fail([f"unknown window {window!r}; choose shift, day or hour"])
    data_dir = config.agent.data_dir
    _store_here(data_dir, "has the agent run with this config?", whole=True)
    now_ns = time.time_ns()
    try:
        selection = select(config, shift, window, now_ns)  # type: ignore[arg-type]
    except SelectionError as exc:
        raise _fail([str(exc)]) from None
    if with_hours:
        selection = Selection(selection.windows + hours_of(config, selection, now_ns).windows)
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("replaying stored readings", total=None, visible=False)

        def progress(done: int, total: int) -> None:
            # Only long ranges get a bar: a short one is over before it could be read.
            bar.update(task, completed=done, total=total, visible=total > 20_000)

        try:
            result = replay(config, selection, now_ns, progress=progress)
        except StoreError as exc:
            raise _store_failed(exc) from None
    names = {
        m.name for m in with_kpi if on_line(f"{m.area}/{m.line}") and machine in (None, m.name)
    }
    picked = [
        w
        for w in result.windows
        if on_line(w.line) and (w.machine in names if w.machine is not None else machine is None)
    ]
    return picked, [m for m in result.missing if m in names]


@app.command()
def oee(
    config_file: KpiConfig = Path("lineside.toml"),
    line: LineOption = None,
    machine: Annotated[str | None, typer.Option("--machine", help="Only this machine.")] = None,
    shift: ShiftOption = "today",
    window: Annotated[
        str | None,
        typer.Option("--window", help="shift, day or hour (default: shift; day without shifts)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Both definitions, as JSON.")] = False,
) -> None:
    """OEE per machine and line (A, P, Q, counts, times, top losses), replayed from the store."""
    from agent.kpi.view import json_rows, tables
    from agent.timerange import plant_zone, zone_name

    config = _load(config_file)
    windows, missing = _kpi_windows(config, shift, window, line, machine)
    if as_json:
        print(json.dumps({"windows": json_rows(windows), "no_readings": missing}, indent=2))
        return
    zone = plant_zone(config)
    for part in tables(windows, zone):
        console.print(part)
    console.print(f"times in {zone_name(zone)}", markup=False, style="dim")
    if not windows:
        console.print("no KPI figures for this period")
    for name in missing:
        console.print(f"{name}: no readings stored for this period", markup=False)


@app.command()
def report(
    config_file: KpiConfig = Path("lineside.toml"),
    shift: ShiftOption = "today",
    line: LineOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path(
        "report.html"
    ),
) -> None:
    """Write a shift report as one HTML file: targets, machine states, losses, Pareto, trends."""
    import time

    from agent.errors import StoreError
    from agent.kpi.document import on_line, shift_report
    from agent.kpi.replay import SelectionError

    config = _load(config_file)
    if not out.parent.is_dir():
        raise _fail([f"{out}: no such directory: {out.parent}"])
    with_kpi = [m for m in config.machines if m.kpi is not None]
    if not with_kpi:
        raise _fail([f"{config.file}: no machine has a [machines.kpi] section (see docs/kpi.md)"])
    lines = sorted({f"{m.area}/{m.line}" for m in with_kpi})
    if not any(on_line(line, x) for x in lines):
        raise _fail([f"unknown line {line!r}; the lines: {', '.join(lines)}"])
    _store_here(config.agent.data_dir, "has the agent run with this config?", whole=True)
    try:
        html = shift_report(config, shift, time.time_ns(), line=line)
    except SelectionError as exc:
        raise _fail([str(exc)]) from None
    except StoreError as exc:
        raise _store_failed(exc) from None
    try:
        out.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise _fail([f"{out}: cannot write: {exc.strerror}"]) from None
    console.print(str(out), markup=False, highlight=False, soft_wrap=True)


fleet_app = typer.Typer(
    help="Every agent of a site, as the MQTT broker they publish to sees them.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")


def _broker_address(text: str) -> tuple[str, int | None]:
    """`HOST`, `HOST:PORT`, `[IPv6]:PORT` or a bare IPv6 address → host and port (or None)."""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if closed else "?"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host or (port and not port.isdigit()):
        raise _fail([f"--broker: expected HOST or HOST:PORT, got {text!r}"])
    return host, int(port) if port else None


def _fleet_broker(
    config_file: Path | None,
    sink: str | None,
    broker: str | None,
    overrides: dict[str, object],
    tls: dict[str, Path | None],
    use_tls: bool,
) -> tuple[MqttSinkConfig, str | None]:
    """The MQTT connection of `fleet status`: an MQTT sink of `config_file` (the first, or
    `sink`) with the options given on top, or the options alone; and the config's site."""
    from pydantic import ValidationError

    from connectors.mqtt.config import MqttSinkConfig

    base: dict[str, object] = {"type": "mqtt", "name": "fleet-view"}
    site = None
    if config_file is not None:
        config = _load(config_file)
        site = config.plant.site
        found = [
            s
            for s in config.sinks
            if isinstance(s, MqttSinkConfig) and (sink is None or s.name == sink)
        ]
        if not found:
            named = f" named {sink!r}" if sink is not None else ""
            raise _fail([f"{config_file}: no MQTT sink{named}; give --broker instead"])
        base = found[0].model_dump(exclude_none=True)
    elif broker is None:
        raise _fail(["give --broker HOST[:PORT] or --config with an MQTT sink"])
    elif sink is not None:
        raise _fail(["--sink picks a sink of --config; there is no --config"])
    if broker is not None:
        host, port = _broker_address(broker)
        base.update(host=host, **({"port": port} if port is not None else {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    given = {k: v for k, v in tls.items() if v is not None}
    if given or use_tls:
        earlier = base.get("tls")
        base["tls"] = {**(earlier if isinstance(earlier, dict) else {}), **given}
    try:
        return MqttSinkConfig.model_validate(base), site
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'broker'}: {e['msg']}" for e in exc.errors()
        ]
        raise _fail(problems) from None


@fleet_app.command("status")
def fleet_status(
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="HOST\\[:PORT] of the MQTT broker (default port 1883)."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Take broker, TLS, login, prefix and site from here."),
    ] = None,
    sink: Annotated[
        str | None, typer.Option("--sink", help="The MQTT sink of --config (default: the first).")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help='Topic prefix (default "lineside").')
    ] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Only this site (default: the config's, or all).")
    ] = None,
    use_tls: Annotated[
        bool, typer.Option("--tls", help="TLS with the system's trust store.")
    ] = False,
    ca: Annotated[Path | None, typer.Option("--ca", help="TLS: the broker's CA (PEM).")] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="TLS: a client certificate (PEM).")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="TLS: its private key (PEM).")] = None,
    username: Annotated[str | None, typer.Option("--username", help="Log in as this user.")] = None,
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="The password's environment variable.")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="A file holding the password.")
    ] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", help="Seconds to collect status messages.", min=0.1, max=60),
    ] = 1.5,
    as_json: JsonOption = False,
) -> None:
    """Every agent's retained status on the broker, one table; offline in red, exit 1 when
    any agent is not online (or none answered)."""
    import time

    from agent.eventloop import run as run_loop
    from agent.fleet import all_online, fleet_rows, render_fleet, status_filter

    overrides: dict[str, object] = {
        "topic_prefix": prefix,
        "username": username,
        "password_env": password_env,
        "password_file": password_file,
    }
    tls = {"ca": ca, "cert": cert, "key": key}
    connection, config_site = _fleet_broker(config_file, sink, broker, overrides, tls, use_tls)
    topics = status_filter(connection.topic_prefix, site or config_site)

    from connectors.mqtt.fleet import read_statuses

    try:
        messages = run_loop(lambda: read_statuses(connection, topics, wait))
    except LinesideError as exc:
        err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    rows = fleet_rows(messages, time.time_ns() // 1_000_000)
    if as_json:
        print(json.dumps(rows, indent=2))
    elif rows:
        render_fleet(rows, console)
    else:
        err_console.print(
            f"no agent status on {topics} within {wait:g} s "
            '(a wrong prefix or site? status_interval = "0s"?)',
            markup=False,
            highlight=False,
        )
    if not all_online(rows):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except MissingExtra as exc:
        # A feature whose extra is not installed: one line saying what to install.
        err_console.print(f"lineside: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)

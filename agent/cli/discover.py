"""`discover modbus`, `discover s7`, `discover mc`: what a device answers, and a starter tag
list of what reads (`discover opcua` is in agent/cli/opcua.py).

The JSON of each is built from the result types below, serialised by `print_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.exits import EXIT_FAILED, Refused, refusing, writing
from agent.cli.options import JsonOption
from agent.cli.output import console, err_console, print_json
from agent.extras import needs

if TYPE_CHECKING:
    from connectors.modbus.findings import Discovery

TimeoutOption = Annotated[
    str | None,
    typer.Option(
        "--timeout", help="Limit per request (modbus: 300ms, opcua: 5s or the --source's timeout)."
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Write a tag list (tags_file CSV) of what reads."),
]
MaxAddressOption = Annotated[
    int, typer.Option("--max-address", help="Highest 0-based address scanned per table.")
]


@dataclass(frozen=True, slots=True)
class TagsFile:
    """A tag list `discover modbus` wrote for one unit."""

    unit_id: int
    path: str
    rows: int
    left_out: int


@dataclass(frozen=True, slots=True)
class ModbusProbe:
    unit_id: int
    present: bool
    answer: str


@dataclass(frozen=True, slots=True)
class ModbusUnit:
    unit_id: int
    requests: int
    tables: dict[str, dict[str, object]]


@dataclass(frozen=True, slots=True)
class ModbusReport:
    """`discover modbus --json`."""

    target: str
    unit_ids_probed: int
    answering: list[int]
    answers_any_unit_id: bool
    probes: list[ModbusProbe]
    units: list[ModbusUnit]
    requests: int
    tags_files: list[TagsFile]


def _modbus_report(result: Discovery, files: list[TagsFile], time_limit: float) -> ModbusReport:
    from connectors.modbus.findings import describe

    return ModbusReport(
        target=f"{result.host}:{result.port}",
        unit_ids_probed=len(result.probes),
        answering=list(result.answering),
        answers_any_unit_id=result.any_unit,
        probes=[
            ModbusProbe(p.unit_id, p.present, describe(p.answer, time_limit)) for p in result.probes
        ],
        units=[
            ModbusUnit(
                s.unit_id,
                s.requests,
                {
                    str(t.table): {
                        "readable": [
                            {"first": a, "last": b - 1, "count": b - a} for a, b in t.readable
                        ],
                        "requests": t.requests,
                        "doubtful": t.doubtful,
                        "unsupported": t.unsupported,
                    }
                    for t in s.tables
                },
            )
            for s in result.scans
        ],
        requests=result.requests,
        tags_files=files,
    )


def modbus(
    target: Annotated[
        str | None, typer.Argument(help="HOST or HOST:PORT (port 502 if not given).")
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
    max_address: MaxAddressOption = 9999,
    timeout: TimeoutOption = None,
    out: OutOption = None,
    config_file: Annotated[Path | None, typer.Option("--config", "-c", hidden=True)] = None,
    source_name: Annotated[str | None, typer.Option("--source", hidden=True)] = None,
    as_json: JsonOption = False,
) -> None:
    """Find the Modbus unit ids and address ranges that read."""
    from rich.progress import Progress

    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop

    if config_file is not None or source_name is not None:
        raise Refused("--config and --source are for discover opcua")
    if target is None:
        raise Refused("discover modbus needs a target: HOST or HOST:PORT")
    from connectors.modbus import discover as found
    from connectors.modbus import findings

    timeout = timeout or "300ms"
    with refusing(ValueError):
        host, port = found.parse_target(target)
        unit_ids = found.parse_units(units if unit is None else str(unit))
        focused = found.parse_focus(focus) if focus is not None else None
        found.check_max_address(max_address)
        time_limit = parse_duration(timeout)
        if time_limit <= 0:
            raise ValueError(f"--timeout must be more than zero, got {timeout!r}")
    if out is not None and not out.parent.is_dir():
        raise Refused(f"{out}: no such directory: {out.parent}")  # before a long scan, not after

    with Progress(console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("connecting", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

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

    files: list[TagsFile] = []
    if out is not None:
        for scan in result.scans:
            path = findings.tags_path(out, scan.unit_id, len(result.scans) > 1)
            rows, left_out = findings.tag_rows(scan)
            with writing(path):
                findings.write_tags(path, rows)
            files.append(TagsFile(scan.unit_id, str(path), len(rows), left_out))
    if as_json:
        print_json(_modbus_report(result, files, time_limit))
    else:
        _print_modbus(result, files)
    if not result.answering:
        err_console.print(
            f"lineside: no unit id answered on {host}:{port} ({len(result.probes)} probed)",
            markup=False,
        )
        raise typer.Exit(EXIT_FAILED)


def _print_modbus(result: Discovery, files: list[TagsFile]) -> None:
    from rich.table import Table

    from connectors.modbus.findings import format_units

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
        note = f" (the cap; {f.left_out} more readable addresses left out)" if f.left_out else ""
        console.print(f"wrote {f.path}: {f.rows} tags{note}", markup=False, highlight=False)


@dataclass(frozen=True, slots=True)
class McDevice:
    device: str
    last: int | None
    span: str
    why: str


@dataclass(frozen=True, slots=True)
class McReport:
    """`discover mc --json`."""

    target: str
    model: str | None
    model_code: int | None
    devices: list[McDevice]
    tags_file: str | None
    rows: int
    left_out: int
    requests: int


def mc(
    target: Annotated[str | None, typer.Argument(help="HOST or HOST:PORT (5007).")] = None,
    timeout: TimeoutOption = None,
    max_number: MaxAddressOption = 9999,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """A MELSEC CPU's model, each device's readable range, and a starter tags file."""
    from rich.table import Table

    from agent.duration import parse_duration
    from agent.eventloop import run as run_loop
    from connectors.mc import discover as found

    if target is None:
        raise Refused("discover mc needs a target: HOST or HOST:PORT")
    with refusing(ValueError):
        host, port = found.parse_target(target)
        time_limit = parse_duration(timeout or "1s")
        if time_limit <= 0 or not 0 <= max_number <= 0xFFFFFF:
            raise ValueError("--timeout must be more than zero, --max-address 0..16777215")
    if out is not None and not out.parent.is_dir():
        raise Refused(f"{out}: no such directory: {out.parent}")
    result = run_loop(
        lambda: found.discover(host, port, max_number=max_number, time_limit=time_limit)
    )
    if out is not None:
        with writing(out):
            found.write_tags(out, result.rows)
    if as_json:
        devices = [McDevice(d.device, d.last, d.span(), d.why) for d in result.devices]
        print_json(
            McReport(
                target=result.target,
                model=result.model,
                model_code=result.model_code,
                devices=devices,
                tags_file=str(out) if out is not None else None,
                rows=len(result.rows),
                left_out=result.left_out,
                requests=result.requests,
            )
        )
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


@dataclass(frozen=True, slots=True)
class DataBlock:
    number: int
    bytes: int


@dataclass(frozen=True, slots=True)
class S7TagsFile:
    path: str
    rows: int
    left_out: int


@dataclass(frozen=True, slots=True)
class S7Report:
    """`discover s7 --json`."""

    endpoint: str
    pdu_size: int
    order_code: str | None
    firmware: str | None
    module_name: str | None
    module_type: str | None
    as_name: str | None
    serial: str | None
    data_blocks: list[DataBlock] | None
    notes: list[str]
    tags_file: S7TagsFile | None


def s7(
    target: Annotated[str | None, typer.Argument(help="HOST or HOST:PORT (102).")] = None,
    rack: Annotated[int, typer.Option("--rack", help="s7: the CPU's rack.")] = 0,
    slot: Annotated[
        int, typer.Option("--slot", help="s7: the CPU's slot (S7-1200/1500: 1, S7-300: 2).")
    ] = 1,
    timeout: TimeoutOption = None,
    out: OutOption = None,
    as_json: JsonOption = False,
) -> None:
    """An S7 CPU's identity and data blocks, and a starter tags file."""
    from agent.duration import parse_duration
    from agent.errors import ConnectorError
    from agent.eventloop import run as run_loop

    if target is None:
        raise Refused("discover s7 needs a target: HOST or HOST:PORT")
    with needs("Siemens S7", "s7"):
        from connectors.s7 import discover as found

    with refusing(ValueError):
        host, port = found.parse_target(target)
        time_limit = parse_duration(timeout or "3s")
        if time_limit <= 0 or not 0 <= rack <= 7 or not 0 <= slot <= 31:
            raise ValueError("--timeout must be more than zero, --rack 0..7, --slot 0..31")
    if out is not None and not out.parent.is_dir():
        raise Refused(f"{out}: its folder does not exist")
    with refusing(ConnectorError):  # a CPU that is not there is a wrong address: exit 2
        result = run_loop(lambda: found.discover(host, port, rack, slot, time_limit))
    rows, left_out = found.tag_rows(result)
    if out is not None and rows:
        with writing(out):
            found.write_tags_file(out, rows)
    if as_json:
        listed = result.data_blocks
        print_json(
            S7Report(
                endpoint=result.endpoint,
                pdu_size=result.pdu_size,
                order_code=result.order_code,
                firmware=result.firmware,
                module_name=result.module_name,
                module_type=result.module_type,
                as_name=result.as_name,
                serial=result.serial,
                data_blocks=None if listed is None else [DataBlock(n, b) for n, b in listed],
                notes=result.notes,
                tags_file=None
                if out is None or not rows
                else S7TagsFile(str(out), len(rows), left_out),
            )
        )
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

"""`plan`: the read plans of a config's sources, as tables or JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.cli.options import ConfigOption, JsonOption
from agent.cli.output import console, print_json
from agent.extras import MissingExtra


@dataclass(frozen=True, slots=True)
class UnitPlan:
    """The requests of one Modbus or MC unit's poll group."""

    source: str
    unit_id: int
    machine: str
    group: str  # the poll interval, as the config writes it
    tags: int
    requests: int
    registers: int
    bits: int
    wasted_registers: int
    bytes: int
    reads: list[str]


@dataclass(frozen=True, slots=True)
class S7Plan:
    """The multi-reads of one S7 CPU's poll group."""

    type: str
    source: str
    machine: str
    group: str
    tags: int
    requests: int
    minimum_requests: int
    items: int
    bytes: int
    wasted_bytes: int
    pdu_size: int
    reads: list[str]


def plan(config_file: ConfigOption, as_json: JsonOption = False) -> None:
    """Print the read plans: Modbus and MC requests per unit, S7 multi-reads per CPU, with waste."""
    from rich.table import Table

    from agent.config.loader import load_config
    from agent.registry import runtime_class
    from agent.source import PlansReads
    from agent.tags import TagTable

    config = load_config(config_file)
    tags = TagTable.from_config(config)
    rows: list[UnitPlan] = []
    s7_rows: list[S7Plan] = []
    for source_config in config.sources:
        if source_config.type == "s7":  # multi-reads per CPU, not requests per unit
            s7_rows += _s7_plans(source_config, tags)
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
                    UnitPlan(
                        source=source_config.name,
                        unit_id=unit.unit_id,
                        machine=unit.machine,
                        group=group,
                        tags=int(unit.tag_ids.shape[0]),
                        requests=unit.plan.requests_per_poll,
                        registers=unit.plan.registers_read,
                        bits=unit.plan.bits_read,
                        wasted_registers=unit.plan.wasted_registers,
                        bytes=unit.plan.bytes_per_poll,
                        reads=[str(r) for r in unit.plan.requests],
                    )
                )
    if as_json:
        print_json([*rows, *s7_rows])
        return
    if s7_rows:
        _print_s7_plans(s7_rows)
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
        cells = (r.source, r.unit_id, r.machine, r.group, r.tags, r.requests)
        table.add_row(
            *(str(c) for c in cells),
            *(str(c) for c in (r.registers, r.bits, r.wasted_registers, r.bytes)),
        )
    console.print(table)
    console.print("unused: registers read only to bridge gaps; bytes: request + response on TCP")
    for r in rows:
        console.print(f"{r.source} unit {r.unit_id} every {r.group}: {', '.join(r.reads)}")


def _s7_plans(source_config: Any, tags: Any) -> list[S7Plan]:
    from connectors.s7.source import S7Source

    source = S7Source(source_config, tags)
    return [
        S7Plan(
            type="s7",
            source=source_config.name,
            machine=source_config.machine,
            group=group,
            tags=sum(len(i.tags) for r in plan.requests for i in r.items),
            requests=plan.requests_per_poll,
            minimum_requests=plan.minimum_requests,
            items=plan.items,
            bytes=plan.bytes_read,
            wasted_bytes=plan.wasted_bytes,
            pdu_size=plan.pdu_size,
            reads=[str(r) for r in plan.requests],
        )
        for group, plan in source.plans().items()
    ]


def _print_s7_plans(rows: list[S7Plan]) -> None:
    from rich.table import Table

    table = Table(title="S7 read plan, per poll", title_justify="left")
    for column in ("source", "machine", "every"):
        table.add_column(column)
    for column in ("tags", "requests", "at least", "items", "bytes", "unused", "PDU"):
        table.add_column(column, justify="right")
    for r in rows:
        figures = (
            r.tags, r.requests, r.minimum_requests, r.items, r.bytes, r.wasted_bytes, r.pdu_size
        )  # fmt: skip
        table.add_row(r.source, r.machine, str(r.group), *(str(f) for f in figures))
    console.print(table)
    console.print(
        "PDU: the size asked for (the CPU may grant less; the plan is then made again for it)"
    )
    for r in rows:
        for read in r.reads:
            console.print(f"{r.source} every {r.group}: {read}", markup=False)

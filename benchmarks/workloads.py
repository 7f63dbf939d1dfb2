"""The acquisition workloads W1-W4 (and the 10,000-tag memory run) as plain data.

A `Workload` says how many PLCs, which tags each has (every PLC of a workload has the same
register map), how often they are polled and over what link. From it come the agent's config
(TOML plus a tags CSV, `write_agent_config`) and the read blocks the baselines send
(`read_blocks`, the same coalescing the agent's planner does, built once before timing).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from connectors.modbus.address import Table
from connectors.modbus.planner import PlanTag, ReadRequest, plan_unit, tag_width

# Coalescing shared by the agent's config and the baselines' blocks.
MAX_GAP = 10
# The end-to-end ceiling's plan: every gap bridged that a read's size allows (125 registers,
# 2,000 bits), the fewest requests a hand-written reader would send.
BRIDGING_GAP = 2000
MAX_REGISTERS = 125
# "As fast as possible" for the agent: a grid this fine is always overrun, so every poll starts
# as soon as the previous one ended (each skipped grid point is counted as an overrun).
FAST_INTERVAL = "10us"
# The register image each simulated PLC serves (addresses 0..IMAGE_SIZE-1 in every table).
IMAGE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class TagSpec:
    name: str
    table: Table
    offset: int
    type: str

    @property
    def address(self) -> str:
        return f"{self.table.value}:{self.offset}"

    @property
    def width(self) -> int:
        return tag_width(self.table, self.type)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    title: str
    plcs: int
    tags: tuple[TagSpec, ...]
    interval: float | None  # seconds; None: as fast as possible
    link: Literal["tcp", "rtu"] = "tcp"
    report: Literal["changes", "all"] = "changes"
    baudrate: int = 115200

    @property
    def total_tags(self) -> int:
        return self.plcs * len(self.tags)


def contiguous_float32(n: int) -> tuple[TagSpec, ...]:
    """`n` float32 tags packed from hr:0 (2 registers each)."""
    return tuple(TagSpec(f"f{i:03d}", Table.HOLDING_REGISTERS, 2 * i, "float32") for i in range(n))


def scattered_mixed() -> tuple[TagSpec, ...]:
    """20 tags spread over all four tables, of mixed types, some close enough to share a read."""
    hr, ir, co, di = (
        Table.HOLDING_REGISTERS,
        Table.INPUT_REGISTERS,
        Table.COILS,
        Table.DISCRETE_INPUTS,
    )
    layout = [
        (hr, 0, "float32"),
        (hr, 2, "float32"),
        (hr, 9, "int16"),
        (hr, 25, "uint32"),
        (hr, 40, "float32"),
        (hr, 61, "int16"),
        (hr, 90, "float64"),
        (hr, 200, "uint16"),
        (ir, 0, "uint16"),
        (ir, 5, "int32"),
        (ir, 30, "float32"),
        (ir, 70, "uint16"),
        (ir, 130, "int16"),
        (ir, 135, "uint32"),
        (co, 0, "bool"),
        (co, 3, "bool"),
        (co, 40, "bool"),
        (di, 1, "bool"),
        (di, 17, "bool"),
        (di, 500, "bool"),
    ]
    return tuple(
        TagSpec(f"{table.value}{offset}_{type}", table, offset, type)
        for table, offset, type in layout
    )


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "10 PLCs x 100 float32, contiguous, every 100 ms", 10,
                   contiguous_float32(100), 0.1),
    "W2": Workload("W2", "10 PLCs x 100 float32, as fast as possible, every sample stored", 10,
                   contiguous_float32(100), None, report="all"),
    "W3": Workload("W3", "50 PLCs x 20 scattered tags, mixed tables and types, every 1 s", 50,
                   scattered_mixed(), 1.0),
    "W4": Workload("W4", "RTU bus, 8 units x 20 float32 at 115200 baud on a pty, every 100 ms",
                   8, contiguous_float32(20), 0.1, link="rtu"),
}  # fmt: skip

# The memory figure: the agent's RSS with 10,000 tags configured and polled.
RSS_WORKLOAD = Workload(
    "RSS", "100 PLCs x 100 float32 every 1 s (10,000 tags)", 100, contiguous_float32(100), 1.0
)


# End to end (benchmarks/endtoend.py): every sample stored and forwarded (`report = "all"`),
# and two workloads at the scale of a plant.
END_TO_END: dict[str, Workload] = {
    "W1": replace(WORKLOADS["W1"], report="all"),
    "W3": replace(WORKLOADS["W3"], report="all"),
    "W2": WORKLOADS["W2"],
    "S200": Workload("S200", "200 PLCs x 100 float32, contiguous, every 1 s", 200,
                     contiguous_float32(100), 1.0, report="all"),
    "C1000": Workload("C1000", "1,000 PLC connections x 10 float32, every 1 s", 1000,
                      contiguous_float32(10), 1.0, report="all"),
}  # fmt: skip

# Every workload by name, for the baselines' command line (the end-to-end W1-W3 read the same
# blocks as those of the acquisition benchmark).
ALL_WORKLOADS: dict[str, Workload] = {
    **END_TO_END,
    **WORKLOADS,
    RSS_WORKLOAD.name: RSS_WORKLOAD,
}


def read_blocks(tags: tuple[TagSpec, ...], max_gap: int = MAX_GAP) -> tuple[ReadRequest, ...]:
    """The reads one poll of one PLC sends: the agent's own coalescing (planned once)."""
    plan = plan_unit(
        [PlanTag(i, t.table, t.offset, t.width, t.type) for i, t in enumerate(tags)],
        max_registers=MAX_REGISTERS,
        max_gap=max_gap,
    )
    return plan.requests


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms" if seconds < 1 else f"{seconds:g}s"


def write_agent_config(
    workload: Workload,
    endpoints: list[int] | str,
    directory: Path,
    *,
    fast_interval: str = FAST_INTERVAL,
    extra: str = "",
    max_gap: int | None = MAX_GAP,
) -> Path:
    """Write the agent's config for `workload` into `directory`; return the TOML's path.

    `endpoints` is one TCP port per PLC (unit id 1 on each), or the pty path of the RTU bus
    (unit ids 1..plcs). `fast_interval` is the poll interval of an "as fast as possible"
    workload; `extra` is TOML appended at the end (a sink); `max_gap` None leaves the agent's
    default.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "tags.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["name", "address", "type"])
        for tag in workload.tags:
            out.writerow([tag.name, tag.address, tag.type])
    gap = [] if max_gap is None else [f"max_gap = {max_gap}"]
    interval = fast_interval if workload.interval is None else _duration(workload.interval)
    lines = [
        "config_version = 1",
        "",
        "[agent]",
        f'id = "bench-{workload.name.lower()}"',
        'data_dir = "data"',
        f'report = "{workload.report}"',
        "",
        "[plant]",
        'site = "bench"',
    ]
    for k in range(workload.plcs):
        lines += ["", "[[machines]]", f'name = "m{k:03d}"', 'area = "a"', 'line = "l"']
    unit_keys = [f'poll_interval = "{interval}"', 'tags_file = "tags.csv"']
    if isinstance(endpoints, str):
        lines += [
            "",
            "[[sources]]",
            'name = "bus"',
            'type = "modbus_rtu"',
            f'port = "{endpoints}"',
            f"baudrate = {workload.baudrate}",
            'parity = "N"',
            # t3.5 at 115200 baud is 1.75 ms: the shortest pause the bus allows.
            'frame_pause = "2ms"',
            'timeout = "500ms"',
            *gap,
        ]
        for k in range(workload.plcs):
            lines += ["", "[[sources.units]]", f"unit_id = {k + 1}", f'machine = "m{k:03d}"']
            lines += unit_keys
    else:
        if len(endpoints) != workload.plcs:
            raise ValueError(f"{workload.name} needs {workload.plcs} ports, got {len(endpoints)}")
        for k, port in enumerate(endpoints):
            lines += [
                "",
                "[[sources]]",
                f'name = "plc{k:03d}"',
                'type = "modbus_tcp"',
                'host = "127.0.0.1"',
                f"port = {port}",
                'timeout = "1s"',
                *gap,
                # Every block of one poll in flight at once, as the ceiling does.
                "max_in_flight = 16",
                "",
                "[[sources.units]]",
                "unit_id = 1",
                f'machine = "m{k:03d}"',
                *unit_keys,
            ]
    path = directory / "lineside.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path

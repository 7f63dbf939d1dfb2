"""Annotated starter configs for `lineside init --profile press|cement|loom`.

The machines and their Modbus tags come from the simulator's machine profiles
(`firmware_sim/profiles/*.toml`), so a starter config reads `lineside sim --plant <profile>`
as it is: one Modbus TCP port per machine from 5020 up, unit id 1, on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from firmware_sim.machines import loom, mill, press
from firmware_sim.profile import ProfileTag, load_profile
from firmware_sim.s7_map import S7Tag, s7_map

PROFILES: tuple[str, ...] = ("press", "cement", "loom")

FIRST_PORT = 5020  # `lineside sim` serves machine n (from 0) on FIRST_PORT + n
FIRST_S7_PORT = 10200  # `lineside sim --s7` serves machine n's S7 CPU on FIRST_S7_PORT + n
FIRST_MC_PORT = 6020  # and the MC protocol on FIRST_MC_PORT + n
PROTOCOLS: tuple[str, ...] = ("modbus", "s7", "mc")


@dataclass(frozen=True, slots=True)
class _Line:
    kind: str  # the simulator's machine kind
    count: int
    site: str
    area: str
    line: str
    what: str  # one line for the header comment


_LINES = {
    "press": _Line("press", 2, "suzhou", "stamping", "body-line-1", "a press line, 2 presses"),
    "cement": _Line("mill", 1, "anhui", "grinding", "cement-mill-1", "a cement mill"),
    "loom": _Line("loom", 2, "shaoxing", "weaving", "shed-1", "a weaving shed, 2 looms"),
}
# Where each kind of machine sits when a plant mixes them (the demo plant).
_PLACE = {line.kind: (line.area, line.line) for line in _LINES.values()}

_CODES = "states = { running = [1], idle = [2], down = [3], setup = [4], planned_stop = [5] }"
# The `[machines.kpi]` section of each kind: which of its tags feed OEE (docs/kpi.md). The
# ideal rates are the simulated machines' rated speeds.
_KPI: dict[str, list[str]] = {
    "press": [
        'state = "state"',
        "packml = true  # PackML StateCurrent, read with the unit mode",
        'unit_mode = "unit_mode"',
        'total = "part_count"',
        'good = "good_count"',
        'reject = "reject_count"',
        'ideal_cycle_time = "2.5s"  # 24 strokes per minute',
        'product = "die_id"  # a text tag: the die mounted is the product (its string)',
        "target_oee = 0.85  # the page's and the report's targets: OEE as a ratio,",
        "target_output = 9000  # and good parts planned per shift",
    ],
    "mill": [
        'state = "state"',
        f"{_CODES}  # the PLC's state codes",
        'total = "produced_t"',
        'reject = "offspec_t"  # good = total - reject',
        "ideal_rate = 160",
        'rate_per = "hour"  # tonnes per hour',
        'energy = "energy_kwh"  # kWh per good tonne',
        "target_oee = 0.8",
        "target_output = 1000  # good tonnes planned per shift",
    ],
    "loom": [
        'state = "state"',
        f"{_CODES}  # the PLC's state codes",
        'total = "pick_count"',
        'reject = "faulty_picks"',
        "ideal_rate = 800",
        'rate_per = "minute"  # picks per minute',
        "target_oee = 0.8",
        "target_output = 300000  # good picks planned per shift",
    ],
}
_REASONS = {"press": press.STOP_REASONS, "mill": mill.STOP_REASONS, "loom": loom.STOP_REASONS}


# The [calendar] section: shifts give the planned time that OEE is measured against. A starter
# config shows a common two-shift week with breaks; a simulated plant (the demo, tests) runs
# round the clock, so its OEE is defined whenever someone looks at it.
TWO_SHIFTS = (
    "# Shifts give the planned time that OEE is measured against.",
    "[calendar]",
    'timezone = "Asia/Shanghai"',
    'days_off = []  # e.g. ["2026-10-01"]',
    "",
    "[[calendar.shifts]]",
    'name = "A"',
    'start = "06:00"',
    'end = "14:00"',
    'days = ["mon", "tue", "wed", "thu", "fri", "sat"]',
    'breaks = [{ start = "10:00", end = "10:30" }]',
    "",
    "[[calendar.shifts]]",
    'name = "B"',
    'start = "14:00"',
    'end = "22:00"',
    'days = ["mon", "tue", "wed", "thu", "fri", "sat"]',
    'breaks = [{ start = "18:00", end = "18:30" }]',
    "",
)
ROUND_THE_CLOCK = (
    "# Shifts give the planned time that OEE is measured against: this plant runs round the",
    "# clock, three shifts a day, every day (add breaks = [...] and days_off as a plant has them).",
    "[calendar]",
    'timezone = "Asia/Shanghai"',
    "",
    "[[calendar.shifts]]",
    'name = "A"',
    'start = "06:00"',
    'end = "14:00"',
    "",
    "[[calendar.shifts]]",
    'name = "B"',
    'start = "14:00"',
    'end = "22:00"',
    "",
    "[[calendar.shifts]]",
    'name = "C"',
    'start = "22:00"',
    'end = "06:00"',
    "",
)


def _kpi_section(kind: str, protocol: str, inspection: str | None = None) -> list[str]:
    labels = ", ".join(f'"{code}" = {_toml(text)}' for code, text in _REASONS[kind].items() if code)
    quality = []
    if inspection is not None:
        quality = [f"inspection = {_toml(inspection)}  # quality from the camera's verdicts"]
    return [
        "[machines.kpi]  # the tags OEE is computed from (docs/kpi.md)",
        # Text tags are read over Modbus and OPC UA only: elsewhere the die is no product key.
        *(k for k in _KPI[kind] if protocol == "modbus" or not k.startswith("product =")),
        'reason = "stop_reason"',
        f"reasons = {{ {labels} }}",
        *quality,
    ]


CAMERA_DEFECT_RATE = 0.05  # share of the simulated camera's parts painted with a defect


def _camera(machine: str, model: str, save: str | None = None, seed: int = 1) -> list[str]:
    """A simulated camera inspecting every part of a press (docs/vision.md, "Simulated camera")."""
    return [
        "",
        "# The simulated camera over the press: one generated metal part image per stroke",
        "# (the rising edge of part_present), judged by the model; its verdicts are the press's",
        "# quality in OEE (kpi.inspection above).",
        "[[inspections]]",
        f'name = "{machine}-surface"',
        f'machine = "{machine}"',
        f'source = {{ type = "sim", seed = {seed}, defect_rate = {CAMERA_DEFECT_RATE!r}, '
        'surfaces = ["metal"] }',
        'trigger = { type = "tag", tag = "part_present" }',
        f"model = {_toml(model)}",
        "threads = 1  # onnxruntime threads: a core stays free for polling",
        *(
            []
            if save is None
            else [
                f'save = {{ dir = {_toml(save)}, max_size = "50MB", good_sample = 0.0 }}'
                "  # rejects only"
            ]
        ),
    ]


@dataclass(frozen=True, slots=True)
class PlantMachine:
    """One machine of a running simulated plant, as a config needs it."""

    name: str
    kind: str  # press, mill or loom
    host: str
    port: int
    unit_id: int = 1
    protocol: str = "modbus"  # or "s7", "mc": port is then its S7 CPU's or its MC port


def _mc_sources(machines: list[PlantMachine], poll_interval: str) -> list[str]:
    out = [
        "",
        "# MC protocol (MELSEC): addresses are devices as GX Works writes them (D100, M10, X1F,",
        "# D16.0 for bit 0 of D16); 32/64-bit values are low word first (order CDAB) unless",
        "# order says otherwise. See connectors/mc/README.md.",
    ]
    for machine in machines:
        out += [
            "",
            "[[sources]]",
            f'name = "{machine.name}-plc"',
            'type = "mc"',
            f"host = {_toml(machine.host)}",
            f"port = {machine.port}  # the PLC's open MC port (GX Works3: Ethernet settings)",
            'series = "q"  # fx5 | q | iqr: how X/Y are numbered and which device fields',
            'code = "binary"  # binary | ascii, as the port is set up',
            'frame = "3e"  # 3e | 4e',
            'timeout = "1s"  # per request',
            f'machine = "{machine.name}"',
            f"poll_interval = {_toml(poll_interval)}",
            "tags = [",
            *(_mc_tag_line(tag) for tag in load_profile(machine.kind).tags),
            "]",
        ]
    return out


def _toml(value: str | float | int) -> str:
    # JSON strings are valid TOML basic strings; floats keep their repr (0.1, 1e-05).
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _tag_line(
    tag: ProfileTag, address: str | None = None, order: str = "ABCD", *, words_only: bool = False
) -> str:
    """A profile tag as one inline TOML table. For a protocol other than Modbus: its `address`,
    and the `order` its source assumes (written only when the tag's differs; with `words_only`,
    only for values of more than one word, as MC orders words, never bytes)."""
    fields: list[tuple[str, str | float | int]] = [
        ("name", tag.name),
        ("address", tag.address if address is None else address),
        ("type", tag.type),
    ]
    one_word = tag.type in ("bool", "int16", "uint16", "string")
    if tag.order != order and not (words_only and one_word):
        fields.append(("order", tag.order))
    if tag.scale != 1.0:
        fields.append(("scale", tag.scale))
    if tag.offset != 0.0:
        fields.append(("offset", tag.offset))
    if tag.unit:
        fields.append(("unit", tag.unit))
    if tag.type == "string":
        fields.append(("length", tag.length))
    if tag.description:
        fields.append(("description", tag.description))
    return "  { " + ", ".join(f"{k} = {_toml(v)}" for k, v in fields) + " },"


def _s7_tag_line(tag: S7Tag) -> str:
    p = tag.profile_tag
    fields: list[tuple[str, str | float | int]] = [("name", tag.name), ("address", tag.address)]
    if p.scale != 1.0 and tag.type != "BOOL":
        fields.append(("scale", p.scale))
    if p.offset != 0.0 and tag.type != "BOOL":
        fields.append(("offset", p.offset))
    if p.unit:
        fields.append(("unit", p.unit))
    if p.description:
        fields.append(("description", p.description))
    return "  { " + ", ".join(f"{k} = {_toml(v)}" for k, v in fields) + " },"


def _s7_source(machine: PlantMachine, poll_interval: str) -> list[str]:
    mapped = s7_map(load_profile(machine.kind))
    skipped = (
        [f"# not served over S7 (no S7-300 type): {', '.join(mapped.skipped)}"]
        if mapped.skipped
        else []
    )
    return [
        "",
        "[[sources]]",
        f'name = "{machine.name}-plc"',
        'type = "s7"',
        f"host = {_toml(machine.host)}",
        f"port = {machine.port}  # 102 on a real CPU",
        "rack = 0  # S7-1200/1500: rack 0 slot 1; S7-300: rack 0 slot 2",
        "slot = 1",
        'timeout = "1s"  # connect, and per request',
        f'machine = "{machine.name}"  # which [[machines]] entry these tags belong to',
        f"poll_interval = {_toml(poll_interval)}",
        *skipped,
        "tags = [",
        *(_s7_tag_line(tag) for tag in mapped.tags),
        "]",
    ]


def mc_address(tag: ProfileTag) -> str:
    """The simulator's MC device for a profile tag: D holding, W input registers (numbered in
    hex), M coils, X discrete inputs (hex on a Q CPU); one number per Modbus address."""
    table = tag.table.value
    if table == "hr":
        return f"D{tag.index}" + ("" if tag.bit is None else f".{tag.bit}")
    if table == "ir":
        return f"W{tag.index:X}" + ("" if tag.bit is None else f".{tag.bit}")
    return f"M{tag.index}" if table == "co" else f"X{tag.index:X}"


def _mc_tag_line(tag: ProfileTag) -> str:
    return _tag_line(tag, mc_address(tag), order="CDAB", words_only=True)  # low word first


class PlantEndpoint(Protocol):
    """What `firmware_sim.plant.Endpoint` offers (kept structural: no import of the sim)."""

    @property
    def machine(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def modbus_tcp(self) -> str: ...
    @property
    def unit_id(self) -> int: ...


def plant_machines(endpoints: Iterable[PlantEndpoint]) -> list[PlantMachine]:
    """The machines of a running simulated plant, from its endpoints (`host:port`, unit id)."""
    machines = []
    for e in endpoints:
        host, _, port = e.modbus_tcp.rpartition(":")
        machines.append(PlantMachine(e.machine, e.kind, host, int(port), e.unit_id))
    return machines


def starter_config(profile: str, protocol: str = "modbus") -> str:
    """An annotated lineside.toml for one kind of line, as `lineside sim --plant` serves it,
    read over Modbus TCP, S7 or the MC protocol."""
    if profile not in _LINES:
        raise KeyError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    line = _LINES[profile]
    first = {"s7": FIRST_S7_PORT, "mc": FIRST_MC_PORT}.get(protocol, FIRST_PORT)
    machines = [
        PlantMachine(f"{line.kind}{n + 1}", line.kind, "127.0.0.1", first + n, protocol=protocol)
        for n in range(line.count)
    ]
    serve = f"lineside sim --plant {profile}" + (" --s7" if protocol == "s7" else "")
    over = {"s7": " over S7", "mc": " over the MC protocol (3E binary)"}.get(protocol, "")
    header = [
        f"# lineside starter config: {line.what}.",
        f"# Try it against the simulator: `{serve}` serves these machines{over}",
        f"# on 127.0.0.1, ports {first}..{first + line.count - 1}. Check edits with",
        "# `lineside validate <this file>`. Every key is described in docs/configuration.md.",
    ]
    return render_config(header, f"{line.site}-{line.area}-edge-1", line.site, machines)


def plant_config(
    machines: list[PlantMachine],
    *,
    site: str = "demo",
    agent_id: str = "demo-edge-1",
    data_dir: str = "data",
    report: str = "changes",
    poll_interval: str = "1s",
    camera_model: str | None = None,
    camera_poll: str = "100ms",
    camera_save: str | None = None,
) -> str:
    """A config for machines of a running simulated plant (the demo, tests, benchmarks).

    With `camera_model` (an ONNX file), the first press gets a simulated camera inspection
    whose verdicts are its OEE quality; its PLC is polled every `camera_poll` so that each
    stroke's part_present edge is seen (it is high for half a stroke); with `camera_save` (a
    folder) the images of its rejects are kept there, for the status page's thumbnails.
    """
    header = ["# lineside config for a simulated plant, written by lineside itself."]
    return render_config(
        header,
        agent_id,
        site,
        machines,
        data_dir=data_dir,
        report=report,
        poll_interval=poll_interval,
        camera_model=camera_model,
        camera_poll=camera_poll,
        camera_save=camera_save,
        calendar=ROUND_THE_CLOCK,
    )


def render_config(
    header: list[str],
    agent_id: str,
    site: str,
    machines: list[PlantMachine],
    *,
    data_dir: str = "data",
    report: str = "changes",
    poll_interval: str = "1s",
    camera_model: str | None = None,
    camera_poll: str = "100ms",
    camera_save: str | None = None,
    calendar: tuple[str, ...] = TWO_SHIFTS,
) -> str:
    presses = [m.name for m in machines if m.kind == "press"]
    camera = presses[0] if camera_model is not None and presses else None
    out = [
        *header,
        "",
        "config_version = 1  # the format of this file; required",
        "",
        "[agent]",
        f"id = {_toml(agent_id)}  # names this agent upstream",
        f"data_dir = {_toml(data_dir)}  # the SQLite store, relative to this file",
        f"report = {_toml(report)}  # changes: store a value when it moved past its deadband",
        "",
        "[plant]",
        f"site = {_toml(site)}  # the ISA-95 site: first level of every tag path and MQTT topic",
        "",
        "# The plant hierarchy: site (above) / area / line / machine. Names go into topics, so",
        "# they use letters, digits, _ and - only.",
    ]
    for machine in machines:
        area, line_name = _PLACE[machine.kind]
        out += [
            "",
            "[[machines]]",
            f'name = "{machine.name}"',
            f'area = "{area}"',
            f'line = "{line_name}"',
            f'kind = "{machine.kind}"',
            f"description = {_toml(load_profile(machine.kind).description)}",
            *_kpi_section(
                machine.kind,
                machine.protocol,
                f"{camera}-surface" if machine.name == camera else None,
            ),
        ]
    out += [
        "",
        '# One source per PLC. Durations need a unit: "250ms", "1s", "5m".',
        "# Addresses: 0-based table form (hr:12, ir:0, co:3, di:1, hr:9.0 for bit 0) or the",
        "# 1-based datasheet form (40013 is hr:12). Types: bool, int16, uint16, int32, uint32,",
        "# int64, uint64, float32, float64, string (with length). order: word order of 32/64-bit",
        "# values (ABCD, CDAB, BADC, DCBA). value = raw * scale + offset.",
    ]
    if any(m.protocol == "s7" for m in machines):
        out += [
            "# S7 addresses as TIA Portal shows them: DB1.DBD4 (a double word), DB1.DBW10:INT,",
            "# DB1.DBX33.0 (a bit), DB1.DBB8:LREAL; MW10, M0.1, IW64 outside DBs. The type after",
            "# the colon: BOOL, BYTE, WORD, DWORD, INT, DINT, UINT, UDINT, REAL, LREAL, STRING[n],",
            "# CHAR, DATE_AND_TIME, DTL (connectors/s7/README.md). value = raw * scale + offset.",
        ]
    mc = [m for m in machines if m.protocol == "mc"]
    if mc:
        out += _mc_sources(mc, poll_interval)
    for machine in machines:
        if machine.protocol == "mc":
            continue
        name = machine.name
        if machine.protocol == "s7":
            out += _s7_source(machine, camera_poll if name == camera else poll_interval)
            continue
        out += [
            "",
            "[[sources]]",
            f'name = "{name}-plc"',
            'type = "modbus_tcp"',
            f"host = {_toml(machine.host)}",
            f"port = {machine.port}",
            'timeout = "1s"  # per request',
            "retries = 1  # re-sends after a busy (06) answer; a silent unit is isolated instead",
            "",
            "[[sources.units]]",
            f"unit_id = {machine.unit_id}  # the Modbus unit id (slave address) of this PLC",
            f'machine = "{name}"  # which [[machines]] entry these tags belong to',
            f"poll_interval = {_toml(camera_poll if name == camera else poll_interval)}",
            "tags = [",
            *(_tag_line(tag) for tag in load_profile(machine.kind).tags),
            "]",
        ]
    out += [
        "",
        *calendar,
        "# Forward readings and KPIs to an MQTT broker (Unified Namespace topics):",
        "# [[sinks]]",
        '# name = "uns"',
        '# type = "mqtt"',
        '# host = "127.0.0.1"',
        "# port = 1883",
        '# topic_prefix = "lineside"',
    ]
    if camera is not None and camera_model is not None:
        out += _camera(camera, camera_model, camera_save)
    out.append("")
    return "\n".join(out)

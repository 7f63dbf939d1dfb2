"""`lineside sim --watch`: start a plant and read every machine over Modbus TCP, live.

This is a client of the plant written independently of it: pymodbus reads each machine's
register tables and the values are decoded from the profile with `struct`, so what the table
shows is what any Modbus client would see on the wire. The tests use the same decoder as their
independent check of the servers. (`make demo` shows the agent's own acquisition instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import struct
import time
from collections.abc import Mapping

from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table as RichTable
from rich.text import Text

from firmware_sim.clock import ScaledClock
from firmware_sim.image import Table
from firmware_sim.plant import Plant, PlantSpec
from firmware_sim.profile import Profile, ProfileTag
from firmware_sim.runner import endpoints_table

Value = float | int | bool | str

_STRUCT = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}


def reorder(raw: bytes, order: str) -> bytes:
    """Bring register bytes in `order` back to big-endian (ABCD...) order."""
    if order == "ABCD":
        return raw
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order == "CDAB":  # word order reversed
        return b"".join(reversed(words))
    if order == "BADC":  # bytes swapped inside each word
        return b"".join(w[::-1] for w in words)
    if order == "DCBA":  # fully little-endian
        return raw[::-1]
    raise ValueError(f"unknown order {order!r}")


def decode_tag(tag: ProfileTag, tables: Mapping[Table, bytes]) -> Value:
    """One tag's engineering value from the raw tables read off the wire.

    Register tables are big-endian bytes from address 0; bit tables one byte (0/1) per address.
    """
    data = tables[tag.table]
    if tag.table.is_bits:
        return bool(data[tag.index])
    raw = data[tag.index * 2 : (tag.index + tag.width) * 2]
    if tag.bit is not None:
        return bool((int.from_bytes(raw, "big") >> tag.bit) & 1)
    if tag.type == "bool":
        return int.from_bytes(raw, "big") != 0
    if tag.type == "string":
        return raw[: tag.length].rstrip(b"\0").decode("latin-1")
    (number,) = struct.unpack(_STRUCT[tag.type], reorder(raw, tag.order))
    if tag.scale == 1.0 and tag.offset == 0.0:
        return number  # type: ignore[no-any-return]
    return float(number) * tag.scale + tag.offset


def table_spans(profile: Profile) -> dict[Table, int]:
    """How many addresses of each table the profile uses, counted from address 0."""
    spans: dict[Table, int] = {}
    for tag in profile.tags:
        spans[tag.table] = max(spans.get(tag.table, 0), tag.index + tag.width)
    return spans


def format_value(value: Value, unit: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:,.2f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = value
    return f"{text} {unit}".rstrip()


def machine_table(name: str, profile: Profile, values: Mapping[str, Value] | str) -> RichTable:
    """A small table of one machine's tags; `values` is an error text when the read failed."""
    table = RichTable(title=f"{name} ({profile.kind})", title_justify="left", min_width=34)
    table.add_column("tag")
    table.add_column("value", justify="right")
    if isinstance(values, str):
        table.add_row(Text("unreachable", style="red"), Text(values, style="red"))
        return table
    for tag in profile.tags:
        table.add_row(tag.name, format_value(values[tag.name], tag.unit))
    return table


async def read_machine(client: object, profile: Profile, unit_id: int) -> dict[str, Value]:
    """Read every table the profile uses in one request each, then decode every tag."""
    tables: dict[Table, bytes] = {}
    for table, count in table_spans(profile).items():
        if table is Table.HOLDING_REGISTERS:
            rr = await client.read_holding_registers(0, count=count, device_id=unit_id)  # type: ignore[attr-defined]
        elif table is Table.INPUT_REGISTERS:
            rr = await client.read_input_registers(0, count=count, device_id=unit_id)  # type: ignore[attr-defined]
        elif table is Table.COILS:
            rr = await client.read_coils(0, count=count, device_id=unit_id)  # type: ignore[attr-defined]
        else:
            rr = await client.read_discrete_inputs(0, count=count, device_id=unit_id)  # type: ignore[attr-defined]
        if rr.isError():
            raise RuntimeError(f"{table}: {rr}")
        if table.is_bits:
            tables[table] = bytes(int(b) for b in rr.bits[:count])
        else:
            tables[table] = b"".join(r.to_bytes(2, "big") for r in rr.registers)
    return {tag.name: decode_tag(tag, tables) for tag in profile.tags}


def _view(plant: Plant, readings: Mapping[str, Mapping[str, Value] | str]) -> Group:
    header = Text.assemble(
        (f"plant {plant.spec.name}", "bold"),
        f"  simulated time {plant.clock.now() / 3600:.2f} h; ",
        "values read over Modbus TCP; Ctrl-C stops",
    )
    panels = [
        machine_table(name, plant.machines[name].profile, readings.get(name, "not read yet"))
        for name in plant.machines
    ]
    return Group(header, endpoints_table(plant), Columns(panels))


def watch_plant(
    spec: PlantSpec,
    *,
    speed: float = 1.0,
    host: str = "127.0.0.1",
    duration: float | None = None,
    console: Console | None = None,
) -> None:
    """Start the plant and show every machine's values, read over Modbus TCP, until stopped."""
    from pymodbus.client import AsyncModbusTcpClient

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the table shows failures
    console = console or Console()

    async def main() -> None:
        async with Plant(spec, ScaledClock(speed), host=host, opcua=False, rtu=False) as plant:
            clients = {}
            for e in plant.endpoints():
                address, _, port = e.modbus_tcp.rpartition(":")
                clients[e.machine] = (AsyncModbusTcpClient(address, port=int(port), timeout=1), e)
            readings: dict[str, Mapping[str, Value] | str] = {}
            stop_at = None if duration is None else time.monotonic() + duration
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            try:
                with Live(_view(plant, readings), console=console, refresh_per_second=4) as live:
                    while not stop.is_set():
                        for name, (client, e) in clients.items():
                            try:
                                if not client.connected:
                                    await client.connect()
                                profile = plant.machines[name].profile
                                readings[name] = await read_machine(client, profile, e.unit_id)
                            except Exception as exc:  # shown in the table, never fatal
                                readings[name] = str(exc) or type(exc).__name__
                        live.update(_view(plant, readings))
                        if stop_at is not None and time.monotonic() >= stop_at:
                            break
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 0.5)
            finally:
                for client, _ in clients.values():
                    client.close()

    # Plain asyncio: pymodbus's client asserts asyncio's own transport class, which uvloop's
    # transports are not.
    asyncio.run(main())

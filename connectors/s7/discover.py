"""`lineside discover s7`: what an S7 CPU says about itself, and a starter tags file.

Asked through python-snap7's asyncio client (`snap7.async_client.AsyncClient`):
- identity from the SZL: the order number and firmware version (SZL 0x0011), the module
  name, its type, the plant designation (AS name) and the serial number (SZL 0x001C);
- where the CPU lists them (an S7-300/400, not an S7-1200/1500 over PUT/GET), its data blocks
  and their sizes (the block list, then each DB's block info).

A CPU that does not answer one of these questions is not an error: the answer is left out and
a note says why. The starter tags file has a WORD row for every 2 bytes of each listed DB
(`db10_w4`, `DB10.DBW4`), up to a row limit: the types are the engineer's to correct from the
PLC project, the addresses are known to exist.
"""

from __future__ import annotations

import asyncio
import csv
from dataclasses import dataclass, field
from pathlib import Path

from snap7.async_client import AsyncClient
from snap7.error import S7ConnectionError, S7Error, S7TimeoutError
from snap7.type import Block

from agent.duration import format_duration
from agent.errors import ConnectError
from connectors.s7.link import connect_failure

MAX_BLOCKS = 4096
MAX_ROWS = 2000


@dataclass
class Discovery:
    endpoint: str
    pdu_size: int = 0
    order_code: str | None = None
    firmware: str | None = None
    module_name: str | None = None
    module_type: str | None = None
    as_name: str | None = None
    serial: str | None = None
    data_blocks: list[tuple[int, int]] | None = None  # (number, bytes); None: not listed
    notes: list[str] = field(default_factory=list)


def parse_target(target: str) -> tuple[str, int]:
    """HOST or HOST:PORT (port 102 if not given)."""
    host, sep, port_text = target.rpartition(":")
    if not sep:
        return target, 102
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535 or not host:
        raise ValueError(f"expected HOST or HOST:PORT, got {target!r}")
    return host, int(port_text)


def _text(raw: object) -> str:
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).split(b"\0", 1)[0].decode("latin-1").strip()
    return str(raw).strip()


async def discover(host: str, port: int, rack: int, slot: int, limit: float) -> Discovery:
    """Ask the CPU at host:port (rack/slot) who it is and which DBs it has."""
    found = Discovery(f"{host}:{port} rack {rack} slot {slot}")
    client = AsyncClient()
    try:
        async with asyncio.timeout(limit):
            await client.connect(host, rack, slot, port)
    except (TimeoutError, S7TimeoutError):
        raise ConnectError(f"{host}:{port}: no answer within {format_duration(limit)}") from None
    except S7ConnectionError as exc:
        rack_slot = f"rack {rack} slot {slot}"
        raise ConnectError(connect_failure(f"{host}:{port}", exc, rack_slot)) from None
    except S7Error as exc:
        raise ConnectError(
            f"{host}:{port}: cannot connect to rack {rack} slot {slot}: {exc}"
        ) from None
    try:
        found.pdu_size = client.get_pdu_length()
        await _identity(client, found, limit)
        await _blocks(client, found, limit)
    finally:
        await client.disconnect()
    return found


async def _identity(client: AsyncClient, found: Discovery, limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            order = await client.get_order_code()
        found.order_code = _text(order.OrderCode)
        found.firmware = f"V{order.V1}.{order.V2}.{order.V3}"
    except (TimeoutError, S7Error, RuntimeError) as exc:
        found.notes.append(f"no order number (SZL 0x0011): {exc or 'timeout'}")
    try:
        async with asyncio.timeout(limit):
            info = await client.get_cpu_info()
        found.module_name = _text(info.ModuleName)
        found.module_type = _text(info.ModuleTypeName)
        found.as_name = _text(info.ASName)
        found.serial = _text(info.SerialNumber)
    except (TimeoutError, S7Error, RuntimeError) as exc:
        found.notes.append(f"no module identification (SZL 0x001C): {exc or 'timeout'}")


async def _blocks(client: AsyncClient, found: Discovery, limit: float) -> None:
    try:
        async with asyncio.timeout(limit):
            numbers = await client.list_blocks_of_type(Block.DB, MAX_BLOCKS)
    except (TimeoutError, S7ConnectionError, S7TimeoutError):
        raise
    except (S7Error, RuntimeError) as exc:
        found.notes.append(
            f"the CPU does not list its data blocks ({exc}); an S7-1200/1500 never does over "
            "PUT/GET: take the DB numbers and offsets from the TIA Portal project"
        )
        return
    blocks = []
    for number in sorted(numbers):
        try:
            async with asyncio.timeout(limit):
                info = await client.get_block_info(Block.DB, number)
            blocks.append((number, int(info.MC7Size)))
        except (S7Error, RuntimeError) as exc:
            found.notes.append(f"DB{number}: no block info ({exc})")
    found.data_blocks = blocks


def tag_rows(found: Discovery, max_rows: int = MAX_ROWS) -> tuple[list[tuple[str, str]], int]:
    """(name, address) rows covering the listed DBs word by word; rows left out past the limit."""
    rows: list[tuple[str, str]] = []
    left_out = 0
    for number, size in found.data_blocks or []:
        for offset in range(0, size, 2):
            if len(rows) >= max_rows:
                left_out += 1
                continue
            letter = "W" if offset + 2 <= size else "B"
            rows.append((f"db{number}_{letter.lower()}{offset}", f"DB{number}.DB{letter}{offset}"))
    return rows, left_out


def write_tags_file(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["name", "address", "description"])
        for name, address in rows:
            out.writerow([name, address, "found by lineside discover s7: check the type"])

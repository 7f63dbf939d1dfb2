"""`lineside discover mc HOST[:PORT]`: what a MELSEC PLC's MC port offers.

Over a binary 3E connection (what every MC port speaks unless set to ASCII):

1. the CPU's model name and code (command 0101), where the CPU answers it;
2. for each device, whether it reads at all and, by bisection with one-word reads, its last
   readable number up to `max_number` (an end code past the end: C056 / 4031): about 17
   requests a device;
3. the words of D, W and R up to `max_number` that hold something other than 0, read in
   batches of 960, as a starter tags file (`D100`, int16; edit names and types).

Reads only; one request at a time, each with its own deadline.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.errors import DeviceError, RequestTimeout
from connectors.mc.client import McClient
from connectors.mc.frame import (
    CPU_MODEL_BYTES,
    DEVICES,
    MAX_BATCH_WORDS,
    Framing,
    Point,
    Series,
    end_code_reason,
    parse_cpu_model,
)

MAX_ROWS = 500  # tags written at most: a starter list, not a memory dump
SCANNED = ("D", "W", "R")  # word devices whose values make the starter list
PORT = 5007

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class DeviceRange:
    device: str
    last: int | None  # last readable number (a bit device: the first point of its last word)
    why: str = ""  # why it does not read, when it does not

    def span(self) -> str:
        """ "D0-D1023", "X0-X3F0" (in the device's notation on a Q CPU), or why not."""
        if self.last is None:
            return f"no: {self.why}"
        hex_ = DEVICES[self.device].hex_numbered
        return (
            f"{self.device}0-{self.device}{self.last:X}"
            if hex_
            else (f"{self.device}0-{self.device}{self.last}")
        )


@dataclass(frozen=True, slots=True)
class McDiscovery:
    target: str
    model: str  # "" if the CPU did not say
    model_code: int | None
    devices: tuple[DeviceRange, ...]
    rows: tuple[dict[str, str], ...]
    left_out: int
    requests: int


def parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise ValueError(f"bad target {text!r}: write HOST or HOST:PORT")
    return host, int(port)


class _Asker:
    def __init__(self, client: McClient, time_limit: float) -> None:
        self.client = client
        self.time_limit = time_limit
        self.requests = 0

    async def ask(self, request: bytes, data_bytes: int, what: str) -> bytes:
        self.requests += 1
        [future] = self.client.send([(request, data_bytes, what, None)])
        timer = asyncio.get_running_loop().call_later(
            self.time_limit, self.client.expire, [future], self.time_limit
        )
        try:
            return await future
        finally:
            timer.cancel()

    async def readable(self, framing: Framing, device: str, number: int) -> bool:
        try:
            await self.ask(framing.batch_read(Point(device, number), 1), 2, f"{device}{number}")
        except DeviceError:
            return False
        return True


async def discover(
    host: str,
    port: int,
    *,
    max_number: int = 9999,
    time_limit: float = 1.0,
    progress: Progress | None = None,
) -> McDiscovery:
    """Probe the PLC; ConnectError if it cannot be reached, RequestTimeout if it is silent."""
    framing = Framing(series=Series.Q)
    client = McClient(host, port, framing, connect_timeout=time_limit)
    await client.connect()
    asker = _Asker(client, time_limit)
    tell = progress or (lambda what, done, total: None)
    try:
        model, code = "", None
        try:
            data = await asker.ask(framing.cpu_model(), CPU_MODEL_BYTES, "CPU model")
            model, code = parse_cpu_model(data)
        except DeviceError:
            pass  # older Ethernet modules do not answer 0101
        ranges = []
        for k, device in enumerate(DEVICES):
            tell(f"device {device}", k, len(DEVICES))
            ranges.append(await _range(asker, framing, device, max_number))
        rows, left_out = await _rows(asker, framing, ranges, tell)
    finally:
        client.close()
    return McDiscovery(f"{host}:{port}", model, code, tuple(ranges), rows, left_out, asker.requests)


async def _range(asker: _Asker, framing: Framing, device: str, max_number: int) -> DeviceRange:
    step = 16 if DEVICES[device].bits else 1
    try:
        await asker.ask(framing.batch_read(Point(device, 0), 1), 2, f"{device}0")
    except DeviceError as exc:
        return DeviceRange(device, None, end_code_reason(exc.code or 0))
    low, high = 0, max(0, max_number - step + 1) // step  # in words; low reads
    if await asker.readable(framing, device, high * step):
        return DeviceRange(device, high * step)
    while high - low > 1:
        middle = (low + high) // 2
        if await asker.readable(framing, device, middle * step):
            low = middle
        else:
            high = middle
    return DeviceRange(device, low * step)


async def _rows(
    asker: _Asker, framing: Framing, ranges: Sequence[DeviceRange], tell: Progress
) -> tuple[tuple[dict[str, str], ...], int]:
    rows: list[dict[str, str]] = []
    found = 0
    for r in ranges:
        if r.device not in SCANNED or r.last is None:
            continue
        for start in range(0, r.last + 1, MAX_BATCH_WORDS):
            tell(f"reading {r.device}", start, r.last + 1)
            count = min(MAX_BATCH_WORDS, r.last + 1 - start)
            try:
                data = await asker.ask(
                    framing.batch_read(Point(r.device, start), count), 2 * count, r.device
                )
            except (DeviceError, RequestTimeout):
                break
            words = np.frombuffer(data, "<i2")
            for i in np.flatnonzero(words).tolist():
                found += 1
                if len(rows) < MAX_ROWS:
                    number = start + i
                    text = f"{number:X}" if DEVICES[r.device].hex_numbered else str(number)
                    rows.append(
                        {
                            "name": f"{r.device.lower()}{text.lower()}",
                            "address": f"{r.device}{text}",
                            "type": "int16",
                            "description": f"read {int(words[i])} at discovery",
                        }
                    )
    return tuple(rows), found - len(rows)


def write_tags(path: Path, rows: Sequence[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["name", "address", "type", "description"])
        writer.writeheader()
        writer.writerows(rows)

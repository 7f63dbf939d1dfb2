"""`discover mc` against the MC simulator: the CPU model, device ranges, a starter tag list."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from agent.errors import ConnectError
from connectors.mc import discover as found
from firmware_sim.image import RegisterImage
from firmware_sim.mc_server import CPU_MODEL_NAME, McServer
from firmware_sim.modbus_pdu import Unit


async def test_discover_finds_the_model_the_ranges_and_the_words_in_use(tmp_path: Path) -> None:
    image = RegisterImage(size=512)
    image.holding[200:202] = (1234).to_bytes(2, "big")  # D100
    image.input[62:64] = (7).to_bytes(2, "big")  # W1F
    server = McServer(Unit(image=image))
    port = await server.start()
    try:
        result = await found.discover("127.0.0.1", port, max_number=4000, time_limit=2.0)
    finally:
        await server.stop()
    assert result.model == CPU_MODEL_NAME
    ranges = {d.device: d for d in result.devices}
    assert ranges["D"].span() == "D0-D511"
    assert ranges["M"].last == 512 - 16  # a bit device's last word starts 16 points before
    assert ranges["X"].span() == "X0-X1F0"
    assert [(r["address"], r["description"]) for r in result.rows] == [
        ("D100", "read 1234 at discovery"),
        ("W1F", "read 7 at discovery"),
    ]
    out = tmp_path / "tags.csv"
    found.write_tags(out, result.rows)
    assert next(csv.DictReader(out.open()))["address"] == "D100"


async def test_discover_says_when_nothing_listens() -> None:
    server = McServer(Unit(image=RegisterImage()))
    port = await server.start()
    await server.stop()
    with pytest.raises(ConnectError, match="MC port"):
        await found.discover("127.0.0.1", port, time_limit=1.0)


def test_targets() -> None:
    assert found.parse_target("10.0.0.5") == ("10.0.0.5", 5007)
    assert found.parse_target("10.0.0.5:1025") == ("10.0.0.5", 1025)
    with pytest.raises(ValueError):
        found.parse_target("10.0.0.5:x")

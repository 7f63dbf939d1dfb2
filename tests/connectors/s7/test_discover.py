"""`lineside discover s7` against python-snap7's server: identity, data blocks, a tags file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from connectors.s7.discover import Discovery, discover, parse_target, tag_rows
from firmware_sim.faults import Faults
from firmware_sim.s7_server import SimS7Server

from .conftest import HEAD

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cpu() -> Iterator[int]:
    server = SimS7Server({1: bytearray(34), 7: bytearray(5)}, Faults())
    port = server.start_on("127.0.0.1", 0)
    yield port
    server.stop()


async def test_identity_and_data_blocks(cpu: int) -> None:
    found = await discover("127.0.0.1", cpu, 0, 1, 3.0)
    # python-snap7's server presents itself as a CPU 315-2 PN/DP
    assert found.order_code == "6ES7 315-2EH14-0AB0"
    assert found.firmware == "V3.3.0"
    assert found.module_name == "CPU 315-2 PN/DP"
    assert found.pdu_size == 480
    assert found.data_blocks == [(1, 34), (7, 5)]
    assert found.notes == []


def test_tag_rows_cover_each_db_word_by_word_up_to_the_limit() -> None:
    found = Discovery("x", data_blocks=[(1, 4), (7, 5)])
    rows, _ = tag_rows(found)
    assert rows == [
        ("db1_w0", "DB1.DBW0"),
        ("db1_w2", "DB1.DBW2"),
        ("db7_w0", "DB7.DBW0"),
        ("db7_w2", "DB7.DBW2"),
        ("db7_b4", "DB7.DBB4"),
    ]
    assert tag_rows(found, max_rows=3) == (rows[:3], 2)
    assert tag_rows(Discovery("x")) == ([], 0)


def test_targets() -> None:
    assert parse_target("10.0.0.5") == ("10.0.0.5", 102)
    assert parse_target("10.0.0.5:1102") == ("10.0.0.5", 1102)
    with pytest.raises(ValueError, match="expected HOST or HOST:PORT"):
        parse_target("10.0.0.5:x")


async def test_the_command_writes_a_tags_file_that_validates(cpu: int, tmp_path: Path) -> None:
    out = tmp_path / "found.csv"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "discover", "s7", f"127.0.0.1:{cpu}", "--json",
        "-o", str(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    result = json.loads(stdout)
    assert result["data_blocks"] == [{"number": 1, "bytes": 34}, {"number": 7, "bytes": 5}]
    assert result["tags_file"] == {"path": str(out), "rows": 20, "left_out": 0}
    config = tmp_path / "lineside.toml"
    config.write_text(
        HEAD + '[[sources]]\nname = "plc1"\ntype = "s7"\nhost = "127.0.0.1"\n'
        f'port = {cpu}\nmachine = "press1"\ntags_file = "found.csv"\n',
        encoding="utf-8",
    )
    assert len(load_config(config).tags_of("press1")) == 20


async def test_a_refused_connection_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "discover", "s7", f"127.0.0.1:{port}",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await proc.communicate()
    assert proc.returncode == 2
    assert "Traceback" not in stderr.decode()
    assert "refused the connection" in stderr.decode()

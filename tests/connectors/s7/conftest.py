"""Shared pieces of the S7 tests: a python-snap7 server on port 0 and configs pointing at it."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from snap7.server import Server
from snap7.type import SrvArea

from agent.config import Config, load_config
from agent.tags import TagTable
from connectors.s7.config import S7SourceConfig
from connectors.s7.source import S7Source

HEAD = (
    'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
    '[[machines]]\nname = "press1"\narea = "stamping"\nline = "line-1"\n'
)


def db1_image() -> bytearray:
    """DB1 of the plain snap7 server: 100 bytes with known values."""
    db = bytearray(100)
    struct.pack_into(">f", db, 0, 21.5)
    struct.pack_into(">h", db, 4, -7)
    db[6] = 0b0000_1001
    struct.pack_into(">i", db, 8, 123456)
    struct.pack_into(">d", db, 16, 2.75)
    struct.pack_into(">H", db, 96, 4242)
    return db


@pytest.fixture
def snap7_server() -> Iterator[tuple[Server, int]]:
    """python-snap7's own server with DB1 and the markers: S7 as nobody here wrote it."""
    server = Server(log=False)
    server.register_area(SrvArea.DB, 1, db1_image())
    markers = bytearray(64)
    struct.pack_into(">H", markers, 10, 999)
    markers[0] = 0b10
    server.register_area(SrvArea.MK, 0, markers)
    server.start_to("127.0.0.1", 0)
    assert server.server_socket is not None
    port = server.server_socket.getsockname()[1]
    yield server, port
    server.stop()


def s7_config(tmp_path: Path, port: int, tags: dict[str, str], **settings: str) -> Config:
    """A config with one S7 source on 127.0.0.1:`port` reading `tags` (name -> address)."""
    extra = "".join(f"{k} = {v}\n" for k, v in settings.items())
    rows = "".join(f'  {{ name = "{n}", address = "{a}" }},\n' for n, a in tags.items())
    text = (
        HEAD
        + '[[sources]]\nname = "plc1"\ntype = "s7"\nhost = "127.0.0.1"\n'
        + f'port = {port}\nmachine = "press1"\ntimeout = "1s"\n{extra}tags = [\n{rows}]\n'
    )
    path = tmp_path / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def s7_source(config: Config) -> S7Source:
    source_config = config.sources[0]
    assert isinstance(source_config, S7SourceConfig)
    return S7Source(source_config, TagTable.from_config(config))

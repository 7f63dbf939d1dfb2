"""S7 addresses as engineers type them: table-driven, with the exact message of each error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from connectors.s7.address import Area, parse_address
from connectors.s7.config import S7SourceConfig

GOOD = [
    # (text, area, db, start, type, bit, size)
    ("DB1.DBD0:REAL", Area.DB, 1, 0, "REAL", None, 4),
    ("DB1.DBW4:INT", Area.DB, 1, 4, "INT", None, 2),
    ("DB1.DBX2.3", Area.DB, 1, 2, "BOOL", 3, 1),
    ("DB10.DBB8:BYTE", Area.DB, 10, 8, "BYTE", None, 1),
    ("DB1.DBD12:DINT", Area.DB, 1, 12, "DINT", None, 4),
    ("db1.dbd12", Area.DB, 1, 12, "DWORD", None, 4),
    ("DB1.DBW6", Area.DB, 1, 6, "WORD", None, 2),
    ("DB1.DBW6:UINT", Area.DB, 1, 6, "UINT", None, 2),
    ("DB1.DBD6:UDINT", Area.DB, 1, 6, "UDINT", None, 4),
    ("DB1.DBB20:LREAL", Area.DB, 1, 20, "LREAL", None, 8),
    ("DB1.DBB30:STRING[16]", Area.DB, 1, 30, "STRING", None, 18),
    ("DB1.DBB30:STRING", Area.DB, 1, 30, "STRING", None, 256),
    ("DB1.DBB1:CHAR", Area.DB, 1, 1, "CHAR", None, 1),
    ("DB1.DBB40:DT", Area.DB, 1, 40, "DATE_AND_TIME", None, 8),
    ("DB1.DBB40:DATE_AND_TIME", Area.DB, 1, 40, "DATE_AND_TIME", None, 8),
    ("DB1.DBB48:DTL", Area.DB, 1, 48, "DTL", None, 12),
    ("MW10", Area.MARKERS, 0, 10, "WORD", None, 2),
    ("MD20:REAL", Area.MARKERS, 0, 20, "REAL", None, 4),
    ("M0.1", Area.MARKERS, 0, 0, "BOOL", 1, 1),
    ("I0.0", Area.INPUTS, 0, 0, "BOOL", 0, 1),
    ("E0.0", Area.INPUTS, 0, 0, "BOOL", 0, 1),
    ("Q1.2", Area.OUTPUTS, 0, 1, "BOOL", 2, 1),
    ("A1.2", Area.OUTPUTS, 0, 1, "BOOL", 2, 1),
    ("IW64", Area.INPUTS, 0, 64, "WORD", None, 2),
    ("EW64:INT", Area.INPUTS, 0, 64, "INT", None, 2),
    ("QB3", Area.OUTPUTS, 0, 3, "BYTE", None, 1),
    ("T5", Area.TIMERS, 0, 5, "TIMER", None, 2),
    ("C3", Area.COUNTERS, 0, 3, "COUNTER", None, 2),
    ("Z3", Area.COUNTERS, 0, 3, "COUNTER", None, 2),
    (" db 1.dbx 2.3 ", Area.DB, 1, 2, "BOOL", 3, 1),
]


@pytest.mark.parametrize(("text", "area", "db", "start", "kind", "bit", "size"), GOOD)
def test_engineers_forms_parse(
    text: str, area: Area, db: int, start: int, kind: str, bit: int | None, size: int
) -> None:
    address = parse_address(text)
    assert (address.area, address.db, address.start, address.type, address.bit) == (
        area,
        db,
        start,
        kind,
        bit,
    )
    assert address.size == size


BAD = [
    (
        "M0",
        "address M0 is ambiguous: write M0.0 for a bit, MB0 for a byte, MW0 for a word or MD0 "
        "for a double word",
    ),
    (
        "DB1.DBW4:REAL",
        "address DB1.DBW4:REAL: a REAL is 4 bytes but W reads 2; use D (double word) or "
        "another type",
    ),
    (
        "DB1.DBD0:INT",
        "address DB1.DBD0:INT: an INT is 2 bytes but D reads 4; use W (word) or another type",
    ),
    ("DB1.DBX2", "address DB1.DBX2: a bit address needs its bit, like DB1.DBX2.0"),
    ("DB1.DBX2.8", "address DB1.DBX2.8: bit 8 is out of range 0..7"),
    ("DB1.DBX2.3:INT", "address DB1.DBX2.3:INT is a single bit: use BOOL, not INT"),
    (
        "DB1.DBW2.3",
        "address DB1.DBW2.3: a bit number goes with X (DBX) or a bare area (M0.1), not with W",
    ),
    (
        "DB1.DBD0:LREAL",
        "address DB1.DBD0:LREAL: an LREAL is 8 bytes; give its first byte and the type, like "
        "DB1.DBB0:LREAL",
    ),
    (
        "MD4:DTL",
        "address MD4:DTL: a DTL is 12 bytes; give its first byte and the type, like MB4:DTL",
    ),
    ("DB1.DBB0:BOOL", "address DB1.DBB0:BOOL: a BOOL is one bit: write it like DBX0.0 or M0.0"),
    ("DB0.DBW0", "address DB0.DBW0: DB numbers run 1..65535"),
    ("DB1", "address DB1: name the value inside the DB, like DB1.DBW0 or DB1.DBX0.0"),
    (
        "DB1.DBW0:FLOAT",
        "address DB1.DBW0:FLOAT: unknown type 'FLOAT' (known: BOOL, BYTE, CHAR, SINT, USINT, "
        "WORD, INT, UINT, DWORD, DINT, UDINT, REAL, LREAL, DATE_AND_TIME, DTL, STRING)",
    ),
    (
        "DB1.DBB0:STRING[300]",
        "address DB1.DBB0:STRING[300]: an S7 STRING holds 1..254 characters, not 300",
    ),
    ("DB1.DBB0:INT[2]", "address DB1.DBB0:INT[2]: only STRING takes a [length]"),
    ("T5:INT", "address T5:INT: T5 is a timer; drop the :INT"),
    (
        "X1",
        "bad address 'X1': write an address like "
        '"DB1.DBD0:REAL", "DB1.DBX2.3", "MW10", "M0.1" or "IW64"',
    ),
    (
        "",
        "empty address: write an address like "
        '"DB1.DBD0:REAL", "DB1.DBX2.3", "MW10", "M0.1" or "IW64"',
    ),
    ("MD2097150", "address MD2097150 is out of range: byte offsets run 0..2097151"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[b[0] or "empty" for b in BAD])
def test_invalid_and_ambiguous_addresses_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(text)
    assert str(caught.value) == message


HEAD = (
    'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
    '[[machines]]\nname = "press1"\narea = "stamping"\nline = "line-1"\n'
)
SOURCE = '[[sources]]\nname = "plc1"\ntype = "s7"\nhost = "10.0.0.5"\nmachine = "press1"\n'


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "lineside.toml"
    path.write_text(HEAD + text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p).removeprefix(f"{path}: ") for p in caught.value.problems]


CONFIG_BAD = [
    (
        "ambiguous address",
        SOURCE + '[[sources.tags]]\nname = "a"\naddress = "MW0"\n'
        '[[sources.tags]]\nname = "b"\naddress = "M4"\n',
        "sources[0].tags[1].address: address M4 is ambiguous: write M4.0 for a bit, MB4 for a "
        "byte, MW4 for a word or MD4 for a double word",
    ),
    (
        "type key",
        SOURCE + '[[sources.tags]]\nname = "a"\naddress = "MW0"\ntype = "int16"\n',
        'sources[0].tags[0].type: an S7 tag\'s type is part of its address: write "DB1.DBD0:REAL"',
    ),
    (
        "half of the TSAPs",
        SOURCE + 'local_tsap = "01.00"\n[[sources.tags]]\nname = "a"\naddress = "MW0"\n',
        "sources[0].remote_tsap: give both local_tsap and remote_tsap, or neither",
    ),
    (
        "TSAP and rack",
        SOURCE + 'rack = 0\nlocal_tsap = "01.00"\nremote_tsap = "03.01"\n'
        '[[sources.tags]]\nname = "a"\naddress = "MW0"\n',
        "sources[0].remote_tsap: use either rack and slot or the TSAPs, not both",
    ),
    (
        "bad TSAP",
        SOURCE + 'local_tsap = "1.0.0"\nremote_tsap = "03.01"\n'
        '[[sources.tags]]\nname = "a"\naddress = "MW0"\n',
        'sources[0].local_tsap: expected a TSAP like "03.01" (as TIA Portal shows it) or '
        "0x0301, got '1.0.0'",
    ),
    ("no tags", SOURCE, "sources[0].tags: no tags: add [[sources.tags]] entries or a tags_file"),
    (
        "PDU size",
        SOURCE + 'pdu_size = 512\n[[sources.tags]]\nname = "a"\naddress = "MW0"\n',
        "sources[0].pdu_size: expected 240, 480 or 960, got 512",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CONFIG_BAD], ids=[c[0] for c in CONFIG_BAD]
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in _problems(tmp_path, text)


def test_tags_file_rows_parse_and_tsaps_as_tia_shows_them(tmp_path: Path) -> None:
    (tmp_path / "tags.csv").write_text(
        "name,address,scale,unit\nspeed,DB1.DBD0:REAL,,1/min\ntemp,DB1.DBW4:INT,0.1,°C\nbad,M7,,\n",
        encoding="utf-8",
    )
    problems = _problems(tmp_path, SOURCE + 'tags_file = "tags.csv"\n')
    assert problems == [
        "tags.csv:4: address: address M7 is ambiguous: write M7.0 for a bit, MB7 for a byte, "
        "MW7 for a word or MD7 for a double word"
    ]
    (tmp_path / "tags.csv").write_text("name,address\nspeed,DB1.DBD0:REAL\n", encoding="utf-8")
    path = tmp_path / "lineside.toml"
    path.write_text(
        HEAD + SOURCE + 'local_tsap = "10.00"\nremote_tsap = "03.01"\ntags_file = "tags.csv"\n',
        encoding="utf-8",
    )
    source = load_config(path).sources[0]
    assert source.endpoint == "10.0.0.5:102 TSAP 03.01"
    assert isinstance(source, S7SourceConfig) and source.tsaps == (0x1000, 0x0301)


def test_sources_reading_one_tags_file_share_its_tag_models(tmp_path: Path) -> None:
    """Issue 17: one S7 source per PLC, each reading the same tags_file, held a copy of every
    tag model each; equal tags are one tuple now."""
    (tmp_path / "tags.csv").write_text("name,address\nspeed,DB1.DBD0:REAL\n", encoding="utf-8")
    second = SOURCE.replace("plc1", "plc2").replace("press1", "press2")
    machine = '[[machines]]\nname = "press2"\narea = "stamping"\nline = "line-1"\n'
    path = tmp_path / "lineside.toml"
    path.write_text(
        HEAD + machine + SOURCE + 'tags_file = "tags.csv"\n' + second + 'tags_file = "tags.csv"\n',
        encoding="utf-8",
    )
    first, other = load_config(path).sources
    assert isinstance(first, S7SourceConfig) and isinstance(other, S7SourceConfig)
    assert first.tags is other.tags and first.tags[0].name == "speed"

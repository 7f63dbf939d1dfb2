"""S7 addresses as engineers type them (STEP 7 / TIA Portal absolute forms), parsed to one form.

    DB1.DBD0:REAL    DB1.DBW4:INT    DB1.DBX2.3    DB10.DBB8:BYTE    DB1.DBB20:STRING[16]
    MW10    MD20:REAL    M0.1    I0.0 / E0.0    Q1.2 / A1.2    IW64    T5    C3 / Z3

German mnemonics (E inputs, A outputs, Z counters) mean the same as the English ones. The
size letter says how wide the value is: X a bit (with `.bit`), B a byte, W a word (2 bytes),
D a double word (4 bytes). A `:TYPE` suffix names the data type; without it X is BOOL, B is
BYTE, W is WORD, D is DWORD. A type that is wider than 4 bytes (LREAL, STRING, DATE_AND_TIME,
DTL) starts at a byte address: `DB1.DBB8:LREAL`. A type that does not fit its size letter
(`DB1.DBW4:REAL`) or a bare area without size letter or bit (`M0`) is an error, never a guess.

The address travels in a read item as (area, DB number, start byte); bits are read as their
byte and picked out by the codec, so neighbouring bits share one item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

MAX_DB = 65535
MAX_BYTE = (1 << 21) - 1  # the start address is 3 bytes of bit address: byte * 8 + bit
MAX_ELEMENT = 65535  # timers and counters are numbered
STRING_DEFAULT = 254  # an S7 STRING without [n] holds up to 254 characters


class Area(IntEnum):
    """S7 area codes as they travel in a read item."""

    INPUTS = 0x81
    OUTPUTS = 0x82
    MARKERS = 0x83
    DB = 0x84
    COUNTERS = 0x1C
    TIMERS = 0x1D

    @property
    def letter(self) -> str:
        return _LETTER[self]

    @property
    def counted(self) -> bool:
        """Timers and counters are addressed by number (2 bytes each), not by byte."""
        return self in (Area.TIMERS, Area.COUNTERS)


_LETTER = {
    Area.INPUTS: "I",
    Area.OUTPUTS: "Q",
    Area.MARKERS: "M",
    Area.DB: "DB",
    Area.COUNTERS: "C",
    Area.TIMERS: "T",
}

# Bytes per value of each type; STRING is 2 + max length and computed apart.
TYPE_BYTES: dict[str, int] = {
    "BOOL": 1,  # its byte; the codec picks the bit
    "BYTE": 1,
    "CHAR": 1,
    "SINT": 1,
    "USINT": 1,
    "WORD": 2,
    "INT": 2,
    "UINT": 2,
    "DWORD": 4,
    "DINT": 4,
    "UDINT": 4,
    "REAL": 4,
    "LREAL": 8,
    "DATE_AND_TIME": 8,
    "DTL": 12,
    "STRING": 0,
    "TIMER": 2,
    "COUNTER": 2,
}
TYPES = tuple(t for t in TYPE_BYTES if t not in ("TIMER", "COUNTER"))
_ALIASES = {"DT": "DATE_AND_TIME"}
_SIZE_LETTER_BYTES = {"B": 1, "W": 2, "D": 4}
_DEFAULT_TYPE = {"X": "BOOL", "B": "BYTE", "W": "WORD", "D": "DWORD"}
_AREAS = {
    "I": Area.INPUTS,
    "E": Area.INPUTS,
    "Q": Area.OUTPUTS,
    "A": Area.OUTPUTS,
    "M": Area.MARKERS,
}

_DB_FORM = re.compile(r"DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d+))?")
_AREA_FORM = re.compile(r"([IEQAM])([XBWD]?)(\d+)(?:\.(\d+))?")
_COUNTED_FORM = re.compile(r"([TCZ])(\d+)")
_TYPE_FORM = re.compile(r"([A-Z_]+)(?:\[(\d+)\])?")
_HELP = 'write an address like "DB1.DBD0:REAL", "DB1.DBX2.3", "MW10", "M0.1" or "IW64"'


@dataclass(frozen=True, slots=True)
class S7Address:
    """Where a value lives: area, DB number (0 outside DBs), start byte (or element), bit."""

    area: Area
    db: int
    start: int
    type: str
    bit: int | None = None
    length: int = 0  # STRING: the declared maximum length (characters)
    text: str = ""  # as written (normalised to upper case), for messages and plans

    @property
    def size(self) -> int:
        """Bytes the value occupies (timers and counters: 2 per element)."""
        if self.type == "STRING":
            return 2 + self.length
        return TYPE_BYTES[self.type]

    @property
    def width(self) -> int:
        """Addressing units it occupies: bytes, or 1 element for a timer or counter."""
        return 1 if self.area.counted else self.size

    def __str__(self) -> str:
        return self.text


def parse_address(value: str) -> S7Address:
    """Parse one address; raises ValueError with a message fit for a config problem line."""
    text = value.strip().upper().replace(" ", "")
    if not text:
        raise ValueError(f"empty address: {_HELP}")
    where, _, type_text = text.partition(":")
    declared, length = _type(type_text, text) if type_text else (None, 0)
    if m := _DB_FORM.fullmatch(where):
        db = int(m.group(1))
        if not 1 <= db <= MAX_DB:
            raise ValueError(f"address {text}: DB numbers run 1..{MAX_DB}")
        prefix = f"DB{db}.DB"
        return _sized(
            Area.DB, db, m.group(2), m.group(3), m.group(4), declared, length, text, prefix
        )
    if m := _AREA_FORM.fullmatch(where):
        area = _AREAS[m.group(1)]
        letter = m.group(2)
        if not letter:
            if m.group(4) is None:
                n = m.group(3)
                a = m.group(1)
                raise ValueError(
                    f"address {text} is ambiguous: write {a}{n}.0 for a bit, {a}B{n} for a byte, "
                    f"{a}W{n} for a word or {a}D{n} for a double word"
                )
            letter = "X"
        prefix = m.group(1)
        return _sized(area, 0, letter, m.group(3), m.group(4), declared, length, text, prefix)
    if m := _COUNTED_FORM.fullmatch(where):
        area = Area.TIMERS if m.group(1) == "T" else Area.COUNTERS
        kind = "TIMER" if area is Area.TIMERS else "COUNTER"
        if declared is not None and declared != kind:
            raise ValueError(f"address {text}: {where} is a {kind.lower()}; drop the :{declared}")
        number = int(m.group(2))
        if number > MAX_ELEMENT:
            raise ValueError(f"address {text}: {kind.lower()} numbers run 0..{MAX_ELEMENT}")
        return S7Address(area, 0, number, kind, text=text)
    if where.startswith("DB") and "." not in where:
        raise ValueError(
            f"address {text}: name the value inside the DB, like {where}.DBW0 or {where}.DBX0.0"
        )
    raise ValueError(f"bad address {text!r}: {_HELP}")


def _type(type_text: str, text: str) -> tuple[str, int]:
    m = _TYPE_FORM.fullmatch(type_text)
    if m is None:
        raise ValueError(f"address {text}: bad type {type_text!r} (known: {', '.join(TYPES)})")
    name = _ALIASES.get(m.group(1), m.group(1))
    if name not in TYPES:
        raise ValueError(f"address {text}: unknown type {name!r} (known: {', '.join(TYPES)})")
    if m.group(2) is not None and name != "STRING":
        raise ValueError(f"address {text}: only STRING takes a [length]")
    length = int(m.group(2)) if m.group(2) is not None else STRING_DEFAULT
    if name == "STRING" and not 1 <= length <= 254:
        raise ValueError(f"address {text}: an S7 STRING holds 1..254 characters, not {length}")
    return name, (length if name == "STRING" else 0)


def _sized(
    area: Area,
    db: int,
    letter: str,
    start_text: str,
    bit_text: str | None,
    declared: str | None,
    length: int,
    text: str,
    prefix: str,
) -> S7Address:
    start = int(start_text)
    if letter == "X":
        if bit_text is None:
            raise ValueError(
                f"address {text}: a bit address needs its bit, like {where_of(text)}.0"
            )
        bit = int(bit_text)
        if bit > 7:
            raise ValueError(f"address {text}: bit {bit} is out of range 0..7")
        if declared not in (None, "BOOL"):
            raise ValueError(f"address {text} is a single bit: use BOOL, not {declared}")
        _check_end(start, 1, text)
        return S7Address(area, db, start, "BOOL", bit, text=text)
    if bit_text is not None:
        raise ValueError(
            f"address {text}: a bit number goes with X (DBX) or a bare area (M0.1), "
            f"not with {letter}"
        )
    kind = declared or _DEFAULT_TYPE[letter]
    if kind == "BOOL":
        raise ValueError(f"address {text}: a BOOL is one bit: write it like DBX0.0 or M0.0")
    size = 2 + length if kind == "STRING" else TYPE_BYTES[kind]
    expected = _SIZE_LETTER_BYTES[letter]
    if size > 4 and letter != "B":
        raise ValueError(
            f"address {text}: {_a(kind)} is {size} bytes; give its first byte and the type, "
            f"like {prefix}B{start}:{kind}"
        )
    if size <= 4 and size != expected:
        raise ValueError(
            f"address {text}: {_a(kind)} is {size} {'byte' if size == 1 else 'bytes'} but "
            f"{letter} reads {expected}; use {_letter_for(size)} or another type"
        )
    _check_end(start, size, text)
    return S7Address(area, db, start, kind, None, length, text)


def _a(kind: str) -> str:
    """ "a REAL", "an INT", "an LREAL": the article as the type name is spoken."""
    return f"{'an' if kind in ('INT', 'UINT', 'UDINT', 'USINT', 'SINT', 'LREAL') else 'a'} {kind}"


def where_of(text: str) -> str:
    return text.partition(":")[0]


def _letter_for(size: int) -> str:
    return {1: "B (byte)", 2: "W (word)", 4: "D (double word)"}[size]


def _check_end(start: int, size: int, text: str) -> None:
    if start + size - 1 > MAX_BYTE:
        raise ValueError(f"address {text} is out of range: byte offsets run 0..{MAX_BYTE}")

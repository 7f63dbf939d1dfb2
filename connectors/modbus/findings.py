"""What `lineside discover modbus` found, and the tags file written from it: all pure.

The answers one read can come back with (`describe` puts one in words), the results of a run
(`Discovery`: the unit id probes and each scanned unit's readable ranges, with register values
read twice when asked), and the rows of a `tags_file` CSV: one per readable address, capped at
`MAX_ROWS` shared fairly between tables, each with the value read and what it may hold
(`guess.py`). The scan and its I/O are `discover.py`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connectors.modbus.address import Table
from connectors.modbus.guess import guesses
from connectors.modbus.pdu import EXCEPTION_NAMES

# Rows per tags file: enough to see a device's map, few enough to edit by hand.
MAX_ROWS = 2000

# What one read came back with: OK, a Modbus exception code (1..255), or one of these.
OK = 0
TIMEOUT = -1
MALFORMED = -2
DROPPED = -3  # the device closed the connection on this request, even after a reconnect
ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
GATEWAY_CODES = (0x0A, 0x0B)

Answer = int


def describe(answer: Answer, timeout: float) -> str:
    """One answer in words, for the report."""
    if answer == OK:
        return "data"
    if answer == TIMEOUT:
        return f"no answer within {timeout:g}s"
    if answer == MALFORMED:
        return "malformed answer"
    if answer == DROPPED:
        return "connection dropped"
    return f"exception {answer:02X} ({EXCEPTION_NAMES.get(answer, 'unknown exception code')})"


def format_units(ids: Sequence[int]) -> str:
    """Unit ids as ranges, the way `--units` takes them: (1, 2, 3, 7) → "1-3,7"."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive ids
    for uid in sorted(set(ids)):
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnitProbe:
    """How one unit id answered the probe read (FC03 hr:0, count 1)."""

    unit_id: int
    answer: Answer

    @property
    def present(self) -> bool:
        return self.answer == OK or (self.answer > 0 and self.answer not in GATEWAY_CODES)


@dataclass(frozen=True, slots=True)
class TableScan:
    """The readable ranges of one table: half-open (start, end) pairs, in address order."""

    table: Table
    readable: tuple[tuple[int, int], ...]
    requests: int
    doubtful: int = 0  # reads that timed out or failed otherwise: counted as unreadable
    unsupported: bool = False  # the device answered 01: it has no such function

    @property
    def addresses(self) -> int:
        return sum(end - start for start, end in self.readable)

    def spans(self) -> list[str]:
        """The ranges as written in configs: `hr:0-1023`, `co:7`."""
        return [
            f"{self.table}:{s}" if e - s == 1 else f"{self.table}:{s}-{e - 1}"
            for s, e in self.readable
        ]


@dataclass(frozen=True, slots=True)
class UnitScan:
    unit_id: int
    tables: tuple[TableScan, ...]
    # Register values read twice a moment apart (table -> address -> value), with `values`.
    first: Mapping[Table, Mapping[int, int]] = field(default_factory=dict)
    second: Mapping[Table, Mapping[int, int]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.tables)


@dataclass(frozen=True, slots=True)
class Discovery:
    """Everything one `discover` run found on one host:port."""

    host: str
    port: int
    timeout: float
    probes: tuple[UnitProbe, ...]
    scans: tuple[UnitScan, ...]
    requests: int

    @property
    def answering(self) -> tuple[int, ...]:
        return tuple(p.unit_id for p in self.probes if p.present)

    @property
    def any_unit(self) -> bool:
        """Every probed unit id answered: the device most likely ignores the unit id."""
        return len(self.probes) >= 2 and all(p.present for p in self.probes)


# -- the tag list ------------------------------------------------------------------------------

CSV_COLUMNS = ("name", "address", "type", "unit", "description")


def _shares(sizes: Sequence[int], cap: int) -> list[int]:
    """Split `cap` rows between tables fairly: each gets an equal share, unused shares pass on."""
    given = [0] * len(sizes)
    left = cap
    wanting = [i for i, size in enumerate(sizes) if size > 0]
    while left > 0 and wanting:
        share = max(1, left // len(wanting))
        for i in list(wanting):
            take = min(share, sizes[i] - given[i], left)
            given[i] += take
            left -= take
            if given[i] == sizes[i]:
                wanting.remove(i)
    return given


def tag_rows(scan: UnitScan, cap: int = MAX_ROWS) -> tuple[list[dict[str, str]], int]:
    """One row per readable address (uint16 or bool), at most `cap`; and how many were left out.

    Registers come first in the file; every table keeps its lowest addresses when capped.
    """
    order = (Table.HOLDING_REGISTERS, Table.INPUT_REGISTERS, Table.COILS, Table.DISCRETE_INPUTS)
    by_table = {t.table: t for t in scan.tables}
    tables = [by_table[t] for t in order if t in by_table]
    sizes = [t.addresses for t in tables]
    shares = _shares(sizes, cap)
    rows: list[dict[str, str]] = []
    for table_scan, share in zip(tables, shares, strict=True):
        kind = "bool" if table_scan.table.is_bits else "uint16"
        addresses = (a for start, end in table_scan.readable for a in range(start, end))
        first = scan.first.get(table_scan.table, {})
        guessed = guesses(first, scan.second.get(table_scan.table))
        for _, address in zip(range(share), addresses, strict=False):
            notes = [f"readable on unit {scan.unit_id} (lineside discover)"]
            if address in first:
                notes.append(f"value {first[address]}")
            if address in guessed:
                notes.append(guessed[address])
            rows.append(
                {
                    "name": f"{table_scan.table}_{address}",
                    "address": f"{table_scan.table}:{address}",
                    "type": kind,
                    "unit": "",
                    "description": "; ".join(notes),
                }
            )
    return rows, sum(sizes) - len(rows)


def tags_path(out: Path, unit_id: int, several: bool) -> Path:
    """Where one unit's tag list goes: `out` itself, or `out` with `_unit<id>` when several."""
    return out.with_name(f"{out.stem}_unit{unit_id}{out.suffix}") if several else out


def write_tags(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Write rows as a `tags_file` CSV (OSError if the file cannot be written)."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

"""Reading the files of a config safely: only regular files, under a size cap, as UTF-8, TOML
nested within reason, CSV rows with the line each starts on.

Each refusal is one plain message: `UnreadableFile` (without the file's name, the caller adds it)
or a `ConfigError` at the file and line.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from pathlib import Path

from agent.errors import ConfigError, Problem
from agent.size import format_size

# The largest config and tag files lineside reads. Real ones are a few kilobytes; the caps
# stop a wrong path (a log, a disk image, /dev/zero) from filling memory.
TOML_LIMIT = 16 * 1024**2
CSV_LIMIT = 64 * 1024**2

# Tables and arrays inside each other: a real config nests 7 deep (sources[0].units[0].tags[0]).
# The check keeps the recursive steps after parsing (tags_file, validation) clear of the stack.
MAX_DEPTH = 64
NESTED_TOO_DEEPLY = f"nested too deeply: more than {MAX_DEPTH} levels of tables and arrays"

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(Exception):
    """A config or tag file lineside refuses to read; the message says why, without its name."""


def _check_regular(info: os.stat_result, limit: int) -> None:
    for test, kind in _NOT_REGULAR:
        if test(info.st_mode):
            raise UnreadableFile(f"is {kind}, not a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile("not a regular file")
    if info.st_size > limit:
        raise UnreadableFile(_too_large(info.st_size, limit))


def _too_large(size: int, limit: int) -> str:
    return f"too large: {size:,} bytes (the limit is {format_size(limit)})"


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    The type is checked before opening, so a device or a FIFO is never opened (/dev/zero would
    fill memory, /dev/urandom and a FIFO never end, opening some devices has side effects), and
    again on the open file in case the path changed in between; O_NONBLOCK keeps even that
    open from waiting for a FIFO's writer. FileNotFoundError passes through for the caller to
    word; every other refusal is an UnreadableFile.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        _check_regular(os.stat(path), limit)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as f:
            _check_regular(os.fstat(f.fileno()), limit)
            data = f.read(limit + 1)  # +1: a file that grew past the limit since the check
    except (FileNotFoundError, UnreadableFile):
        raise
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror}") from None
    except ValueError:  # e.g. a NUL byte in the name
        raise UnreadableFile("not a usable file name") from None
    if len(data) > limit:
        raise UnreadableFile(_too_large(len(data), limit))
    return data


def too_deep(doc: object) -> bool:
    """Whether tables and arrays nest more than MAX_DEPTH levels (iterative, not recursive)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: list[object] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level > MAX_DEPTH:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def csv_rows(text: str, file: str, written: str) -> list[tuple[int, list[str]]]:
    """Every row of a CSV text (blank ones too) with the 1-based line it starts on.

    The csv module ends a quoted cell that never closes at the end of the file, taking every
    later line into it without a word, and it raises for a cell over its field limit or a NUL:
    each becomes one problem at the line of the row.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        if _open_quote(_from_line(text, start)):
            message = UNTERMINATED_QUOTE
        elif "field larger than field limit" in str(exc):
            message = f"cell longer than {csv.field_size_limit():,} characters"
        else:
            message = f"not readable as CSV: {exc}"
        raise ConfigError([Problem(file, f"{written}:{start}", message)]) from None
    if rows and _open_quote(_from_line(text, rows[-1][0])):
        raise ConfigError([Problem(file, f"{written}:{rows[-1][0]}", UNTERMINATED_QUOTE)])
    return rows


UNTERMINATED_QUOTE = "unterminated quote: a quoted cell in this row never closes"

_QUOTED_CELL = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')  # "" inside quotes is a quote character
_CELL_END = re.compile(r"[,\r\n]")


def _from_line(text: str, line: int) -> str:
    """`text` from the start of its 1-based `line`, lines ending as the csv reader sees them."""
    lines = io.StringIO(text, newline="")
    for _ in range(line - 1):
        lines.readline()
    return lines.read()


def _open_quote(text: str) -> bool:
    """Whether CSV `text` (from the start of a row) ends inside a quoted cell.

    Follows the csv module's rules as lineside reads (excel dialect, not strict): a quote opens
    a quoted cell only as a cell's first character; after its closing quote, the rest of the
    cell up to the next comma or line end is plain text.
    """
    pos = 0
    while pos < len(text):
        if text[pos] == '"':
            quoted = _QUOTED_CELL.match(text, pos)
            if quoted is None:
                return True
            pos = quoted.end()
        end = _CELL_END.search(text, pos)
        if end is None:
            return False
        pos = end.end()
    return False


def decode(data: bytes, file: str, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise ConfigError(
            [Problem(file, where, f"not UTF-8 text: byte 0x{bad} on line {line}; save as UTF-8")]
        ) from None

"""Pydantic's errors in plain words: the WHERE and MESSAGE of one `FILE: WHERE: MESSAGE` line.

A key path is written `sources[0].units[0].tags[3].address`; `where` maps one onto a tag CSV
file's `file:line` when the key lies inside a `tags_file`'s rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from agent.config.fields import Loc


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_key(key: str) -> Loc:
    """`"shifts[1].name"` → ("shifts", 1, "name"): the inverse of `dotted`."""
    loc: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        loc.append(int(index) if index else name)
    return tuple(loc)


def show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "tuple": "a list",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
    "model_attributes": "a table",
    "dataclass": "a table",
    "path": "a file path",
    "time": 'a time like "06:00"',
    "date": "a date like 2026-10-01",
}


def plain_message(error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    got = show(error.get("input"))
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {got}"
    limits = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in limits:
        words, key = limits[kind]
        return f"must be {words} {ctx[key]}, got {got}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} entries"
    if kind == "string_pattern_mismatch":
        return f"does not match the pattern {ctx['pattern']}, got {got}"
    for prefix, words in _TYPE_WORDS.items():
        if kind.startswith(prefix + "_") and kind.endswith(
            ("_type", "_parsing", "_from_float", "_fractional_part", "_from_datetime_parsing")
        ):
            return f"expected {words}, got {got}"
    return str(error["msg"]).removeprefix("Value error, ")


def translate(
    error: Mapping[str, Any], prefix: Loc, where: Callable[[Loc], str]
) -> tuple[str, str]:
    """One pydantic error of a model validated at `prefix` → (WHERE, MESSAGE).

    `where` writes a key path as the user finds it: dotted, or `file.csv:LINE: column` inside
    a tags_file's rows."""
    loc: Loc = (*prefix, *error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "at_key":
        key_loc = parse_key(str(ctx["key"]))
        return where((*loc, *key_loc)), str(ctx["message"])
    if kind in ("extra_forbidden", "missing"):
        key, parent = loc[-1], loc[:-1]
        origin_where = where(loc)
        if kind == "extra_forbidden" and origin_where != dotted(loc):
            # An unknown key in a CSV row is an unknown column: say so once, at the header.
            csv_name = origin_where.split(":", 1)[0]
            return f"{csv_name}:1", f"unknown column {key!r}"
        if kind == "missing" and origin_where != dotted(loc):
            return where(parent), f"no value in column {key!r}"
        word = "unknown" if kind == "extra_forbidden" else "missing"
        return where(parent), f"{word} key {key!r}"
    return where(loc), plain_message(error)

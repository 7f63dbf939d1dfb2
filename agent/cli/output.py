"""Where the CLI writes: results on standard output, messages on standard error, and JSON
built from result types in one place."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import Any

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def say(line: str) -> None:
    """One line on standard error, as written: no markup, no highlighting, no wrapping."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    """`value` as indented JSON on standard output: result dataclasses become objects with
    their fields in order; what JSON has no type for (a path, a date) is written as text."""
    print(json.dumps(_plain(value), indent=2, default=str))


def quiet_asyncua() -> None:
    """asyncua logs each refusal and failure itself, some with a traceback; lineside says each
    one in its own line (the source's status, the command's error), so only debug shows them."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)

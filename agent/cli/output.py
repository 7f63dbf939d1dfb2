"""Where the CLI writes: results on standard output, messages on standard error, and JSON
built from result types in one place."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class _Deferred:
    """A rich Console made on first use: `lineside run` prints nothing through one, and
    importing rich costs a running agent ~1.6 MB of RSS (benchmarks/README.md, "Memory")."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)

    # Special methods are looked up on the type, not through __getattr__: rich's Live and
    # Progress enter the console they are given (`with console:`).
    def __enter__(self) -> Console:
        return self.real().__enter__()

    def __exit__(self, *exc: object) -> None:
        self.real().__exit__(*exc)


if TYPE_CHECKING:  # to their callers both are Consoles (rich's Progress and Live take them)
    console: Console
    err_console: Console
else:
    console = _Deferred(stderr=False)
    err_console = _Deferred(stderr=True)


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

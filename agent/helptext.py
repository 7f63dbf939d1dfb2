"""The CLI's help text: what typer prints beside each option.

Typer (0.29) prints the type of every option, flags included: `--json <bool>` reads as if the
flag took a value. `plain_flags` drops the type of flags (a flag's presence is its value);
options that take a value keep theirs (`<path>`, `<str>`). Help strings are rich markup, so a
literal bracket there is written `\\[` (`\\[\\[sources]]`), else rich takes `[sources]` for a style.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_typed = TyperOption.display_type_rich


def _flag_untyped(self: TyperOption, ctx: Any) -> str | None:
    if self.is_flag:
        return None
    return _typed(self, ctx)


def plain_flags() -> None:
    """Print flags without a `<bool>` type (once, at import of the CLI)."""
    TyperOption.display_type_rich = _flag_untyped  # type: ignore[method-assign]

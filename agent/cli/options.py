"""Options several commands share, written once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The config file (TOML).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _seconds(text: str) -> float:
    from agent.duration import parse_cli_duration

    try:
        return parse_cli_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


DurationOption = Annotated[
    float | None,
    typer.Option(
        "--duration", parser=_seconds, metavar="DURATION", help='Stop after this long ("30s").'
    ),
]

# The store of a config, or a data directory given directly (status, quarantine).
DataOption = Annotated[
    Path | None, typer.Option("--data", help="The data directory, instead of --config.")
]
OptionalConfig = Annotated[
    Path | None, typer.Option("--config", "-c", help="The agent's config (for its store).")
]

# The KPI commands (oee, report).
KpiConfig = Annotated[
    Path,
    typer.Option(
        "--config", "-c", help="The agent's config (TOML); its store is read, never changed."
    ),
]
ShiftOption = Annotated[
    str,
    typer.Option(
        "--shift",
        help="current, today, yesterday, a date (2026-11-23) or one shift (2026-11-23/A).",
    ),
]
LineOption = Annotated[
    str | None, typer.Option("--line", help="Only this line (area/line or line).")
]

"""The one way a command ends on an error: one line per problem on standard error, no
traceback, and the exit code.

Every command runs inside `exits()` (the app's group wraps each invocation in it). Input
lineside refuses, a config with problems, a missing extra, a store of a newer lineside or a data
directory another agent holds exit 2; anything else lineside raises on purpose (a device that
does not answer, a damaged store) exits 1 with `lineside: MESSAGE`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from agent.cli.output import say
from agent.errors import AlreadyRunning, ConfigError, LinesideError, StoreTooNew
from agent.extras import MissingExtra

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class Refused(Exception):
    """Input a command refuses: each line is printed as it is, and the exit code is 2."""

    def __init__(self, *lines: str) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@contextmanager
def refusing(*kinds: type[Exception]) -> Iterator[None]:
    """Errors of `kinds` raised inside are bad input: their message, exit 2."""
    try:
        yield
    except kinds as exc:
        raise Refused(str(exc)) from None


def explain(exc: Refused | LinesideError) -> tuple[int, list[str]]:
    """The exit code and the lines of an error."""
    if isinstance(exc, Refused):
        return EXIT_BAD_INPUT, list(exc.lines)
    if isinstance(exc, ConfigError):
        return EXIT_BAD_INPUT, [str(p) for p in exc.problems]
    refused = isinstance(exc, MissingExtra | AlreadyRunning | StoreTooNew)
    return EXIT_BAD_INPUT if refused else EXIT_FAILED, [f"lineside: {exc}"]


@contextmanager
def exits() -> Iterator[None]:
    """Turn lineside's errors raised inside into their lines on stderr and the exit code."""
    try:
        yield
    except (Refused, LinesideError) as exc:
        code, lines = explain(exc)
        for line in lines:
            say(line)
        raise typer.Exit(code) from None


@contextmanager
def writing(path: object) -> Iterator[None]:
    """Write `path` inside: an OSError is the one line `PATH: cannot write: REASON`, exit 2."""
    try:
        yield
    except OSError as exc:
        raise Refused(f"{path}: cannot write: {exc.strerror}") from None

"""Where the agent's log lines go: the `[log]` section and the handlers it sets up.

One record is one line: `TIME LEVEL LOGGER: MESSAGE` (or one JSON object with `format =
"json"`), on stderr, which systemd hands to the journal. When stderr *is* the journal
(`$JOURNAL_STREAM` names it), lines drop the time (the journal stamps them) and start with the
syslog priority `<N>`, so `journalctl -p warning` filters by level. `[log] file` writes to a
size-rotated file instead, for boxes without journald; warnings and errors still reach stderr.

Secrets never reach a line: agent/secrets.py masks every remembered secret in each record as it
is made (a log record factory), before any handler here sees it.

This module imports only the standard library and pydantic: `lineside validate` reads `[log]`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Literal, TextIO

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from agent.errors import LinesideError
from agent.size import Size

Level = Literal["debug", "info", "warning", "error"]

# Syslog priorities journald reads from a `<N>` line prefix (sd-daemon(3)).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class LogError(LinesideError):
    """The log file cannot be opened."""


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return value if base is None else Path(base) / value


def _logger_names(value: dict[str, Level]) -> dict[str, Level]:
    for name in value:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f'expected logger names like "lineside.forward", got {name!r}')
    return value


class LogSection(BaseModel):
    """`[log]`: levels, format and an optional rotated file (see docs/configuration.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Level = "info"
    format: Literal["text", "json"] = "text"
    # A rotated file for boxes without journald; relative paths are from the config file.
    file: Annotated[Path, AfterValidator(_relative_to_config)] | None = None
    max_size: Size = 10 * 1024**2  # rotate past this many bytes
    backups: Annotated[int, Field(ge=1, le=100)] = 5  # rotated files kept: FILE.1 .. FILE.N
    # Levels of single loggers, e.g. {"lineside.forward" = "debug", "asyncua" = "warning"}.
    modules: Annotated[dict[str, Level], AfterValidator(_logger_names)] = {}


class TextFormatter(logging.Formatter):
    """`2026-03-01T06:00:00.123Z WARNING lineside.forward: message`, UTC."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        return _with_traceback(self, record, line)


class JournalFormatter(logging.Formatter):
    """`<4>lineside.forward: message`: the journal adds the time and reads the priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 3 if record.levelno > logging.ERROR else 6)
        return _with_traceback(self, record, f"<{priority}>{record.name}: {record.getMessage()}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg and exc when any."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        traceback = _traceback(self, record)
        if traceback:
            line["exc"] = traceback
        return json.dumps(line, ensure_ascii=False)


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    # The secrets' record factory already formatted (and masked) it into exc_text.
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [record.exc_text or "", formatter.formatStack(record.stack_info or "")]
    return "\n".join(p for p in parts if p)


def _with_traceback(formatter: logging.Formatter, record: logging.LogRecord, line: str) -> str:
    traceback = _traceback(formatter, record)
    return f"{line}\n{traceback}" if traceback else line


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when `stream` (stderr) is journald's (`$JOURNAL_STREAM` is its device:inode)."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return wanted == f"{st.st_dev}:{st.st_ino}"


def configure(section: LogSection, level: str | None = None) -> None:
    """Install the handlers `section` asks for on the root logger, replacing those this
    function installed before. `level` (the command line's) overrides `section.level`."""
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if getattr(handler, "lineside", False):  # others (a test's capture) stay
            root.removeHandler(handler)
            handler.close()
    stream: logging.Handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if section.format == "json":
        formatter = JsonFormatter()
    elif stderr_is_journal():
        formatter = JournalFormatter()
    else:
        formatter = TextFormatter()
    stream.setFormatter(formatter)
    handlers = [stream]
    if section.file is not None:
        # Imported here: a running agent without a log file does not need the module (0.15 MB).
        from logging.handlers import RotatingFileHandler

        try:
            file = RotatingFileHandler(
                section.file,
                maxBytes=section.max_size,
                backupCount=section.backups,
                encoding="utf-8",
            )
        except OSError as exc:
            raise LogError(f"[log] file: cannot open {section.file}: {exc.strerror}") from None
        file.setFormatter(JsonFormatter() if section.format == "json" else TextFormatter())
        handlers.append(file)
        stream.setLevel(logging.WARNING)  # the file has everything; a terminal sees problems
    for handler in handlers:
        handler.lineside = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel((level or section.level).upper())
    for name, module_level in section.modules.items():
        logging.getLogger(name).setLevel(module_level.upper())

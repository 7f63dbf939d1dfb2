"""Every error lineside raises on purpose, in one tree.

    LinesideError
    ├── ConfigError              a config file or tag list that cannot be used (exit code 2)
    ├── ConnectorError           something went wrong talking to a device or upstream system
    │   ├── ConnectError         could not (re)connect: refused, unreachable, handshake failed
    │   ├── RequestTimeout       a request passed its deadline
    │   ├── DeviceError          the device answered with an error (e.g. a Modbus exception code)
    │   ├── ProtocolError        the device answered with something malformed
    │   └── SinkRejected         the far side refused a record as invalid (quarantine it)
    ├── StoreError               the SQLite log cannot be read or written (full disk, corrupt file)
    │   └── StoreTooNew          the file was written by a newer lineside (exit code 2)
    └── AlreadyRunning           another agent holds the data directory's lock (exit code 2)

Library exceptions (pymodbus, asyncua, paho, httpx, sqlite3) are translated into these in one
place per connector, so the runtime handles one vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass


class LinesideError(Exception):
    """Base class of every error lineside raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config: where (file, key path or CSV row) and what."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        if self.where:
            return f"{self.file}: {self.where}: {self.message}"
        return f"{self.file}: {self.message}"


class ConfigError(LinesideError):
    """A config that cannot be used; carries every problem found, one line each."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConnectorError(LinesideError):
    """Talking to a device or upstream system failed.

    `retry_after` is how long the far side asked to be left alone, in seconds (an HTTP
    `Retry-After`), or None; the forwarder waits at least that long before the next attempt.
    """

    retry_after: float | None = None


class ConnectError(ConnectorError):
    """Could not connect or reconnect."""


class RequestTimeout(ConnectorError):
    """A request passed its deadline."""


class DeviceError(ConnectorError):
    """The device answered with an error, e.g. a Modbus exception response."""

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class ProtocolError(ConnectorError):
    """The device answered with something malformed or unexpected."""


class SinkRejected(ConnectorError):
    """The far side refused a record as invalid; it is quarantined, never retried blindly.

    `index` is the position of the refused record in the batch that was sent, or None when the
    far side refused the batch as a whole.
    """

    def __init__(self, message: str, index: int | None = None) -> None:
        self.index = index
        super().__init__(message)


class StoreError(LinesideError):
    """The SQLite log cannot be read or written."""


class StoreTooNew(StoreError):
    """The store's schema is newer than this lineside knows: a downgrade, refused."""


class AlreadyRunning(LinesideError):
    """Another agent holds the data directory's lock; `pid` is its process id when known."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


def one_line(exc: BaseException) -> str:
    """What went wrong, on one line: lineside's own message, or for an exception nobody foresaw
    (a library's bug, a bare assertion) its type and message, so a log line or a status field
    still says something."""
    text = " ".join(str(exc).split())
    if isinstance(exc, LinesideError):
        return text or type(exc).__name__
    return f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")

"""One agent per store: an exclusive lock on `<data_dir>/lineside.lock`, held while it runs.

The lock is an `flock` on an open file, so the kernel releases it when the process ends however
it ends (a crash or SIGKILL leaves no stale lock to clean up). The file holds the owner's pid,
only so a second `lineside run` can name it; the pid is never trusted for the locking itself.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from agent.errors import AlreadyRunning, StoreError

LOCK_NAME = "lineside.lock"


class DataDirLock:
    """Held from `acquire()` to `release()` (or the process's end)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise AlreadyRunning naming the holder's pid."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the lock file: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            held = f"pid {pid}" if pid is not None else "pid unknown"
            raise AlreadyRunning(
                f"{self.path.parent}: already running ({held}); one agent per data directory",
                pid,
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{self.path}: cannot lock: {exc.strerror}") from exc
        # Written after the lock is ours: a reader that sees a pid sees the holder's.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # The file stays: removing it would let a third process lock a new inode while a
            # second still waits on the old one.
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

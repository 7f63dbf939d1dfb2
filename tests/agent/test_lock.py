"""One agent per data directory (agent/lock.py): a second lock on it is refused."""

import os
from pathlib import Path

import pytest

from agent.errors import AlreadyRunning
from agent.lock import LOCK_NAME, DataDirLock


def test_a_second_lock_names_the_holder(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyRunning, match=rf"already running \(pid {os.getpid()}\)"):
            DataDirLock(tmp_path).acquire()
    # Released: the next agent gets it.
    DataDirLock(tmp_path).acquire().release()


def test_the_lock_creates_the_data_directory(tmp_path: Path) -> None:
    with DataDirLock(tmp_path / "new" / "data") as lock:
        assert lock.path.exists()

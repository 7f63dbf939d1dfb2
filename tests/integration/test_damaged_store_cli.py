"""A damaged store: every command that opens it says so in the same one line and exits 1.

Each kind of damage is made for real on a real store; every command runs through the CLI
(`typer`'s runner, in this process: 9 kinds x 7 commands in a few seconds), and the kind the
issue saw as a traceback (`lineside.db` a directory) also through real `lineside` processes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.model import Quality, ReadingBatch
from agent.starter import starter_config
from agent.store import Store, StoreWriter
from agent.tags import Tag

PAGE = 4096


def make_store(data: Path) -> Path:
    """A real store of 300 batches, checkpointed into its one file (no -wal, no -shm)."""
    with Store(data) as store:
        store.register_tags(Tag(path=f"s/a/l/m/t{i}", machine="m", name=f"t{i}") for i in range(50))
        store.register_sinks(["mes"])
    writer = StoreWriter(data)
    for i in range(300):
        batch = ReadingBatch.from_columns("plc", range(1, 51), [i] * 50, Quality.GOOD, 10**18 + i)
        writer.submit_readings(batch)
    assert writer.flush_blocking(10)
    writer.close()
    db = data / "lineside.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert db.stat().st_size > 50 * PAGE
    return db


def truncated(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2 + 100)


def garbage_header(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(bytes(range(100, 200)))


def zeroed_pages(db: Path) -> None:
    with db.open("r+b") as f:
        f.seek(3 * PAGE)
        f.write(bytes(10 * PAGE))


def directory(db: Path) -> None:
    db.unlink()
    (db / "something").mkdir(parents=True)


def not_sqlite(db: Path) -> None:
    db.write_text("time,path,value\n" * 500, encoding="utf-8")


def symlink_loop(db: Path) -> None:  # unreadable: ELOOP, whoever we are
    db.unlink()
    db.symlink_to(db.name)


def unreadable(db: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads any file: mode 000 cannot make it unreadable here")
    db.chmod(0)


def fifo(db: Path) -> None:  # SQLite would wait on it for ever
    db.unlink()
    os.mkfifo(db)


def wal_left_over(db: Path) -> None:
    """The store moved aside without its -wal: SQLite would replay that into a new store."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("INSERT INTO meta (key, value) VALUES ('moved', 'aside')")
    conn.commit()
    wal = Path(f"{db}-wal")
    kept = wal.read_bytes()
    conn.close()
    assert kept
    db.unlink()
    Path(f"{db}-shm").unlink(missing_ok=True)
    wal.write_bytes(kept)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (truncated, "database disk image is malformed"),
    "garbage header": (garbage_header, "file is not a database"),
    "zeroed pages": (zeroed_pages, "database disk image is malformed"),
    "a directory": (directory, "lineside.db is a directory"),
    "not SQLite": (not_sqlite, "file is not a database"),
    "a symlink loop": (symlink_loop, "cannot read it: Too many levels of symbolic links"),
    "unreadable": (unreadable, "cannot read it: permission denied"),
    "a FIFO": (fifo, "lineside.db is not a regular file"),
    "a WAL left over": (wal_left_over, "lineside.db-wal is left over without lineside.db"),
}


def commands(tmp_path: Path, config: Path) -> dict[str, list[str]]:
    c = ["-c", str(config)]
    shift = ["--shift", "2026-11-23"]
    return {
        "run": ["run", *c, "--duration", "1"],
        "status": ["status", *c],
        "export": ["export", *c],
        "export --out": ["export", *c, "--format", "jsonl", "--out", str(tmp_path / "out.jsonl")],
        "oee": ["oee", *c, *shift],
        "report": ["report", *c, *shift, "--out", str(tmp_path / "report.html")],
        "quarantine": ["quarantine", "list", *c],
    }


def damaged(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    config = tmp_path / "lineside.toml"
    config.write_text(starter_config("press"), encoding="utf-8")  # data_dir = "data"
    db = make_store(tmp_path / "data")
    DAMAGE[kind][0](db)
    return config, db


def snapshot(data: Path) -> dict[str, bytes | None]:
    """The bytes of every regular file in the data directory (None: not a regular file), but
    the lock file `run` takes (it holds the pid; the kernel's lock goes with the process)."""
    return {
        p.name: p.read_bytes() if p.is_file() and os.access(p, os.R_OK) else None
        for p in sorted(data.iterdir())
        if p.name != "lineside.lock"
    }


@pytest.mark.parametrize("kind", list(DAMAGE))
@pytest.mark.slow
def test_every_command_says_the_store_is_damaged_in_one_line(tmp_path: Path, kind: str) -> None:
    config, db = damaged(tmp_path, kind)
    before = snapshot(db.parent)
    runner = CliRunner()
    said: dict[str, str] = {}
    for name, args in commands(tmp_path, config).items():
        result = runner.invoke(app, args)
        # An uncaught exception would be a traceback for the user: only Exit may end a command.
        assert result.exception is None or isinstance(result.exception, SystemExit), name
        assert result.exit_code == 1, (name, result.stderr)
        assert result.stdout == "", (name, "no partial output")
        said[name] = result.stderr
    line = said["run"]
    assert line == (
        f"lineside: {db}: the store is damaged ({DAMAGE[kind][1]}); stop lineside, move the "
        "file and its -wal aside (keep them for analysis) and start again to create a new store\n"
    )
    assert {name: text for name, text in said.items() if text != line} == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "lineside.toml"]  # no export
    assert snapshot(db.parent) == before  # nothing changed, nothing deleted


@pytest.mark.slow
def test_a_directory_named_lineside_db_through_real_processes(tmp_path: Path) -> None:
    config, db = damaged(tmp_path, "a directory")
    for args in (["run", "-c", str(config)], ["export", "-c", str(config)]):
        result = subprocess.run(
            [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"lineside: {db}: the store is damaged (lineside.db is a directory); stop lineside, "
            "move the file and its -wal aside (keep them for analysis) and start again to "
            "create a new store"
        ]


@pytest.mark.slow
def test_a_healthy_store_still_opens_for_every_reader(tmp_path: Path) -> None:
    """The checks refuse only damage: a sound store (with its -wal) exports and shows."""
    config = tmp_path / "lineside.toml"
    config.write_text(starter_config("press"), encoding="utf-8")
    make_store(tmp_path / "data")
    runner = CliRunner()
    for name, args in commands(tmp_path, config).items():
        if name == "run":
            continue
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (name, result.stderr, result.exception)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 300 * 50
    assert not list(tmp_path.glob(".*partial"))

"""Hostile input at the command line: devices, FIFOs, huge or deeply nested files, broken CSV
quoting, and `export` arguments that cannot work. Each case runs the real `lineside` and checks
its exit code and its exact message. Every process is bounded by a timeout and a memory limit,
so a read that blocks or grows without end fails the test instead of hanging the machine.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.model import Quality, ReadingBatch
from agent.store import Store, StoreWriter
from agent.tags import Tag

T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z
READINGS = 5000  # about 470 kB as CSV

CONFIG = """config_version = 1
[agent]
id = "edge-1"
[plant]
site = "suzhou"
[[machines]]
name = "press1"
area = "stamping"
line = "line-1"
[[sources]]
name = "plc1"
type = "modbus_tcp"
host = "127.0.0.1"
[[sources.units]]
unit_id = 1
machine = "press1"
"""
TAGS_FILE = CONFIG + 'tags_file = "{tags}"\n'
WITH_TAG = CONFIG + '[[sources.units.tags]]\nname = "state"\naddress = "hr:0"\n'
CSV_HEAD = "name,address,description\n"
WHERE = "sources[0].units[0].tags_file"


def limited(file_size: int | None = None) -> Callable[[], None]:
    """Limits for the child: 2 GiB of address space, and optionally a largest file it may write
    (writing past it fails with EFBIG instead of killing the process with SIGXFSZ)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return apply


def lineside(*args: str, file_size: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limited(file_size),
    )


def assert_refused(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [line]
    assert result.returncode == 2


def fifo(tmp_path: Path) -> str:
    path = tmp_path / "pipe"
    os.mkfifo(path)  # nothing ever writes: a read of it would wait for ever
    return str(path)


def sparse(tmp_path: Path, name: str, size: int) -> str:
    path = tmp_path / name
    with path.open("wb") as f:
        f.truncate(size)  # a hole: no disk used
    return str(path)


# (id, config text, {file: text}, the path `validate` gets, the one line expected)
# "{tmp}" stands for the test's folder; a "{fifo}" or "{big...}" file is made by the test.
VALIDATE: list[tuple[str, str, dict[str, str], str, str]] = [
    ("dev-zero", "", {}, "/dev/zero", "/dev/zero: is a character device, not a regular file"),
    (
        "dev-urandom",
        "",
        {},
        "/dev/urandom",
        "/dev/urandom: is a character device, not a regular file",
    ),
    ("fifo", "", {}, "{fifo}", "{fifo}: is a named pipe (FIFO), not a regular file"),
    ("directory", "", {}, "{tmp}", "{tmp}: is a directory, not a regular file"),
    (
        "toml-too-large",
        "",
        {},
        "{big_toml}",
        "{big_toml}: too large: 16,777,217 bytes (the limit is 16MiB)",
    ),
    (
        "toml-nested-arrays",
        "x = " + "[" * 100_000 + "]" * 100_000 + "\n" + WITH_TAG,
        {},
        "{tmp}/c.toml",
        "{tmp}/c.toml: nested too deeply: more than 64 levels of tables and arrays",
    ),
    (
        "toml-nested-inline-tables",
        "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n" + WITH_TAG,
        {},
        "{tmp}/c.toml",
        "{tmp}/c.toml: nested too deeply: more than 64 levels of tables and arrays",
    ),
    (
        "toml-nested-table-headers",
        WITH_TAG + "[" + ".".join(["t"] * 5000) + "]\n",
        {},
        "{tmp}/c.toml",
        "{tmp}/c.toml: nested too deeply: more than 64 levels of tables and arrays",
    ),
    (
        "tags-file-dev-zero",
        TAGS_FILE.format(tags="/dev/zero"),
        {},
        "{tmp}/c.toml",
        f"{{tmp}}/c.toml: {WHERE}: /dev/zero: is a character device, not a regular file",
    ),
    (
        "tags-file-dev-urandom",
        TAGS_FILE.format(tags="/dev/urandom"),
        {},
        "{tmp}/c.toml",
        f"{{tmp}}/c.toml: {WHERE}: /dev/urandom: is a character device, not a regular file",
    ),
    (
        "tags-file-fifo",
        TAGS_FILE.format(tags="pipe"),
        {},
        "{tmp}/c.toml",
        f"{{tmp}}/c.toml: {WHERE}: pipe: is a named pipe (FIFO), not a regular file",
    ),
    (
        "tags-file-too-large",
        TAGS_FILE.format(tags="big.csv"),
        {},
        "{tmp}/c.toml",
        f"{{tmp}}/c.toml: {WHERE}: big.csv: too large: 67,108,865 bytes (the limit is 64MiB)",
    ),
    (
        "csv-cell-too-long",
        TAGS_FILE.format(tags="tags.csv"),
        {"tags.csv": CSV_HEAD + "state,hr:0\nspeed,hr:1," + "x" * 200_000 + "\n"},
        "{tmp}/c.toml",
        "{tmp}/c.toml: tags.csv:3: cell longer than 131,072 characters",
    ),
    (
        "csv-unterminated-quote",
        TAGS_FILE.format(tags="tags.csv"),
        {"tags.csv": CSV_HEAD + 'state,hr:0,"Die state\nspeed,hr:1\nrate,hr:2\n'},
        "{tmp}/c.toml",
        "{tmp}/c.toml: tags.csv:2: unterminated quote: a quoted cell in this row never closes",
    ),
]


@pytest.mark.parametrize(
    ("config", "files", "argument", "expected"),
    [case[1:] for case in VALIDATE],
    ids=[case[0] for case in VALIDATE],
)
def test_validate_refuses_with_one_line(
    tmp_path: Path, config: str, files: dict[str, str], argument: str, expected: str
) -> None:
    names = {"tmp": str(tmp_path)}
    if "{fifo}" in argument or "pipe" in config:
        names["fifo"] = fifo(tmp_path)
    if "{big_toml}" in argument:
        names["big_toml"] = sparse(tmp_path, "big.toml", 16 * 1024**2 + 1)
    if "big.csv" in config:
        sparse(tmp_path, "big.csv", 64 * 1024**2 + 1)
    if config:
        (tmp_path / "c.toml").write_text(config, encoding="utf-8")
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    result = lineside("validate", argument.format(**names))
    assert_refused(result, expected.format(**names))


def test_validate_reads_a_toml_with_a_bom(tmp_path: Path) -> None:
    """Notepad saves UTF-8 with a BOM; TOML forbids one, lineside drops it as it does for CSV."""
    path = tmp_path / "c.toml"
    path.write_text("\ufeff" + WITH_TAG, encoding="utf-8")
    result = lineside("validate", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert '"press1"' in result.stdout


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real store with one reading a second from 2025-01-01T00:00:00Z."""
    folder = tmp_path_factory.mktemp("store")
    with Store(folder) as store:
        ids = store.register_tags([Tag.from_path("suzhou/stamping/line-1/press1/speed")])
    writer = StoreWriter(folder)
    tag = [ids["suzhou/stamping/line-1/press1/speed"]]
    for i in range(READINGS):
        writer.submit_readings(
            ReadingBatch.from_columns("plc1", tag, [float(i)], Quality.GOOD, T0 + i * 10**9)
        )
    writer.close()
    return folder


# (id, export arguments after --data, the one line expected)
EXPORT_REFUSED = [
    (
        "out-in-a-missing-folder",
        ["--out", "{tmp}/missing/x.csv"],
        "{tmp}/missing: no such folder for --out (export does not create one)",
    ),
    ("out-a-directory", ["--out", "{tmp}"], "{tmp}: cannot write: Is a directory"),
    (
        "from-after-to",
        ["--from", "2025-01-02", "--to", "2025-01-01"],
        "--from 2025-01-02 is not before --to 2025-01-01: that range holds no readings",
    ),
    (
        "from-equal-to",
        ["--from", "2025-01-01T00:00Z", "--to", "2025-01-01T00:00+00:00"],
        "--from 2025-01-01T00:00Z is not before --to 2025-01-01T00:00+00:00: "
        "that range holds no readings",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [case[1:] for case in EXPORT_REFUSED],
    ids=[case[0] for case in EXPORT_REFUSED],
)
def test_export_refuses_with_one_line(
    store_dir: Path, tmp_path: Path, arguments: list[str], expected: str
) -> None:
    given = [a.format(tmp=tmp_path) for a in arguments]
    result = lineside("export", "--data", str(store_dir), *given)
    assert_refused(result, expected.format(tmp=tmp_path))
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_export_to_dev_full_says_no_space(store_dir: Path) -> None:
    result = lineside("export", "--data", str(store_dir), "--out", "/dev/full")
    assert_refused(result, "/dev/full: cannot write: No space left on device")


def test_export_that_fails_leaves_the_old_file_and_no_cut_one(
    store_dir: Path, tmp_path: Path
) -> None:
    """A write that fails half way (here: past the process's file size limit, as on a full
    disk) leaves the file that was there, never a cut export that looks whole."""
    out = tmp_path / "out.csv"
    out.write_text("the previous export\n")
    result = lineside("export", "--data", str(store_dir), "--out", str(out), file_size=256 * 1024)
    assert_refused(result, f"{out}: cannot write: File too large")
    assert out.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--from", "0001-01-01"], READINGS),
        (["--from", "0001-01-01T00:00+14:00", "--to", "9999-12-31T23:59:59-12:00"], READINGS),
        (["--to", "1000-01-01"], 0),
        (["--from", "2025-01-01T00:01:00Z", "--to", "2025-01-01T00:02:00Z"], 60),
    ],
)
def test_export_clamps_times_outside_the_store_range(
    store_dir: Path, tmp_path: Path, arguments: list[str], expected: int
) -> None:
    out = tmp_path / "out.csv"
    result = lineside("export", "--data", str(store_dir), "--out", str(out), *arguments)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"{expected} readings exported (times read in UTC)"]
    assert len(out.read_text().splitlines()) == expected + 1  # and the header
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]

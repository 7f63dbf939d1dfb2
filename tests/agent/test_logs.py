"""The `[log]` section and the handlers it sets up (agent/logs.py)."""

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.logs import LogSection, configure
from agent.secrets import remember

MINIMAL = 'config_version = 1\n[agent]\nid = "edge"\n[plant]\nsite = "s"\n[web]\nenabled = false\n'


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers[:]:
        if getattr(handler, "lineside", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name in ("lineside.agent", "lineside.forward"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_the_file_rotates_by_size_and_keeps_its_backups(tmp_path: Path) -> None:
    file = tmp_path / "lineside.log"
    configure(LogSection.model_validate({"file": file, "max_size": "2kB", "backups": 2}))
    log = logging.getLogger("lineside.agent")
    for i in range(200):
        log.info("line %03d of a long enough message to fill the file", i)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["lineside.log", "lineside.log.1", "lineside.log.2"]
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    last = file.read_text().splitlines()[-1]
    assert last.endswith(" INFO lineside.agent: line 199 of a long enough message to fill the file")


def test_no_secret_reaches_the_log_file(tmp_path: Path) -> None:
    secret = "pw-in-the-file-4Kd9"
    remember(secret)
    file = tmp_path / "lineside.log"
    configure(LogSection(file=file))
    log = logging.getLogger("lineside.agent")
    log.warning("the broker said: bad password %s", secret)
    try:
        raise ConnectionError(f"refused {secret}")
    except ConnectionError:
        log.exception("connect failed")
    text = file.read_text()
    assert "bad password ***" in text
    assert "ConnectionError: refused ***" in text
    assert secret not in text


def test_levels_per_module(tmp_path: Path) -> None:
    file = tmp_path / "lineside.log"
    configure(LogSection(file=file, level="warning", modules={"lineside.forward": "debug"}))
    logging.getLogger("lineside.forward").debug("sent 200 records")
    logging.getLogger("lineside.agent").info("polling")
    logging.getLogger("lineside.agent").warning("link down")
    lines = file.read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "DEBUG lineside.forward: sent 200 records",
        "WARNING lineside.agent: link down",
    ]


def test_json_lines(tmp_path: Path) -> None:
    file = tmp_path / "lineside.log"
    configure(LogSection(file=file, format="json"))
    logging.getLogger("lineside.agent").warning('a "quoted"\nmessage')
    (line,) = file.read_text().splitlines()
    record = json.loads(line)
    assert record["level"] == "warning"
    assert record["logger"] == "lineside.agent"
    assert record["msg"] == 'a "quoted"\nmessage'
    assert record["ts"].endswith("Z")


def test_the_journal_gets_priorities_and_no_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w") as journal:
        st = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr(sys, "stderr", journal)
        configure(LogSection())
        logging.getLogger("lineside.agent").warning("link down")
        logging.getLogger("lineside.agent").info("link up")
    assert (tmp_path / "journal").read_text() == (
        "<4>lineside.agent: link down\n<6>lineside.agent: link up\n"
    )


def test_stderr_not_the_journal_gets_the_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    with (tmp_path / "err").open("w") as err:
        monkeypatch.setattr(sys, "stderr", err)
        configure(LogSection())
        logging.getLogger("lineside.agent").warning("link down")
    line = (tmp_path / "err").read_text()
    assert line.endswith("Z WARNING lineside.agent: link down\n")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('level = "loud"', "log.level: "),
        ('format = "xml"', "log.format: "),
        ("backups = 0", "log.backups: "),
        ('max_size = "lots"', "log.max_size: "),
        ('modules = { "lineside forward" = "debug" }', 'expected logger names like "lineside'),
        ('colour = "yes"', "colour"),
    ],
)
def test_bad_log_keys_are_one_line_each(tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(MINIMAL + f"[log]\n{section}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert len(caught.value.problems) == 1
    assert message in str(caught.value.problems[0])


def test_the_log_file_is_relative_to_the_config(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(MINIMAL + '[log]\nfile = "logs/lineside.log"\nmax_size = "5MB"\n')
    config = load_config(path)
    assert config.log.file == tmp_path / "logs" / "lineside.log"
    assert config.log.max_size == 5_000_000


def test_run_with_a_log_file_it_cannot_open_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(MINIMAL + '[log]\nfile = "missing/lineside.log"\n')
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(path), "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"[log] file: cannot open {tmp_path / 'missing' / 'lineside.log'}: "
        "No such file or directory"
    )


def test_run_writes_its_lines_to_the_log_file(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(MINIMAL + '[log]\nfile = "lineside.log"\n')
    result = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(path), "--duration", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "lineside.log").read_text()
    assert "INFO lineside.agent: agent edge: 0 sources" in text
    assert "INFO lineside.agent: agent edge: stopped, store drained" in text
    assert "agent edge" not in result.stderr  # info goes to the file only

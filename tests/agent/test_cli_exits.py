"""The CLI's one error path (agent/cli/exits.py): each kind of error, its lines and exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.exits import Refused, exits, explain, refusing, writing
from agent.errors import (
    AlreadyRunning,
    ConfigError,
    ConnectError,
    LinesideError,
    Problem,
    StoreError,
    StoreTooNew,
)
from agent.extras import MissingExtra


@pytest.mark.parametrize(
    ("error", "code", "lines"),
    [
        (Refused("one", "two"), 2, ["one", "two"]),
        (
            ConfigError([Problem("a.toml", "agent.id", "missing"), Problem("a.toml", "", "x")]),
            2,
            ["a.toml: agent.id: missing", "a.toml: x"],
        ),
        (
            MissingExtra("OPC UA", ("opcua",)),
            2,
            ["lineside: OPC UA needs the opcua extra: pip install 'lineside[opcua]'"],
        ),
        (AlreadyRunning("held by pid 7"), 2, ["lineside: held by pid 7"]),
        (StoreTooNew("schema 9 is newer"), 2, ["lineside: schema 9 is newer"]),
        (StoreError("damaged: move it aside"), 1, ["lineside: damaged: move it aside"]),
        (ConnectError("h:502: connection refused"), 1, ["lineside: h:502: connection refused"]),
    ],
)
def test_each_error_has_its_lines_and_code(
    error: Refused | LinesideError, code: int, lines: list[str]
) -> None:
    assert explain(error) == (code, lines)


def test_exits_prints_the_lines_on_stderr_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as raised, exits():
        raise StoreError("damaged")
    assert raised.value.exit_code == 1
    assert capsys.readouterr().err == "lineside: damaged\n"


def test_an_unforeseen_exception_is_not_dressed_as_lineside_s() -> None:
    with pytest.raises(ZeroDivisionError), exits():
        raise ZeroDivisionError


def test_refusing_makes_the_given_errors_bad_input() -> None:
    with pytest.raises(Refused) as raised, refusing(ValueError):
        raise ValueError("bad port")
    assert raised.value.lines == ("bad port",)
    with pytest.raises(KeyError), refusing(ValueError):
        raise KeyError("other")


def test_writing_says_which_file_cannot_be_written(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such.csv"
    with pytest.raises(Refused) as raised, writing(target):
        target.write_text("x")
    assert raised.value.lines == (f"{target}: cannot write: No such file or directory",)


def test_every_command_runs_inside_the_error_path(tmp_path: Path) -> None:
    """A config error in any command, run by typer itself (no `main`), is its lines and exit 2."""
    missing = tmp_path / "none.toml"
    for args in (["plan", "-c", str(missing)], ["fleet", "status", "-c", str(missing)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_unknown_protocol_is_one_line() -> None:
    result = CliRunner().invoke(app, ["discover", "bacnet", "host"])
    assert result.exit_code == 2
    assert "cannot discover 'bacnet': choose modbus, opcua, s7 or mc" in result.output

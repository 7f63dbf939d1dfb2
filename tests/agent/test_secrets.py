"""Passwords come from an environment variable or a file, never from the config itself."""

from pathlib import Path

import pytest

from agent.config import Credentials
from agent.errors import ConnectError
from agent.secrets import read_password


def test_no_password_configured_is_none() -> None:
    assert read_password(Credentials(username="op")) is None


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINESIDE_TEST_PW", "s3cret\n")
    assert read_password(Credentials(username="op", password_env="LINESIDE_TEST_PW")) == "s3cret\n"
    monkeypatch.delenv("LINESIDE_TEST_PW")
    with pytest.raises(ConnectError, match=r"^the password environment variable LINESIDE_TEST_PW"):
        read_password(Credentials(username="op", password_env="LINESIDE_TEST_PW"))


def test_from_a_file_without_the_editors_final_newline(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("pa ss\r\n", encoding="utf-8")
    assert read_password(Credentials(username="op", password_file=secret)) == "pa ss"
    with pytest.raises(ConnectError, match=r"cannot read the password file .*missing"):
        read_password(Credentials(username="op", password_file=tmp_path / "missing"))

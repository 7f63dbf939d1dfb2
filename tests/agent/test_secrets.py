"""Passwords come from an environment variable or a file, never from the config itself, and
lineside never writes one it has read."""

import base64
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from agent.config import Credentials
from agent.errors import ConnectError
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.secrets import MASK, Redactor, read_password, remember
from agent.status_file import STATUS_FILE, write_status
from agent.store import Store, StoreWriter


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


# -- redaction ----------------------------------------------------------------------------------


def test_a_secret_is_masked_with_its_encodings() -> None:
    redactor = Redactor()
    assert redactor.redact("nothing known yet: hunter2") == "nothing known yet: hunter2"
    redactor.remember("hunter2/x", user="op")
    pair = base64.b64encode(b"op:hunter2/x").decode()
    alone = base64.b64encode(b"hunter2/x").decode()
    url_safe = base64.urlsafe_b64encode(b"hunter2/x").decode().rstrip("=")
    text = (
        f"got hunter2/x, Basic {pair}, X-Api-Key {alone}, {url_safe}, "
        "?p=hunter2%2Fx and op (the user is no secret)"
    )
    assert redactor.redact(text) == (
        f"got {MASK}, Basic {MASK}, X-Api-Key {MASK}, {MASK}, ?p={MASK} and op (the user is no "
        "secret)"
    )


def test_a_short_secret_is_masked_only_where_it_stands_alone() -> None:
    redactor = Redactor()
    redactor.remember("ab1")
    assert redactor.redact("key ab1, (ab1) but not cab1 nor ab12") == (
        f"key {MASK}, ({MASK}) but not cab1 nor ab12"
    )
    redactor.remember("  \n")  # blank: nothing to mask
    assert redactor.redact("a b\n") == "a b\n"


def test_the_surrounding_whitespace_of_an_environment_value_is_no_part_of_it() -> None:
    redactor = Redactor()
    redactor.remember("s3cret-value\n")
    assert redactor.redact("'s3cret-value' and 's3cret-value\n'") == f"'{MASK}' and '{MASK}'"


def test_a_tree_is_redacted_into_a_copy() -> None:
    redactor = Redactor()
    figures: dict[str, Any] = {
        "sinks": [{"last_error": "HTTP 500: tok-9f8e7d", "failures": 3}],
        "n": (1, "x"),
    }
    assert redactor.redact_tree(figures) is figures  # nothing remembered: untouched
    redactor.remember("tok-9f8e7d")
    assert redactor.redact_tree(figures) == {
        "sinks": [{"last_error": f"HTTP 500: {MASK}", "failures": 3}],
        "n": (1, "x"),
    }
    assert figures["sinks"][0]["last_error"] == "HTTP 500: tok-9f8e7d"


def test_a_password_read_is_masked_in_every_log_handler(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "pw-in-the-log-7Hq2"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("lineside.test_secrets")
    logger.addHandler(handler)
    try:
        monkeypatch.setenv("LINESIDE_TEST_LOG_PW", secret)
        assert read_password(Credentials(username="op", password_env="LINESIDE_TEST_LOG_PW"))
        pair = base64.b64encode(f"op:{secret}".encode()).decode()
        with caplog.at_level(logging.INFO, logger="lineside.test_secrets"):
            logger.warning("the MES said: %s / Basic %s", secret, pair)
            try:
                raise ValueError(f"echoed {secret}")
            except ValueError:
                logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    for text in (stream.getvalue(), caplog.text):
        assert secret not in text and pair not in text
        assert f"the MES said: {MASK} / Basic {MASK}" in text
        assert f"ValueError: echoed {MASK}" in text


def test_status_file_stored_events_and_quarantine_reasons_are_masked(tmp_path: Path) -> None:
    """Where text leaves the process for good; each is masked on its own (the status page's
    state is masked the same way, and tests/integration/test_secret_redaction.py runs it all)."""
    secret = "echoed-by-the-far-side-8Kd1"
    remember(secret)
    write_status(tmp_path, {"sources": {"plc": {"link": {"last_error": f"login {secret}"}}}})
    assert json.loads((tmp_path / STATUS_FILE).read_text(encoding="utf-8")) == {
        "sources": {"plc": {"link": {"last_error": f"login {MASK}"}}}
    }
    with Store(tmp_path) as store:
        store.register_sinks(["mes"])
        writer = StoreWriter(tmp_path)
        event = Event(EventKind.CONNECTION, 1, None, {"detail": f"HTTP 500: {secret}"})
        writer.submit_event(event)
        writer.submit_readings(ReadingBatch.from_columns("plc", [1], [1.0], Quality.GOOD, 10))
        writer.submit_quarantine("mes", "telemetry", 1, f"HTTP 400: {{'x-api-key': '{secret}'}}")
        assert writer.flush_blocking(10)
        writer.close()
        [stored] = store.read_events(0, 10)
        assert stored.data == {"detail": f"HTTP 500: {MASK}"}
        [held] = store.quarantined("mes")
        assert held.reason == f"HTTP 400: {{'x-api-key': '{MASK}'}}"

"""Passwords, tokens and passphrases named by a config, and keeping them out of what we write.

The config holds only where a secret is (`password_env`, `password_file`, `token_env`,
`header_env`), never the secret, so `lineside validate` cannot show it. Every connector reads it
at connect time, here or through `remember`.

A far side may still echo a secret back: an MES that quotes the request's `Authorization` or
`X-Api-Key` header in its error page, which we then log, store as a quarantine reason and show
on the status page. So every secret read is remembered by the process-wide `Redactor`, and the
text lineside writes passes through it: every log record (a record factory, so every handler
sees the masked text, whoever set up logging), the stored events and quarantine reasons, the
sinks' `last_error`, `status.json` and the status page's state. Each secret is masked as itself,
its base64 forms (what basic auth and many APIs send) and, with a user name, the base64 of
`user:secret` (the basic-auth credentials).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from agent.errors import ConnectError

if TYPE_CHECKING:  # the store and status import this module; keep it free of pydantic
    from agent.config.fields import Credentials

MASK = "***"
# A secret shorter than this is masked only where it stands alone (not inside a longer word or
# number): masking every "ab" of a two-letter password would garble every log line.
SHORT = 4

T = TypeVar("T")


def secret_forms(secret: str, user: str | None = None) -> set[str]:
    """The ways `secret` may appear in text: itself, base64 (padded or not, standard or
    URL-safe), percent-encoded, and with `user` the base64 of basic auth's `user:secret`."""
    forms: set[str] = set()
    for value in {secret, secret.strip()}:
        if not value.strip():
            continue  # empty or blank: masking every space would garble all text
        forms.add(value)
        forms.add(quote(value, safe=""))
        encoded = [value.encode("utf-8")]
        if user is not None:
            encoded.append(f"{user}:{value}".encode())
        for raw in encoded:
            for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
                text = b64.decode("ascii")
                forms.update((text, text.rstrip("=")))
    return {form for form in forms if form}


def _pattern(forms: set[str]) -> re.Pattern[str] | None:
    if not forms:
        return None
    # Longest first, so a secret is masked whole rather than a shorter form inside it.
    parts = []
    for form in sorted(forms, key=lambda f: (-len(f), f)):
        escaped = re.escape(form)
        if len(form) < SHORT:
            escaped = rf"(?<![A-Za-z0-9]){escaped}(?![A-Za-z0-9])"
        parts.append(escaped)
    return re.compile("|".join(parts))


class Redactor:
    """Masks every remembered secret in text. Safe across threads: `remember` replaces one
    compiled pattern, which readers (the store's writer thread, log calls) use as they find it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: frozenset[str] = frozenset()
        self._compiled: re.Pattern[str] | None = None

    def remember(self, secret: str, user: str | None = None) -> None:
        forms = secret_forms(secret, user)
        with self._lock:
            if forms <= self._forms:
                return
            self._forms = self._forms | forms
            self._compiled = _pattern(set(self._forms))

    @property
    def active(self) -> bool:
        return self._compiled is not None

    def redact(self, text: str) -> str:
        compiled = self._compiled
        return text if compiled is None else compiled.sub(MASK, text)

    def redact_tree(self, value: T) -> T:
        """`value` with every string in it redacted; dicts, lists and tuples are copied (as
        plain ones), other values kept as they are."""
        if self._compiled is None:
            return value
        return self._tree(value)  # type: ignore[no-any-return]

    def _tree(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self._tree(k): self._tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._tree(v) for v in value]
        if isinstance(value, tuple):  # named tuples too: they end up as JSON arrays anyway
            return tuple(self._tree(v) for v in value)
        return value


REDACTOR = Redactor()  # the process's: every secret read anywhere is remembered here


def remember(secret: str, user: str | None = None) -> None:
    """Mask `secret` (and `user`'s basic-auth pair with it) in all lineside writes from now on."""
    REDACTOR.remember(secret, user)
    _install_log_redaction()


def redact(text: str) -> str:
    return REDACTOR.redact(text)


def redact_tree(value: T) -> T:
    return REDACTOR.redact_tree(value)


_installed = False
_install_lock = threading.Lock()
_FORMATTER = logging.Formatter()


def _install_log_redaction() -> None:
    """Mask secrets in every log record as it is made, whichever handlers then write it."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """`record` with its message, traceback and stack masked (formatted now, once)."""
    if not REDACTOR.active:
        return record
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a bad format string: logging reports it later
        message = None
    if message is not None:
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


def read_password(credentials: Credentials) -> str | None:
    """The password `credentials` point at (environment variable or file), or None."""
    if credentials.password_env is not None:
        value = os.environ.get(credentials.password_env)
        if value is None:
            raise ConnectError(
                f"the password environment variable {credentials.password_env} is not set"
            )
        remember(value, credentials.username)
        return value
    if credentials.password_file is not None:
        try:
            text = credentials.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConnectError(
                f"cannot read the password file {credentials.password_file}: {exc.strerror}"
            ) from None
        value = text.rstrip("\r\n")  # an editor's final newline is not part of the password
        remember(value, credentials.username)
        return value
    return None

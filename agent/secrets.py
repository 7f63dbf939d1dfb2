"""Passwords and passphrases named by a config: read from an environment variable or a file.

The config holds only where a secret is (`password_env`, `password_file`), never the secret, so
`lineside validate` and the logs cannot show it. Every connector reads it here, at connect time.
"""

from __future__ import annotations

import os

from agent.config import Credentials
from agent.errors import ConnectError


def read_password(credentials: Credentials) -> str | None:
    """The password `credentials` point at (environment variable or file), or None."""
    if credentials.password_env is not None:
        value = os.environ.get(credentials.password_env)
        if value is None:
            raise ConnectError(
                f"the password environment variable {credentials.password_env} is not set"
            )
        return value
    if credentials.password_file is not None:
        try:
            text = credentials.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConnectError(
                f"cannot read the password file {credentials.password_file}: {exc.strerror}"
            ) from None
        return text.rstrip("\r\n")  # an editor's final newline is not part of the password
    return None

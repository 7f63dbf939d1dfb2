"""The `[web]` section: where the status page, `/metrics` and the health endpoints listen.

This module imports nothing from `agent.config` (which imports it), only pydantic and the
duration type, so `lineside validate` stays as light as before.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from agent.duration import PositiveDuration
from agent.errors import LinesideError
from agent.secrets import remember

DEFAULT_PORT = 8470
# One DNS name: labels of letters, digits, `-` and `_` (some plant networks use it), dot-joined.
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


class TokenError(LinesideError):
    """The configured token cannot be read (variable unset, file missing or empty)."""


class WebError(LinesideError):
    """The status page cannot be served (port in use, address not available)."""


def is_loopback(host: str) -> bool:
    """True when `host` only reaches this machine (127.0.0.0/8, ::1 or "localhost")."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as remote


def _check_bind(value: str) -> str:
    if value != "localhost":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                f'expected an IP address like "127.0.0.1" or "0.0.0.0", got {value!r}'
            ) from None
    return value


def canonical_host(value: str) -> str | None:
    """A host name lower-cased, or an IP address in its short form; None when it is neither.

    The Host header check and `allowed_hosts` compare in this form, so `[0:0::1]` is `::1`."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        name = value.lower()
        return name if HOST_NAME.fullmatch(name) else None


def _check_host(value: str) -> str:
    host = canonical_host(value)
    if host is None:
        raise ValueError(
            f'expected a host name like "line3-edge.plant.local" or an IP address, without '
            f"scheme or port, got {value!r}"
        )
    return host


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return value if base is None else Path(base) / value


def _at_key(key: str, message: str) -> PydanticCustomError:
    # The config loader reports this error type at `web.<key>` (see agent.config.key_error).
    return PydanticCustomError("at_key", "{message}", {"key": key, "message": message})


class WebSection(BaseModel):
    """`[web]`: the status page and its endpoints (see docs/status-page.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    bind: Annotated[str, AfterValidator(_check_bind)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_PORT  # 0: any free port (tests)
    # Where the access token comes from; never the token itself (it would end up in backups).
    token_env: str | None = None
    token_file: Annotated[Path, AfterValidator(_relative_to_config)] | None = None
    # /readyz reports a sink as failing once its oldest unsent record is older than this.
    sink_max_unsent_age: PositiveDuration = 300.0
    # A client that has not sent its whole request head by then is closed (slowloris).
    head_timeout: PositiveDuration = 5.0
    # /api/events streams at once (one per open page); more are refused with 503.
    max_event_streams: Annotated[int, Field(ge=1, le=256)] = 32
    # Names the page answers to besides localhost, loopback addresses and the address a client
    # connected to: a browser sends the name it resolved, so a DNS-rebound name is refused.
    allowed_hosts: tuple[Annotated[str, AfterValidator(_check_host)], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _no_literal_token(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token" in data:
            raise _at_key(
                "token", "a token in the config file is refused: use token_env or token_file"
            )
        return data

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> Self:
        if self.token_env is not None and self.token_file is not None:
            raise _at_key("token_file", "use either token_env or token_file, not both")
        if self.enabled and not is_loopback(self.bind) and not (self.token_env or self.token_file):
            raise _at_key(
                "bind",
                f"{self.bind} is reachable from other machines: set token_env or token_file "
                "so the page asks for a token (or bind 127.0.0.1)",
            )
        return self

    def token(self) -> str | None:
        """The access token, read now; None when none is configured. Raises TokenError."""
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise TokenError(f"[web] token_env: environment variable {self.token_env} is unset")
        elif self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TokenError(
                    f"[web] token_file: cannot read {self.token_file}: {exc.strerror}"
                ) from None
            if not value:
                raise TokenError(f"[web] token_file: {self.token_file} is empty")
        else:
            return None
        remember(value)  # never written by lineside, whoever echoes it
        return value

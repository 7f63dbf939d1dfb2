"""Config model of the HTTP sink (batched JSON POSTs to an MES).

No HTTP client library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, StrictBool, field_validator, model_validator

from agent.config import STRICT, ConfigPath, Credentials, Name, key_error
from agent.duration import PositiveDuration


class HttpSinkConfig(Credentials):
    """Where the MES listens and how to log in: a bearer token or basic auth, never both.

    Basic auth comes from the inherited `username` + `password_env` / `password_file`; a
    literal password in the file is refused. TLS certificates are verified unless `verify` is
    false; `ca_file` adds a private CA (a plant's own MES certificate) instead of the system's.
    """

    model_config = STRICT

    type: Literal["http"]
    name: Name
    url: str
    timeout: PositiveDuration = 10.0
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 500
    token_env: str | None = None  # bearer token, read from this environment variable
    headers: dict[str, str] = Field(default_factory=dict)
    # Strict: a lax bool would read verify = "no" or "0" as false and switch TLS checks off.
    verify: StrictBool = True  # check the MES's TLS certificate (https:// only)
    ca_file: ConfigPath | None = None  # PEM bundle to trust instead of the system's store

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value:
            if header.lower() == "authorization":
                raise ValueError(
                    "a literal Authorization header is refused: use token_env "
                    "(an environment variable)"
                )
        return value

    @model_validator(mode="after")
    def _one_auth_and_coherent_tls(self) -> Self:
        if self.token_env is not None and self.username is not None:
            raise key_error("token_env", "use either token_env or username (basic auth), not both")
        if self.username is not None and self.password_env is None and self.password_file is None:
            raise key_error("password_env", "basic auth needs password_env or password_file")
        if self.ca_file is not None and not self.verify:
            raise key_error("ca_file", "ca_file is only used when verify is true")
        return self

    @property
    def endpoint(self) -> str:
        return self.url

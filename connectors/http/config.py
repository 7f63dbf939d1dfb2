"""Config model of the HTTP sink (batched JSON POSTs to an MES).

No HTTP client library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, StrictBool, ValidationInfo, field_validator, model_validator

from agent.config import STRICT, ConfigPath, Credentials, Name, key_error
from agent.duration import PositiveDuration

# Query parameters and headers whose value is a secret: they belong in an environment variable,
# not in a config file that ends up in backups, `validate`, the log and the status page.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_WORDS = ("token", "secret", "password", "passwd", "apikey", "api-key", "api_key")
_SECRET_PARAMS = frozenset({"key", "auth", "sig", "signature", "pwd", "pass"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110 token)
USERINFO_REFUSED = (
    "a user name or password in the url is refused: set username with password_env or "
    "password_file (basic auth), or token_env (bearer token)"
)


def parameter_refused(name: str) -> str:
    return (
        f"the query parameter {name!r} looks like a secret and is refused: send it as a header "
        f'from an environment variable, header_env = {{ X-Api-Key = "MES_API_KEY" }}, '
        "or use token_env (bearer token)"
    )


def header_refused(name: str) -> str:
    if name.lower() in ("authorization", "proxy-authorization"):
        how = "use token_env (bearer token), username with password_env (basic auth), or header_env"
    else:
        how = f'read it from an environment variable: header_env = {{ {name} = "ENV_VAR" }}'
    return f"the header {name} looks like a secret and is refused in the config file: {how}"


def secret_looking_header(name: str) -> bool:
    """Authorization, Cookie, X-Api-Key, Api-Key, X-Auth-..., *token*, *secret*, *password*."""
    lowered = name.lower()
    return (
        lowered in _SECRET_HEADERS
        or lowered.endswith(("-key", "_key"))
        or lowered == "key"
        or "auth" in lowered
        or any(word in lowered for word in _SECRET_WORDS)
    )


def secret_looking_parameter(name: str) -> bool:
    """api_key, apikey, key, token, access_token, password, secret, sig, ... (any case)."""
    lowered = name.lower().replace("-", "_")
    return (
        lowered in _SECRET_PARAMS
        or lowered.endswith("_key")
        or any(word in lowered for word in _SECRET_WORDS)
    )


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
    headers: dict[str, str] = Field(default_factory=dict)  # plain, non-secret headers
    # Secret headers: header name -> the environment variable its value is read from.
    header_env: dict[str, str] = Field(default_factory=dict)
    # Strict: a lax bool would read verify = "no" or "0" as false and switch TLS checks off.
    verify: StrictBool = True  # check the MES's TLS certificate (https:// only)
    ca_file: ConfigPath | None = None  # PEM bundle to trust instead of the system's store

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # Secrets first: the format message below quotes the url.
        parts = urlsplit(value)
        if "@" in parts.netloc:
            raise ValueError(USERINFO_REFUSED)
        for name, _ in parse_qsl(parts.query, keep_blank_values=True):
            if secret_looking_parameter(name):
                raise ValueError(parameter_refused(name))
        if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for header in value:
            if secret_looking_header(header):
                raise key_error(header, header_refused(header))
        return value

    @field_validator("headers", "header_env")
    @classmethod
    def _header_names(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        for header, text in value.items():
            if not _TOKEN.fullmatch(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if info.field_name == "header_env" and not text.strip():
                raise key_error(header, "expected the name of an environment variable")
        return value

    @model_validator(mode="after")
    def _one_auth_and_coherent_tls(self) -> Self:
        if self.token_env is not None and self.username is not None:
            raise key_error("token_env", "use either token_env or username (basic auth), not both")
        if self.username is not None and self.password_env is None and self.password_file is None:
            raise key_error("password_env", "basic auth needs password_env or password_file")
        if self.ca_file is not None and not self.verify:
            raise key_error("ca_file", "ca_file is only used when verify is true")
        plain = {h.lower() for h in self.headers}
        for header in self.header_env:
            if header.lower() in plain:
                raise key_error(
                    f"header_env.{header}", f"{header} is also in headers: set it in one place"
                )
            if header.lower() == "authorization" and (self.token_env or self.username):
                raise key_error(
                    f"header_env.{header}",
                    "Authorization comes from token_env or username already: set it in one place",
                )
        return self

    @property
    def endpoint(self) -> str:
        return self.url

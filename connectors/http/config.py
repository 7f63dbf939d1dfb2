"""Config model of the HTTP sink (batched JSON POSTs to an MES).

No HTTP client library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from agent.config import STRICT, Name
from agent.duration import PositiveDuration


class HttpSinkConfig(BaseModel):
    model_config = STRICT

    type: Literal["http"]
    name: Name
    url: str
    timeout: PositiveDuration = 10.0
    batch_size: Annotated[int, Field(ge=1, le=10000)] = 500
    token_env: str | None = None  # bearer token, read from this environment variable
    headers: dict[str, str] = Field(default_factory=dict)

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

    @property
    def endpoint(self) -> str:
        return self.url

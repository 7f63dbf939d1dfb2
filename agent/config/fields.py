"""The building blocks every config model shares, the connectors' included: strict models, names,
deadbands, paths relative to the config file, credentials and errors reported at one key.

It imports no connector and no other part of `agent.config`, so the connectors' config modules
can build on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Every config model: unknown keys are errors (typos must not pass silently), values immutable.
STRICT = ConfigDict(extra="forbid", frozen=True)

Loc = tuple[str | int, ...]
T = TypeVar("T")


def key_error(key: str, message: str) -> PydanticCustomError:
    """An error a model validator raises about one of its keys (reported at `...<model>.<key>`)."""
    return PydanticCustomError("at_key", "{message}", {"key": key, "message": message})


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_name(value: str) -> str:
    """Names end up in MQTT topics and tag paths: letters, digits, `_` and `-` only."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"names may use only letters, digits, '_' and '-', got {value!r}")
    return value


Name = Annotated[str, AfterValidator(check_name)]


@dataclass(frozen=True, slots=True)
class Deadband:
    """Report a value only when it moved by `amount` (absolute) or `amount` % of the last one."""

    amount: float
    relative: bool = False

    def __str__(self) -> str:
        return f"{self.amount:g}%" if self.relative else f"{self.amount:g}"


def parse_deadband(value: object) -> Deadband:
    if isinstance(value, Deadband):
        return value
    relative = False
    if isinstance(value, str):
        text = value.strip()
        relative = text.endswith("%")
        try:
            amount = float(text.removesuffix("%"))
        except ValueError:
            raise ValueError(
                f'expected a number (absolute) or a percentage like "2%", got {value!r}'
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        amount = float(value)
    else:
        raise ValueError(f'expected a number (absolute) or a percentage like "2%", got {value!r}')
    if amount < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return Deadband(amount, relative)


DeadbandField = Annotated[Deadband, PlainValidator(parse_deadband), PlainSerializer(str)]


def shared_tags(value: T, info: ValidationInfo) -> T:
    """The first equal `value` validated in this load, for a unit's tuple of (frozen) tag models.

    Units that read the same tags_file hold equal tags; sharing one tuple keeps one set of tag
    models in the running agent's memory instead of one per unit (at 200 PLCs x 100 tags, 15 MB
    of models). Equality is all anything compares them by (a reload, the checks), so nothing
    can tell the difference.
    """
    context = info.context
    if not isinstance(context, dict):
        return value
    pool: dict[object, object] = context.setdefault("shared_tags", {})
    try:
        return cast(T, pool.setdefault(value, value))
    except TypeError:  # an unhashable value: keep it as it is
        return value


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    # Paths in a config mean "next to the config file", whatever the working directory.
    base = (info.context or {}).get("base_dir")
    return value if base is None else Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]

LITERAL_PASSWORD = (
    "a password in the config file is refused: "
    "use password_env (an environment variable) or password_file"
)


class Credentials(BaseModel):
    """User name and where its password comes from; never the password itself."""

    model_config = STRICT

    username: str | None = None
    password_env: str | None = None
    password_file: ConfigPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise key_error("password", LITERAL_PASSWORD)
        return data

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if self.password_env is not None and self.password_file is not None:
            raise key_error("password_file", "use either password_env or password_file, not both")
        if self.username is None and (self.password_env or self.password_file):
            raise key_error("username", "a password is set but no username")
        return self

"""Config model of the MELSEC MC protocol source (`type = "mc"`): one PLC, its tags.

No protocol library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    field_validator,
    model_validator,
)

from agent.config import STRICT, DeadbandField, Name, key_error
from agent.config.fields import shared_tags
from agent.config.protocols import OneMachineSource
from agent.duration import PositiveDuration
from agent.model import DATA_TYPES, DataType
from connectors.mc.address import McAddress, check_series, check_tag, parse_address
from connectors.mc.frame import MAX_BATCH_WORDS, MAX_RANDOM_POINTS, Series

WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
# The names a GX Works programmer uses for the same types.
TYPE_ALIASES = {
    "word": "uint16",
    "int": "int16",
    "dword": "uint32",
    "dint": "int32",
    "real": "float32",
    "lreal": "float64",
}


def _address(value: object) -> McAddress:
    if isinstance(value, McAddress):
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected an address like "D100" or "M10", got {value!r}')
    return parse_address(value)


AddressField = Annotated[McAddress, PlainValidator(_address), PlainSerializer(str)]


class McTag(BaseModel):
    """One value in the PLC's device memory."""

    model_config = STRICT

    name: Name
    address: AddressField
    # Defaults to bool on bit devices and word bits, int16 on words (a PLC's INT).
    type: DataType = "int16"
    # Word order of 32/64-bit values, A the most significant byte: CDAB (low word first) is how
    # a MELSEC CPU stores a DINT, REAL or LREAL.
    order: WordOrder = "CDAB"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    deadband: DeadbandField | None = None
    length: Annotated[int, Field(ge=1)] | None = None  # characters, strings only
    description: str = ""
    interval: PositiveDuration | None = None  # its own poll group

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data:
            try:
                address = _address(data.get("address"))
            except ValueError:
                return data  # reported on the address itself
            if address.is_bit_device or address.bit is not None:
                return {**data, "type": "bool"}
        return data

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = TYPE_ALIASES.get(value.lower(), value)
            if value not in DATA_TYPES:
                known = ", ".join([*DATA_TYPES, *TYPE_ALIASES])
                raise ValueError(f"unknown data type {value!r} (known: {known})")
        return value

    @field_validator("order", mode="before")
    @classmethod
    def _known_order(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in WORD_ORDERS:
            return value.upper()
        if isinstance(value, str):
            raise ValueError(f"unknown word order {value!r} (known: {', '.join(WORD_ORDERS)})")
        return value

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must not be 0 (every value would read 0)")
        return value

    @model_validator(mode="after")
    def _fits(self) -> Self:
        problem = check_tag(self.address, self.type, self.length)
        if problem is not None:
            raise key_error(*problem)
        return self


class McSourceConfig(OneMachineSource, BaseModel):
    """A MELSEC PLC (FX5, Q/L, iQ-R) on an open MC protocol port."""

    model_config = STRICT

    type: Literal["mc"]
    name: Name
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 5007
    series: Literal["fx5", "q", "iqr"] = "q"
    code: Literal["binary", "ascii"] = "binary"
    frame: Literal["3e", "4e"] = "3e"
    # Routing: the defaults address the CPU the port belongs to.
    network: Annotated[int, Field(ge=0, le=255)] = 0
    pc: Annotated[int, Field(ge=0, le=255)] = 0xFF
    module_io: Annotated[int, Field(ge=0, le=0xFFFF)] = 0x03FF
    station: Annotated[int, Field(ge=0, le=255)] = 0
    timeout: PositiveDuration = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1  # after a "busy" end code only
    max_in_flight: Annotated[int, Field(ge=1, le=16)] = 1
    max_words_per_read: Annotated[int, Field(ge=1, le=MAX_BATCH_WORDS)] = MAX_BATCH_WORDS
    max_gap: Annotated[int, Field(ge=0, le=MAX_BATCH_WORDS)] = 10  # words bridged when merging
    # Points per random read (0403); 0 turns random reads off.
    max_random_points: Annotated[int, Field(ge=0, le=MAX_RANDOM_POINTS)] = MAX_RANDOM_POINTS
    machine: Name
    poll_interval: PositiveDuration = 1.0
    tags_file: Path | None = None  # read by the loader into `tags`
    tags: Annotated[tuple[McTag, ...], AfterValidator(shared_tags)] = ()  # one per tags_file

    @model_validator(mode="after")
    def _tags_fit_series(self) -> Self:
        if not self.tags and self.tags_file is None:
            raise key_error("tags", "no tags: add a tags = [...] list or a tags_file")
        series = Series(self.series)
        for j, tag in enumerate(self.tags):
            problem = check_series(tag.address, tag.type, series)
            if problem is not None:
                raise key_error(f"tags[{j}].address", problem)
        return self

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def tags_of(self, machine: str) -> tuple[McTag, ...]:
        return self.tags if machine == self.machine else ()

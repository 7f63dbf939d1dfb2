"""Config model of an S7 source: one CPU (connection by rack/slot or TSAP) and its tags.

No protocol library is imported here: `lineside validate` must stay light (snap7 is loaded by
the runtime only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)

from agent.config import STRICT, DeadbandField, Name, key_error
from agent.config.fields import shared_tags
from agent.config.protocols import OneMachineSource
from agent.duration import Duration, PositiveDuration
from agent.model import DataType
from connectors.s7.address import S7Address, parse_address


def _address(value: object) -> S7Address:
    if isinstance(value, S7Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f'expected an address like "DB1.DBD0:REAL" or "MW10", got {value!r}')
    return parse_address(value)


AddressField = Annotated[S7Address, PlainValidator(_address), PlainSerializer(str)]

_TSAP = re.compile(r"(?:0x)?([0-9a-f]{1,2})\.?([0-9a-f]{2})", re.IGNORECASE)


def _tsap(value: object) -> int:
    """A TSAP as TIA Portal shows it ("03.01", "10.02") or as a number (0x0301, 769)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF:
        return value
    if isinstance(value, str) and (m := _TSAP.fullmatch(value.strip())):
        return int(m.group(1), 16) << 8 | int(m.group(2), 16)
    raise ValueError(
        f'expected a TSAP like "03.01" (as TIA Portal shows it) or 0x0301, got {value!r}'
    )


def format_tsap(value: int) -> str:
    return f"{value >> 8:02X}.{value & 0xFF:02X}"


Tsap = Annotated[
    int, PlainValidator(_tsap), PlainSerializer(lambda v: f"{v >> 8:02X}.{v & 0xFF:02X}")
]


class S7Tag(BaseModel):
    """One value in the CPU's memory; its type is part of the address (`DB1.DBD0:REAL`)."""

    model_config = STRICT

    name: Name
    address: AddressField
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    deadband: DeadbandField | None = None
    description: str = ""
    interval: PositiveDuration | None = None  # its own poll group, instead of the source's

    @property
    def type(self) -> DataType | None:
        """None: the address tells the CPU's type at run time, and values travel as float64
        (what `TagModel` asks of every tag; `agent.tags.config_tags` reads it)."""
        return None

    @model_validator(mode="before")
    @classmethod
    def _type_in_address(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" in data:
            raise key_error(
                "type", 'an S7 tag\'s type is part of its address: write "DB1.DBD0:REAL"'
            )
        return data

    @model_validator(mode="after")
    def _scale_not_zero(self) -> Self:
        if self.scale == 0:
            raise key_error("scale", "must not be 0 (every value would read 0)")
        return self


class S7SourceConfig(OneMachineSource, BaseModel):
    """`type = "s7"`: one S7-300/400/1200/1500 (or S7-200 SMART) CPU over ISO-on-TCP."""

    model_config = STRICT

    type: Literal["s7"]
    name: Name
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 102
    rack: Annotated[int, Field(ge=0, le=7)] = 0
    slot: Annotated[int, Field(ge=0, le=31)] = 1
    # Instead of rack/slot (a LOGO!, an S7-200 SMART, a CP): the TSAPs the PLC's connection
    # is configured with.
    local_tsap: Tsap | None = None
    remote_tsap: Tsap | None = None
    pdu_size: Literal[240, 480, 960] = 480  # asked for; the CPU may grant less
    timeout: PositiveDuration = 1.0
    max_gap: Annotated[int, Field(ge=0, le=256)] = 16  # bytes bridged inside a DB or area
    max_items: Annotated[int, Field(ge=1, le=20)] = 20  # items in one multi-read request
    state_check: Duration = 10.0  # how often RUN/STOP is asked (0: never)
    machine: Name
    poll_interval: PositiveDuration = 1.0
    tags_file: Path | None = None  # read by the loader into `tags`
    tags: Annotated[tuple[S7Tag, ...], AfterValidator(shared_tags)] = ()  # one per tags_file

    @model_validator(mode="after")
    def _connection(self) -> Self:
        if not self.tags and self.tags_file is None:
            raise key_error("tags", "no tags: add [[sources.tags]] entries or a tags_file")
        if (self.local_tsap is None) != (self.remote_tsap is None):
            missing = "remote_tsap" if self.remote_tsap is None else "local_tsap"
            raise key_error(missing, "give both local_tsap and remote_tsap, or neither")
        if self.remote_tsap is not None and {"rack", "slot"} & self.model_fields_set:
            raise key_error("remote_tsap", "use either rack and slot or the TSAPs, not both")
        return self

    @property
    def endpoint(self) -> str:
        if self.remote_tsap is not None:
            return f"{self.host}:{self.port} TSAP {format_tsap(self.remote_tsap)}"
        return f"{self.host}:{self.port} rack {self.rack} slot {self.slot}"

    @property
    def tsaps(self) -> tuple[int, int]:
        """(local, remote) TSAP: configured, or the PG connection to rack/slot."""
        if self.local_tsap is not None and self.remote_tsap is not None:
            return self.local_tsap, self.remote_tsap
        return 0x0100, 0x0100 | (self.rack << 5) | self.slot

    def tags_of(self, machine: str) -> tuple[S7Tag, ...]:
        return self.tags if machine == self.machine else ()

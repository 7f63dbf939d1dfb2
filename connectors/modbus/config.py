"""Config models of the Modbus sources (TCP and RTU): connection, units, and tags.

No protocol library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
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

from agent.config import STRICT, DeadbandField, Loc, Name, key_error
from agent.config.fields import shared_tags
from agent.duration import Duration, PositiveDuration
from agent.model import DATA_TYPES, DataType
from agent.source import WriteTarget
from connectors.modbus.address import ModbusAddress, check_tag, parse_address

WORD_ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]


def _address(value: object) -> ModbusAddress:
    if isinstance(value, ModbusAddress):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected an address like "hr:100" or 40101, got {value!r}')
    return parse_address(value)


AddressField = Annotated[ModbusAddress, PlainValidator(_address), PlainSerializer(str)]


class ModbusTag(BaseModel):
    """One value in a unit's register map."""

    model_config = STRICT

    name: Name
    address: AddressField
    # Defaults to bool on coils, discrete inputs and register bits, uint16 on registers.
    type: DataType = "uint16"
    order: WordOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    deadband: DeadbandField | None = None
    length: Annotated[int, Field(ge=1)] | None = None  # characters, strings only
    description: str = ""
    interval: PositiveDuration | None = None  # its own poll group, instead of the unit's

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and "type" not in data:
            try:
                address = _address(data.get("address"))
            except ValueError:
                return data  # reported on the address itself
            if address.table.is_bits or address.bit is not None:
                return {**data, "type": "bool"}
        return data

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in DATA_TYPES:
            raise ValueError(f"unknown data type {value!r} (known: {', '.join(DATA_TYPES)})")
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


class ModbusUnit(BaseModel):
    """One unit id on a link: one machine's PLC (or one slave on a serial bus)."""

    model_config = STRICT

    unit_id: Annotated[int, Field(ge=0, le=255)]
    machine: Name
    # "0s": back to back, each poll as soon as the previous one of the link ended.
    poll_interval: Duration = 1.0
    tags_file: Path | None = (
        None  # read by the loader into `tags`; kept to say where they came from
    )
    tags: Annotated[tuple[ModbusTag, ...], AfterValidator(shared_tags)] = ()

    @model_validator(mode="after")
    def _has_tags(self) -> Self:
        if not self.tags and self.tags_file is None:
            raise key_error("tags", "no tags: add [[sources.units.tags]] entries or a tags_file")
        return self


class _ModbusSource(BaseModel):
    """What TCP and RTU sources share: units and how requests are planned."""

    model_config = STRICT

    name: Name
    timeout: PositiveDuration = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1
    max_registers_per_read: Annotated[int, Field(ge=1, le=125)] = 125
    max_bits_per_read: Annotated[int, Field(ge=1, le=2000)] = 2000
    # Unused registers read through to merge two reads (16 times as many bits in the bit
    # tables: the same bytes on the wire). On TCP a round trip costs more than any gap one
    # request can span, so it bridges all of them; on a serial bus each byte costs bus time.
    max_gap: Annotated[int, Field(ge=0, le=124)] = 10
    units: tuple[ModbusUnit, ...]

    @model_validator(mode="after")
    def _unique_units(self) -> Self:
        if not self.units:
            raise key_error("units", "no units: add a [[sources.units]] table")
        seen: set[int] = set()
        for i, unit in enumerate(self.units):
            if unit.unit_id in seen:
                raise key_error(f"units[{i}].unit_id", f"duplicate unit_id {unit.unit_id}")
            seen.add(unit.unit_id)
        return self

    def unit_ids(self) -> tuple[int, ...]:
        return tuple(u.unit_id for u in self.units)

    def machines(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(u.machine for u in self.units))

    def tags_of(self, machine: str) -> tuple[ModbusTag, ...]:
        return tuple(t for u in self.units if u.machine == machine for t in u.tags)

    def poll_intervals(self) -> tuple[float, ...]:
        found = {u.poll_interval for u in self.units}
        found |= {t.interval for u in self.units for t in u.tags if t.interval is not None}
        return tuple(sorted(found))

    def poll_groups(self) -> tuple[tuple[float, int], ...]:
        groups: list[tuple[float, int]] = []
        for unit in self.units:
            readings = Counter(
                unit.poll_interval if t.interval is None else t.interval for t in unit.tags
            )
            groups.extend(sorted(readings.items()))
        return tuple(groups)

    def machine_refs(self) -> Iterator[tuple[Loc, str]]:
        for i, unit in enumerate(self.units):
            yield ("units", i, "machine"), unit.machine

    def tag_places(self) -> Iterator[tuple[Loc, str, str]]:
        for i, unit in enumerate(self.units):
            for j, tag in enumerate(unit.tags):
                yield ("units", i, "tags", j), unit.machine, tag.name


class ModbusTcpSourceConfig(_ModbusSource):
    type: Literal["modbus_tcp"]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    inter_request_delay: Duration = 0.0
    max_in_flight: Annotated[int, Field(ge=1, le=16)] = 1
    max_gap: Annotated[int, Field(ge=0, le=124)] = 124

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def write_target(self, machine: str) -> WriteTarget | None:
        """Where the agent writes verdicts of `machine` (agent.source.WritesToPlc)."""
        unit = next((u for u in self.units if u.machine == machine), None)
        return None if unit is None else WriteTarget(self.host, self.port, unit.unit_id)


class ModbusRtuSourceConfig(_ModbusSource):
    type: Literal["modbus_rtu"]
    port: Annotated[str, Field(min_length=1)]  # the serial device, e.g. /dev/ttyUSB0
    baudrate: Annotated[int, Field(ge=300, le=921600)] = 19200
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    # Pause between one answer and the next request; the spec's t3.5 is 2 ms at 19200 baud,
    # but many field devices need far more.
    frame_pause: Duration = 0.03

    @model_validator(mode="after")
    def _serial_unit_ids(self) -> Self:
        for i, unit in enumerate(self.units):
            if not 1 <= unit.unit_id <= 247:
                raise key_error(
                    f"units[{i}].unit_id",
                    f"serial unit ids run 1..247 (0 is broadcast), got {unit.unit_id}",
                )
        return self

    @property
    def endpoint(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

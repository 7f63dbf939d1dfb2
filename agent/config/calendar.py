"""The plant calendar in a config: its zone, days off and shifts with their breaks
(`[calendar]`; agent/kpi/calendar.py turns it into windows)."""

from __future__ import annotations

from datetime import date, time
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, field_validator, model_validator

from agent.config.fields import STRICT, Name, key_error

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


class Break(BaseModel):
    model_config = STRICT

    start: time
    end: time


class Shift(BaseModel):
    model_config = STRICT

    name: Name
    start: time
    end: time  # earlier than start: the shift crosses midnight
    days: tuple[Weekday, ...] = WEEKDAYS
    breaks: tuple[Break, ...] = ()

    @property
    def minutes(self) -> int:
        return (_minutes(self.end) - _minutes(self.start)) % 1440

    @model_validator(mode="after")
    def _breaks_inside(self) -> Self:
        if self.start == self.end:
            raise key_error("end", "a shift needs a length: start and end are equal")
        for i, brk in enumerate(self.breaks):
            # Measure from the shift start so shifts across midnight need no special case.
            begin = (_minutes(brk.start) - _minutes(self.start)) % 1440
            finish = (_minutes(brk.end) - _minutes(self.start)) % 1440
            if brk.start == brk.end or finish <= begin or finish > self.minutes:
                raise key_error(
                    f"breaks[{i}]",
                    f"break {brk.start:%H:%M}-{brk.end:%H:%M} is not within the shift "
                    f"{self.start:%H:%M}-{self.end:%H:%M}",
                )
        return self


class Calendar(BaseModel):
    model_config = STRICT

    timezone: str
    days_off: tuple[date, ...] = ()
    shifts: tuple[Shift, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f'unknown time zone {value!r}: use an IANA name like "Asia/Shanghai"'
            ) from None
        return value

    @model_validator(mode="after")
    def _unique_shifts(self) -> Self:
        seen: set[str] = set()
        for i, shift in enumerate(self.shifts):
            if shift.name in seen:
                raise key_error(f"shifts[{i}].name", f"duplicate shift name {shift.name!r}")
            seen.add(shift.name)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

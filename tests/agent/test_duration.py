"""Durations with units: good spellings, and the bad ones refused with a plain message."""

import pytest
from pydantic import BaseModel, ValidationError

from agent.duration import Duration, PositiveDuration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("100us", 0.0001),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("0s", 0.0),
        ("-2s", -2.0),
    ],
)
def test_parse_good(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", 'durations need a unit, e.g. "500ms" or "5s", got \'5\''),
        ("0.5", 'durations need a unit, e.g. "500ms" or "5s", got \'0.5\''),
        ("", 'empty duration; durations need a unit, e.g. "500ms" or "5s"'),
        (
            "5 sec",
            "bad duration '5 sec': write a number and a unit (us, ms, s, m, h, d), e.g. \"500ms\"",
        ),
        ("ms", "bad duration 'ms': write a number and a unit (us, ms, s, m, h, d), e.g. \"500ms\""),
        ("1w", "bad duration '1w': write a number and a unit (us, ms, s, m, h, d), e.g. \"500ms\""),
    ],
)
def test_parse_bad(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


class Timing(BaseModel):
    delay: Duration = 0.0
    period: PositiveDuration = 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"period": 5}, 'durations need a unit, e.g. "500ms" or "5s", got 5'),
        ({"period": 0.5}, 'durations need a unit, e.g. "500ms" or "5s", got 0.5'),
        ({"period": "0s"}, "must be more than zero, got '0s'"),
        ({"period": "-1s"}, "must not be negative, got '-1s'"),
        ({"delay": "-1ms"}, "must not be negative, got '-1ms'"),
        ({"delay": True}, 'expected a duration like "500ms", got True'),
    ],
)
def test_pydantic_types_refuse(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Timing.model_validate(data)
    errors = caught.value.errors()
    assert [e["ctx"]["error"].args[0] for e in errors] == [message]


def test_pydantic_types_accept_and_serialise() -> None:
    timing = Timing.model_validate({"delay": "0s", "period": "250ms"})
    assert (timing.delay, timing.period) == (0.0, 0.25)
    assert timing.model_dump() == {"delay": "0s", "period": "250ms"}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (90.0, "90s"),
        (3600.0, "1h"),
        (86400.0, "1d"),
        (120.0, "2m"),
        (1.5, "1500ms"),
        (0.0, "0s"),
    ],
)
def test_format_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)

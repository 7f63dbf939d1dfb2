"""The pure core of the OPC UA source: status → quality, variant → float64, time, limits."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agent.model import Quality
from connectors.opcua.convert import (
    Unsupported,
    datetime_ns,
    flatten,
    qualities,
    quality_of,
    reading_time_ns,
    to_float,
)
from connectors.opcua.session import ServerLimits, limits_from_values


@pytest.mark.parametrize(
    ("status", "quality"),
    [
        (0x00000000, Quality.GOOD),  # Good
        (0x00A60000, Quality.GOOD),  # GoodClamped? any 00 severity is good
        (0x40000000, Quality.UNCERTAIN),  # Uncertain
        (0x408F0000, Quality.UNCERTAIN),  # UncertainSubNormal
        (0x80000000, Quality.BAD),  # Bad
        (0x80340000, Quality.BAD),  # BadNodeIdUnknown
        (0xC0000000, Quality.BAD),  # reserved severity 11: bad, never good
    ],
)
def test_quality_comes_from_the_severity_bits(status: int, quality: Quality) -> None:
    assert quality_of(status) is quality
    column = qualities(np.array([status, 0], dtype=np.uint32))
    assert column.dtype == np.uint8
    assert column.tolist() == [quality, Quality.GOOD]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, 1.0),
        (False, 0.0),
        (-128, -128.0),  # SByte
        (255, 255.0),  # Byte
        (2**64 - 1, float(2**64 - 1)),  # UInt64: rounds as float64 does
        (-(2**63), float(-(2**63))),
        (1.5, 1.5),
        (math.inf, math.inf),
        (None, math.nan),  # no value: NaN (the status decides the quality)
        (datetime(1970, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC), 1.5),
        (datetime(2024, 5, 6, 7, 8, 9), datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC).timestamp()),
    ],
)
def test_numbers_booleans_and_datetimes_become_float64(value: object, expected: float) -> None:
    got = to_float(value)
    assert type(got) is float
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@pytest.mark.parametrize("value", ["DIE-7", b"\x00\x01", [1, 2], (3.0,), {"a": 1}, object()])
def test_text_bytes_structures_and_arrays_are_unsupported(value: object) -> None:
    with pytest.raises(Unsupported):
        to_float(value)


def test_declared_arrays_flatten_with_missing_elements_absent() -> None:
    values, present = flatten([1, 2.5, True], 3)
    assert values.tolist() == [1.0, 2.5, 1.0]
    assert present.tolist() == [True, True, True]
    values, present = flatten([7], 3)  # shorter than declared
    assert values[0] == 7.0 and np.isnan(values[1:]).all()
    assert present.tolist() == [True, False, False]
    values, present = flatten([1, 2, 3, 4], 2)  # longer: extra ignored
    assert values.tolist() == [1.0, 2.0]
    values, present = flatten(None, 2)
    assert not present.any() and np.isnan(values).all()


@pytest.mark.parametrize("value", [5, "abc", b"ab", ["x"]])
def test_a_scalar_or_text_where_an_array_was_declared_is_unsupported(value: object) -> None:
    with pytest.raises(Unsupported):
        flatten(value, 2)


def test_datetime_ns_treats_null_and_missing_as_no_time() -> None:
    assert datetime_ns(datetime(1970, 1, 1, 0, 0, 2, 3, tzinfo=UTC)) == 2_000_003_000
    assert datetime_ns(datetime(1970, 1, 1, 0, 0, 2)) == 2_000_000_000  # naive is UTC
    assert datetime_ns(None) == 0
    assert datetime_ns(datetime(1601, 1, 1, tzinfo=UTC)) == 0  # OPC UA's null DateTime
    later = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(microseconds=1)
    assert datetime_ns(later) == int(datetime(2030, 1, 1, tzinfo=UTC).timestamp()) * 10**9 + 1000


@pytest.mark.parametrize(
    ("source", "server", "choice", "expected"),
    [
        (10, 20, "source", 10),
        (10, 20, "server", 20),
        (0, 20, "source", 20),  # no source time: the server's
        (10, 0, "server", 10),  # no server time: the source's
        (0, 0, "source", 99),  # neither: arrival
        (0, 0, "server", 99),
    ],
)
def test_reading_time_is_the_chosen_timestamp_with_fallbacks(
    source: int, server: int, choice: str, expected: int
) -> None:
    assert reading_time_ns(source, server, choice, 99) == expected  # type: ignore[arg-type]


def test_limits_offered_capped_or_defaulted() -> None:
    limits = limits_from_values([100, 0, None])
    assert limits == ServerLimits(100, None, None)
    assert limits.nodes_per_read(None) == 100
    assert limits.nodes_per_read(40) == 40  # the config may only lower it
    assert limits.nodes_per_read(500) == 100
    assert limits.items_per_subscription(None) == 1000  # not offered: the common cap
    assert limits.items_per_subscription(50) == 50
    assert ServerLimits(None, 300, 20).items_per_call(300) == 20
    assert ServerLimits(None, 300, None).items_per_call(300) == 300
    # Nonsense from a server is "not offered", never a zero-sized request.
    assert limits_from_values([-1, True, "x"]) == ServerLimits(None, None, None)
    assert limits_from_values([]).nodes_per_read(None) == 5000

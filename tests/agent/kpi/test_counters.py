"""Counter deltas: rollover at 16/32/64 bits, resets, float counters (standards.md §1.6)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.kpi.counters import CounterStep, counter_step


@pytest.mark.parametrize(
    ("previous", "current", "bits", "expected"),
    [
        (None, 1234.0, 16, CounterStep(0.0, "first")),
        (None, 5.5, None, CounterStep(0.0, "first")),
        (10.0, 10.0, 16, CounterStep(0.0, "normal")),
        (10.0, 25.0, 32, CounterStep(15.0, "normal")),
        # 16 bit: 65530 -> 65535 -> (wrap) 0 -> 4: 5 + 1 + 4 = 10 counts
        (65530.0, 4.0, 16, CounterStep(10.0, "rollover")),
        (65535.0, 0.0, 16, CounterStep(1.0, "rollover")),
        # wrapped delta 16383 < 65536/4: still a rollover; 16384 is not
        (49153.0, 0.0, 16, CounterStep(16383.0, "rollover")),
        (49152.0, 0.0, 16, CounterStep(0.0, "reset")),
        # 32 bit unsigned and the same register read as signed Int32
        (4294967290.0, 9.0, 32, CounterStep(15.0, "rollover")),
        (2147483647.0, -2147483648.0, 32, CounterStep(1.0, "rollover")),
        (-1.0, 3.0, 32, CounterStep(4.0, "normal")),
        # 64 bit: exact integer arithmetic above 2**53
        (float(2**64 - 2048), 2048.0, 64, CounterStep(4096.0, "rollover")),
        # a PLC reboot: counted again from 0, never negative, never ~65 000
        (30000.0, 12.0, 16, CounterStep(12.0, "reset")),
        (1_000_000.0, 0.0, 32, CounterStep(0.0, "reset")),
        (1_000_000.0, 250.0, 32, CounterStep(250.0, "reset")),
        # a 16-bit value read as 32 bit never wraps at 65535
        (65535.0, 3.0, 32, CounterStep(3.0, "reset")),
        # float counters (tonnes, kWh): no rollover, a decrease is a reset
        (1520.25, 1530.75, None, CounterStep(10.5, "normal")),
        (1520.25, 0.5, None, CounterStep(0.5, "reset")),
        (65535.0, 0.0, None, CounterStep(0.0, "reset")),
        (5.0, -2.0, None, CounterStep(0.0, "reset")),  # never negative
    ],
)
def test_counter_step(
    previous: float | None, current: float, bits: int | None, expected: CounterStep
) -> None:
    assert counter_step(previous, current, bits) == expected


@pytest.mark.parametrize(
    ("previous", "current", "bits"),
    [
        (1.0, 2.0, 8),
        (1.0, 2.0, 0),
        (1.0, math.nan, 16),
        (math.nan, 2.0, 16),
        (1.0, math.inf, None),
        (None, math.nan, None),
    ],
)
def test_counter_step_rejects_bad_input(
    previous: float | None, current: float, bits: int | None
) -> None:
    with pytest.raises(ValueError):
        counter_step(previous, current, bits)


@given(
    bits=st.sampled_from([16, 32]),
    start=st.integers(min_value=0),
    increments=st.lists(st.integers(min_value=0, max_value=16_000), max_size=60),
)
def test_deltas_over_wrapped_sequence_sum_to_true_increase(
    bits: int, start: int, increments: list[int]
) -> None:
    span = 1 << bits
    true_value = start % span
    previous: float | None = None
    counted = 0.0
    for step in [0, *increments]:
        true_value += step
        result = counter_step(previous, float(true_value % span), bits)
        assert result.delta >= 0
        counted += result.delta
        previous = float(true_value % span)
    assert counted == true_value - start % span


@given(
    values=st.lists(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=30
    ),
    bits=st.sampled_from([16, 32, 64, None]),
)
def test_any_sequence_gives_bounded_non_negative_deltas(
    values: list[float], bits: int | None
) -> None:
    previous: float | None = None
    for value in values:
        step = counter_step(previous, value, bits)
        assert step.delta >= 0
        if step.kind == "rollover":
            assert bits is not None and step.delta < (1 << bits) / 4
        if step.kind == "reset":
            assert step.delta <= max(value, 0.0)
        previous = value

"""Guesses of register types from two reads: float32 word order, counters."""

import struct

from connectors.modbus.guess import guesses, plausible_float


def words(value: float) -> tuple[int, int]:
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return high, low


def test_a_float32_is_guessed_in_the_word_order_it_reads_plausibly() -> None:
    high, low = words(806.864)
    assert guesses({12: high, 13: low}) == {12: "guess: float32 ABCD = 806.864"}
    assert guesses({12: low, 13: high}) == {12: "guess: float32 CDAB = 806.864"}


def test_a_counter_is_a_register_that_rose() -> None:
    assert guesses({4: 100, 5: 0}, {4: 103, 5: 0}) == {
        4: "guess: counter (rose by 3 between two reads)"
    }


def test_zeros_and_small_integers_get_no_guess() -> None:
    assert guesses({0: 6, 1: 1, 2: 0, 3: 0}, {0: 6, 1: 1, 2: 0, 3: 0}) == {}


def test_plausible_floats_are_short_decimals_of_a_process_size() -> None:
    assert plausible_float(23.7) and plausible_float(806.864)
    assert not plausible_float(float("nan")) and not plausible_float(1e-20)
    assert not plausible_float(struct.unpack(">f", bytes.fromhex("43c9f3b7"))[0])

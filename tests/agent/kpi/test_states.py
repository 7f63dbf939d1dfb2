"""State codes and PackML states to time categories (standards.md §2.2, §2.3, §2.7)."""

from __future__ import annotations

import math

import pytest

from agent.kpi.states import CATEGORIES, Category, map_code, packml_category
from firmware_sim.machines.press import _packml
from firmware_sim.machines.truth import STATES, State

TABLE: dict[int, Category] = {1: "running", 2: "idle", 3: "down", 4: "setup", 5: "planned_stop"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (1.0, "running"),
        (2, "idle"),
        (3.0, "down"),
        (4.0, "setup"),
        (5.0, "planned_stop"),
        (0.0, "unknown"),  # not in the table
        (6.0, "unknown"),
        (-1.0, "unknown"),
        (1.5, "unknown"),  # not a whole number: never rounded into a state
        (math.nan, "unknown"),  # a bad reading
        (math.inf, "unknown"),
    ],
)
def test_map_code(code: float, expected: Category) -> None:
    assert map_code(code, TABLE) == expected


def test_map_code_empty_table() -> None:
    assert map_code(1.0, {}) == "unknown"


# PackTags / TR88 numbering pinned (standards.md §2.3), Production mode.
PRODUCTION_TABLE: list[tuple[int, str, Category]] = [
    (0, "Undefined", "unknown"),
    (1, "Clearing", "down"),
    (2, "Stopped", "idle"),
    (3, "Starting", "running"),
    (4, "Idle", "idle"),
    (5, "Suspended", "idle"),
    (6, "Execute", "running"),
    (7, "Stopping", "idle"),
    (8, "Aborting", "down"),
    (9, "Aborted", "down"),
    (10, "Holding", "down"),
    (11, "Held", "down"),
    (12, "Unholding", "running"),
    (13, "Suspending", "idle"),
    (14, "Unsuspending", "running"),
    (15, "Resetting", "idle"),
    (16, "Completing", "running"),
    (17, "Complete", "idle"),
    (18, "Running (composite)", "unknown"),
    (19, "Cleared (composite)", "unknown"),
    (20, "out of range", "unknown"),
    (-1, "negative", "unknown"),
]


@pytest.mark.parametrize(("state", "name", "expected"), PRODUCTION_TABLE)
@pytest.mark.parametrize("mode", [None, 1])
def test_packml_production(state: int, name: str, expected: Category, mode: int | None) -> None:
    assert packml_category(state, mode) == expected, name


@pytest.mark.parametrize(("state", "name", "in_production"), PRODUCTION_TABLE)
@pytest.mark.parametrize(
    ("mode", "category"),
    [(2, "planned_stop"), (3, "setup"), (0, "unknown"), (4, "unknown"), (31, "unknown")],
)
def test_packml_other_modes(
    state: int, name: str, in_production: Category, mode: int, category: Category
) -> None:
    # Maintenance and Manual decide the category whatever the state, as long as the state is
    # a real one; Invalid and user-defined modes are not guessed.
    expected = "unknown" if in_production == "unknown" else category
    assert packml_category(state, mode) == expected, name


def test_every_category_is_reachable() -> None:
    reached = {packml_category(s, m) for s in range(-1, 21) for m in (None, 0, 1, 2, 3, 4)}
    assert reached == set(CATEGORIES)


@pytest.mark.parametrize("truth", STATES)
def test_simulated_press_round_trip(truth: State) -> None:
    # The press serves PackML; the agent must read back the press's ground-truth category.
    state, mode = _packml(truth)
    assert packml_category(state, mode) == truth


def test_simulated_press_uses_distinct_codes() -> None:
    served = {_packml(t) for t in STATES}
    assert len(served) == len(STATES)

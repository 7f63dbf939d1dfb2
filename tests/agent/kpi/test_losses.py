"""Six big losses and the downtime Pareto."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.kpi.formulas import Components
from agent.kpi.losses import pareto, six_big_losses


def test_six_big_losses_of_the_oee_com_shift() -> None:
    # PPT 25 200 s, RT 22 380 s, down 2 820 s, 19 271 parts at 1 s, 423 rejects
    c = Components(planned_s=25200, running_s=22380, down_s=2820, total=19271, good=18848,
                   reject=423, ideal_s=19271)  # fmt: skip
    losses = six_big_losses(c)
    assert losses == pytest.approx(
        {
            "breakdowns": 2820.0,
            "setup_adjustments": 0.0,
            "small_stops": 0.0,
            "reduced_speed": 22380 - 19271.0,  # RT - net run time = 3 109 s
            "process_defects": 423.0,  # 423 rejects x 1 s
            "reduced_yield": 0.0,
        }
    )
    # losses + fully productive time (good x ICT) = planned production time
    assert sum(losses.values()) + 18848 == pytest.approx(25200)


def test_six_big_losses_with_setup_idle_and_rework() -> None:
    c = Components(planned_s=28800, running_s=21600, setup_s=1800, down_s=3600, idle_s=1800,
                   total=1000, good=940, reject=40, rework=20, ideal_s=18000)  # fmt: skip
    losses = six_big_losses(c)
    assert losses["setup_adjustments"] == 1800
    assert losses["small_stops"] == 1800
    assert losses["reduced_speed"] == 3600
    assert losses["process_defects"] == pytest.approx(18000 * 60 / 1000)  # 60 not good x 18 s
    assert sum(losses.values()) + 940 * 18 == pytest.approx(28800)


def test_six_big_losses_never_negative() -> None:
    # P > 1 (wrong ideal cycle time): no negative speed loss; nothing made: no defects
    assert (
        six_big_losses(Components(running_s=100, ideal_s=150, total=150, good=150))["reduced_speed"]
        == 0.0
    )
    assert six_big_losses(Components())["process_defects"] == 0.0


@given(
    times=st.lists(st.floats(0, 1e5), min_size=4, max_size=4),
    total=st.integers(1, 10_000),
    good_share=st.floats(0, 1),
    speed=st.floats(0.01, 1),
)
def test_losses_and_good_time_fill_planned_time(
    times: list[float], total: int, good_share: float, speed: float
) -> None:
    running, idle, down, setup = times
    ict = running * speed / total  # the machine ran at `speed` of its ideal rate
    good = int(total * good_share)
    c = Components(planned_s=sum(times), running_s=running, idle_s=idle, down_s=down,
                   setup_s=setup, total=total, good=good, ideal_s=ict * total)  # fmt: skip
    assert sum(six_big_losses(c).values()) + good * ict == pytest.approx(sum(times), abs=1e-6)


def test_pareto() -> None:
    reasons = {"feeder fault": 600.0, "die jam": 1200.0, "servo": 200.0, "none": 0.0}
    # shares are sums in the same order as the total: the last one of a full list is exactly 1
    assert pareto(reasons) == [
        ("die jam", 1200.0, 0.6),
        ("feeder fault", 600.0, 0.9),
        ("servo", 200.0, 1.0),
    ]
    # top: shares stay relative to all the time, so the last one says what the list covers
    assert pareto(reasons, top=2) == [("die jam", 1200.0, 0.6), ("feeder fault", 600.0, 0.9)]
    assert pareto(reasons, top=0) == []
    assert pareto({}) == []
    assert pareto({"a": 0.0}) == []
    # ties in a stable order
    assert [r for r, _, _ in pareto({"b": 5.0, "a": 5.0, "c": 9.0})] == ["c", "a", "b"]


@pytest.mark.parametrize(("reasons", "top"), [({"a": -1.0}, None), ({"a": 1.0}, -1)])
def test_pareto_rejects_bad_input(reasons: dict[str, float], top: int | None) -> None:
    with pytest.raises(ValueError):
        pareto(reasons, top)

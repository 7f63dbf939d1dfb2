"""Machine models: determinism, ground truth, realistic losses, reboots, construction."""

from __future__ import annotations

import math
import time

import pytest

from firmware_sim.machines import (
    GroundTruth,
    Interval,
    MachineModel,
    Press,
    SimulatedMachine,
    make_machine,
)
from firmware_sim.machines.loom import WARP_BREAK, WEFT_BREAK
from firmware_sim.machines.press import STOP_REASONS as PRESS_REASONS

KINDS = ("press", "mill", "loom")
SHIFT = 8 * 3600.0
DAY = 86400.0


def _sim(machine: MachineModel) -> SimulatedMachine:
    assert isinstance(machine, SimulatedMachine)
    return machine


def test_same_seed_same_values_different_seed_differs() -> None:
    for kind in KINDS:
        a, b, c = (make_machine(kind, "m", s) for s in (11, 11, 12))
        for m in (a, b, c):
            m.advance_to(SHIFT)
        assert a.values() == b.values()
        assert a.ground_truth() == b.ground_truth()
        assert a.ground_truth().intervals != c.ground_truth().intervals


@pytest.mark.parametrize("kind", KINDS)
def test_values_do_not_depend_on_call_granularity(kind: str) -> None:
    once, fine, coarse = (make_machine(kind, "m", 5) for _ in range(3))
    once.advance_to(100.0)
    for i in range(1, 1001):
        fine.advance_to(i * 0.1)
    fine.advance_to(100.0)
    for i in range(1, 14):
        coarse.advance_to(i * 7.3)
    coarse.advance_to(100.0)
    assert once.values() == fine.values() == coarse.values()
    # ... and over a whole shift, with uneven steps that land inside stops and runs.
    for i in range(1, 2000):
        fine.advance_to(100.0 + i * 14.3)
    once.advance_to(100.0 + 1999 * 14.3)
    assert once.values() == fine.values()
    assert once.ground_truth() == fine.ground_truth()


def test_time_never_goes_backwards_and_equal_time_is_ignored() -> None:
    m = make_machine("press", "p", 1)
    m.advance_to(50.0)
    before = m.values()
    m.advance_to(50.0)
    assert m.values() == before
    with pytest.raises(ValueError, match="backwards"):
        m.advance_to(49.9)


@pytest.mark.parametrize("kind", KINDS)
def test_intervals_tile_time_and_counters_match_ground_truth(kind: str) -> None:
    m = _sim(make_machine(kind, "m", 3))
    m.advance_to(2 * DAY + 123.4)
    gt = m.ground_truth()
    assert gt.intervals[0].start == 0.0
    assert gt.intervals[-1].end == gt.now == 2 * DAY + 123.4
    for a, b in zip(gt.intervals, gt.intervals[1:], strict=False):
        assert a.end == b.start
        assert a.duration >= 0
    totals = gt.totals
    assert sum(totals.seconds.values()) == pytest.approx(gt.now)
    assert totals.good + totals.reject == pytest.approx(totals.produced)
    assert totals.produced == pytest.approx(sum(iv.produced for iv in gt.intervals))
    v = m.values()
    if kind == "press":
        assert v["part_count"] == totals.produced
        assert v["good_count"] == totals.good
        assert v["reject_count"] == totals.reject
    elif kind == "mill":
        assert v["produced_t"] == pytest.approx(totals.produced)
        assert v["energy_kwh"] == pytest.approx(totals.energy_kwh)
    else:
        assert v["pick_count"] == totals.produced
        assert v["metres_woven"] == pytest.approx(totals.produced / 2800.0)
        assert v["warp_breaks"] == totals.stops.get(WARP_BREAK, 0)
        assert v["weft_breaks"] == totals.stops.get(WEFT_BREAK, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_summary_splits_windows_exactly(kind: str) -> None:
    m = make_machine(kind, "m", 8)
    m.advance_to(DAY)
    gt = m.ground_truth()
    whole = gt.summary(0.0, DAY)
    cuts = [gt.summary(a, b) for a, b in ((0.0, 1234.5), (1234.5, SHIFT), (SHIFT, DAY))]
    assert sum(c.produced for c in cuts) == pytest.approx(whole.produced)
    assert sum(c.reject for c in cuts) == pytest.approx(whole.reject)
    assert sum(c.energy_kwh for c in cuts) == pytest.approx(whole.energy_kwh)
    for state, seconds in whole.seconds.items():
        assert sum(c.seconds[state] for c in cuts) == pytest.approx(seconds)
    with pytest.raises(ValueError):
        gt.summary(10.0, 5.0)


@pytest.mark.parametrize("kind", KINDS)
def test_truth_over_the_time_an_observer_saw(kind: str) -> None:
    m = make_machine(kind, "m", 9)
    m.advance_to(SHIFT)
    gt = m.ground_truth()
    whole, over = gt.true_oee(0.0, SHIFT), gt.true_oee_over([(0.0, SHIFT)])
    assert (over.oee, over.planned_s, over.run_s) == pytest.approx(
        (whole.oee, whole.planned_s, whole.run_s)
    )
    # Two hours unseen: the truth is over the rest, its parts and planned time only.
    seen = [(0.0, 3600.0), (3 * 3600.0, SHIFT)]
    parts = [gt.summary(a, b) for a, b in seen]
    planned = sum((p.t1 - p.t0) - p.seconds["planned_stop"] for p in parts)
    good = sum(p.good for p in parts)
    truth = gt.true_oee_over(seen)
    assert truth.planned_s == pytest.approx(planned)
    assert truth.oee == pytest.approx(good / (gt.ideal_rate * planned))
    assert gt.true_oee_over([]).oee is None


# Long runs: rates measured from the ground truth match the configured ones.
LONG = {"press": 30 * DAY, "mill": 90 * DAY, "loom": 20 * DAY}


def _stops(gt: GroundTruth, state: str) -> list[Interval]:
    return [iv for iv in gt.intervals if iv.state == state]


def _poisson_close(count: int, expected: float) -> None:
    assert expected > 25, "run longer: too few events to judge a rate"
    assert abs(count - expected) < 4 * math.sqrt(expected), (count, expected)


def _mean_close(durations: list[float], mean: float) -> None:
    assert len(durations) > 25
    measured = sum(durations) / len(durations)
    assert measured == pytest.approx(mean, rel=4 / math.sqrt(len(durations)))


@pytest.mark.parametrize("kind", KINDS)
def test_losses_match_configured_rates(kind: str) -> None:
    m = _sim(make_machine(kind, "m", 21))
    m.advance_to(LONG[kind])
    gt = m.ground_truth()
    s = gt.totals
    run_h = s.seconds["running"] / 3600.0
    rates = m.rates  # type: ignore[attr-defined]
    downs = _stops(gt, "down")
    micro = _stops(gt, "idle")
    # Stop counts are Poisson and durations exponential: allow 4 standard deviations, which
    # still fails a rate or duration that is off by half.
    if kind == "loom":
        per_h = 3600 / rates.warp_break_every_s + 3600 / rates.weft_break_every_s
        per_h += 3600 / rates.mtbf_s
        repairs = [iv.duration for iv in downs if iv.reason == WEFT_BREAK]
        mttr = rates.weft_repair_s
    else:
        per_h = 3600 / rates.mtbf_s
        repairs = [iv.duration for iv in downs]
        mttr = rates.mttr_s
    _poisson_close(len(downs), per_h * run_h)
    _poisson_close(len(micro), run_h * 3600 / rates.micro_stop_every_s)
    _mean_close(repairs, mttr)
    _mean_close([iv.duration for iv in micro], rates.micro_stop_s)
    # Speed loss: output per running second against the ideal rate.
    performance = s.produced / (gt.ideal_rate * s.seconds["running"])
    assert performance == pytest.approx(1 - rates.speed_loss, abs=0.015)
    assert performance < 1.0
    # Rejects (the mill rejects whole off-spec stretches, so its share varies more).
    assert s.reject / s.produced == pytest.approx(rates.reject_probability, rel=0.5)
    assert s.seconds["setup"] > 0
    oee = gt.true_oee(0.0, gt.now)
    assert oee.oee is not None and 0.4 < oee.oee < 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_one_shift_shows_every_loss(kind: str) -> None:
    # Rates chosen so that one shift surely shows a breakdown, micro-stops, slow running and
    # rejects; the default rates spread breakdowns over days for the mill.
    m = make_machine(kind, "m", 2, mtbf_s=3600.0, micro_stop_every_s=600.0,
                     reject_probability=0.05)  # fmt: skip
    m.advance_to(SHIFT)
    s = m.ground_truth().totals
    assert s.seconds["down"] > 0
    assert s.seconds["idle"] > 0
    assert s.reject > 0
    assert s.produced < s.ideal_rate * s.seconds["running"]


def test_press_planned_breaks_and_packml_states() -> None:
    m = make_machine("press", "p", 4)
    seen: dict[int, set[int]] = {}
    for i in range(1, 8641):  # every 10 s over a day
        m.advance_to(i * 10.0)
        v = m.values()
        assert isinstance(v["state"], int)
        seen.setdefault(v["state"], set()).add(int(v["stop_reason"]))
        assert v["running"] == (v["state"] == 6)
        if v["state"] == 11:
            assert v["alarm_code"] == v["stop_reason"] != 0
        else:
            assert v["alarm_code"] == 0
        assert v["stop_reason"] in PRESS_REASONS
        # Production, except die changes (Stopped, Manual) and planned breaks (Idle, Maintenance)
        assert v["unit_mode"] == {2: 3, 4: 2}.get(int(v["state"]), 1)
    assert set(seen) == {6, 11, 5, 2, 4}  # Execute, Held, Suspended, Stopped, Idle
    assert seen[6] == {0}
    assert seen[5] == {201, 202, 203}  # micro-stops and starved of blanks: available, waiting
    assert seen[11] <= {101, 102, 103, 104}  # breakdowns
    gt = m.ground_truth()
    planned = gt.summary(0.0, DAY).seconds["planned_stop"]
    assert 0 < planned <= 3 * 3600.0  # at most the scheduled breaks of three shifts


def test_mill_energy_integrates_power() -> None:
    m = _sim(make_machine("mill", "k", 6))
    m.advance_to(1000.0)
    iv = m.segment.iv
    e0 = m.values()["energy_kwh"]
    t1 = min(iv.end, 1000.0 + 600.0) - 1e-6
    m.advance_to(t1)
    e1 = m.values()["energy_kwh"]
    assert isinstance(e0, float) and isinstance(e1, float)
    assert e1 - e0 == pytest.approx(iv.power_kw * (t1 - 1000.0) / 3600.0)
    m.advance_to(3 * DAY)
    gt = m.ground_truth()
    # The drive keeps drawing power when the feed stops: kWh per tonne exceeds the running rate.
    running_kwh = sum(iv.energy_kwh for iv in gt.intervals if iv.state == "running")
    assert gt.totals.energy_kwh > running_kwh > 0
    assert {m.values()["cement_grade"]} <= {"P.O 42.5", "P.C 42.5R", "P.O 52.5"}


def test_reboot_resets_counters_not_truth() -> None:
    for kind, counter in (("press", "part_count"), ("mill", "produced_t"), ("loom", "pick_count")):
        m = make_machine(kind, "m", 9)
        m.advance_to(SHIFT)
        before = m.ground_truth().totals.produced
        assert m.values()[counter] == pytest.approx(before)
        m.reboot()
        assert m.values()[counter] == 0
        m.advance_to(2 * SHIFT)
        gt = m.ground_truth()
        assert gt.reboots == (SHIFT,)
        assert m.values()[counter] == pytest.approx(gt.totals.produced - before)
        assert gt.totals.produced > before


def test_unsigned_counters_wrap_at_register_width() -> None:
    m = _sim(make_machine("loom", "l", 1))
    assert m.wrap("warp_breaks", 65536 + 3) == 3
    assert m.wrap("pick_count", 2**32 + 7) == 7
    assert m.wrap("metres_woven", 2**32 * 0.001 + 1.5) == pytest.approx(1.5)


def test_make_machine_overrides_and_rejects_bad_keywords() -> None:
    m = make_machine("press", "p", 1, reject_probability=0.0, planned_stops=())
    assert isinstance(m, Press)
    m.advance_to(DAY)
    s = m.ground_truth().totals
    assert s.reject == 0 and s.seconds["planned_stop"] == 0 and s.produced > 0
    with pytest.raises(ValueError, match="'mtbf'"):
        make_machine("press", "p", 1, mtbf=3600.0)
    with pytest.raises(ValueError, match="kind"):
        make_machine("kiln", "k", 1)
    with pytest.raises(ValueError, match="mttr_s"):
        make_machine("mill", "k", 1, mttr_s=-1.0)
    with pytest.raises(ValueError, match="reject_probability"):
        make_machine("loom", "l", 1, reject_probability=1.5)
    with pytest.raises(ValueError, match="> 0"):
        make_machine("loom", "l", 1, weft_break_every_s=0.0)


def test_disabled_causes_leave_a_perfect_machine() -> None:
    m = make_machine("loom", "l", 1, speed_loss=0.0, reject_probability=0.0,
                     warp_break_every_s=math.inf, weft_break_every_s=math.inf, mtbf_s=math.inf,
                     micro_stop_every_s=math.inf, changeover_every_s=math.inf)  # fmt: skip
    m.advance_to(SHIFT)
    oee = m.ground_truth().true_oee(0.0, SHIFT)
    assert oee.availability == 1.0 and oee.quality == 1.0
    assert oee.performance == pytest.approx(1.0, abs=1e-4)  # a partial pick per chunk at most


# True OEE on a hand-built shift: the oee.com worked example of standards.md §1.5.


def _oee_com_shift() -> GroundTruth:
    minute = 60.0
    ideal = 1.0  # 60 parts per minute
    run = 373 * minute
    rate = 19271 / run
    intervals = (
        Interval(0.0, 120 * minute, "running", 0, rate, 0.5, True, tuple(range(1, 424))),
        Interval(120 * minute, 135 * minute, "planned_stop", 401),
        Interval(135 * minute, 182 * minute, "down", 101),
        Interval(182 * minute, 212 * minute, "planned_stop", 401),
        Interval(212 * minute, 465 * minute, "running", 0, rate, 0.5),
        Interval(465 * minute, 480 * minute, "planned_stop", 401),
    )
    return GroundTruth("press", "p", "parts", ideal, 480 * minute, intervals)


def test_true_oee_on_the_oee_com_example() -> None:
    gt = _oee_com_shift()
    s = gt.summary(0.0, 480 * 60.0)
    # Both running stretches together produce 19271 parts at the same rate.
    assert s.produced == pytest.approx(19271, abs=1) and s.reject == 423
    oee = gt.true_oee(0.0, 480 * 60.0)
    assert oee.planned_s == 420 * 60.0 and oee.run_s == 373 * 60.0
    assert oee.availability == pytest.approx(0.888095, abs=1e-6)
    assert oee.performance == pytest.approx(s.produced / (373 * 60.0), abs=1e-9)
    assert oee.quality == pytest.approx(s.good / s.produced)
    assert oee.oee is not None and oee.availability and oee.performance and oee.quality
    assert oee.oee == pytest.approx(oee.availability * oee.performance * oee.quality)
    assert oee.oee == pytest.approx(0.747937, abs=2e-4)


def test_true_oee_threshold_moves_short_stops_into_performance() -> None:
    gt = _oee_com_shift()
    plain = gt.true_oee(0.0, 480 * 60.0)
    lenient = gt.true_oee(0.0, 480 * 60.0, micro_stop_threshold_s=48 * 60.0)
    assert lenient.run_s == 420 * 60.0 and lenient.availability == 1.0
    assert lenient.performance is not None and plain.performance is not None
    assert lenient.performance < plain.performance
    assert lenient.oee == pytest.approx(plain.oee)


def test_true_oee_is_undefined_without_planned_time_or_output() -> None:
    gt = GroundTruth("press", "p", "parts", 1.0, 100.0,
                     (Interval(0.0, 100.0, "planned_stop", 401),))  # fmt: skip
    oee = gt.true_oee(0.0, 100.0)
    assert oee.availability is None and oee.performance is None and oee.oee is None
    down = GroundTruth("press", "p", "parts", 1.0, 100.0, (Interval(0.0, 100.0, "down", 101),))
    oee = down.true_oee(0.0, 100.0)
    assert oee.availability == 0.0 and oee.performance is None and oee.quality is None
    assert oee.oee == 0.0


def test_interval_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        Interval(10.0, 5.0, "running")
    with pytest.raises(ValueError):
        Interval(0.0, 5.0, "sleeping")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_a_shift_costs_far_less_than_a_second_of_cpu(kind: str) -> None:
    # About 1 ms on the reference machine; the bound leaves room for a loaded CI runner.
    m = make_machine(kind, "m", 13)
    start = time.process_time()
    m.advance_to(SHIFT)
    m.ground_truth().true_oee(0.0, SHIFT)
    assert time.process_time() - start < 0.25

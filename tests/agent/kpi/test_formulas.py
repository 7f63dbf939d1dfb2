"""Classic OEE and ISO 22400-2 KPIs from components (standards.md §1.4-1.6)."""

from __future__ import annotations

import dataclasses

import pytest

from agent.kpi.formulas import Components, classic, flags, iso22400, rollup

MIN = 60.0


def defined(value: float | None) -> float:
    assert value is not None
    return value


def oee_com() -> Components:
    # oee.com: 480 min shift, breaks 15 + 30 + 15 -> PPT 420 min; 47 min down -> RT 373 min;
    # ideal cycle 1 s (60 ppm); 19 271 parts, 423 rejects -> 18 848 good.
    return Components(
        calendar_s=480 * MIN,
        planned_s=420 * MIN,
        running_s=373 * MIN,
        down_s=47 * MIN,
        total=19271,
        good=18848,
        reject=423,
        ideal_s=19271 * 1.0,
    )


def test_oee_com_vector() -> None:
    k = classic(oee_com())
    assert round(defined(k["availability"]), 6) == 0.888095
    assert round(defined(k["performance"]), 6) == 0.861081
    assert round(defined(k["quality"]), 6) == 0.978050
    assert round(defined(k["oee"]), 6) == 0.747937
    simple = 18848 * 1.0 / (420 * MIN)  # good x ICT / PPT
    assert k["oee"] == pytest.approx(simple, rel=1e-12)
    # TEEP: OEE x PPT / all time = 0.747937 x 420/480
    assert k["teep"] == pytest.approx(simple * 420 / 480, rel=1e-12)
    assert k["energy_per_good"] is None  # no meter
    assert flags(oee_com()) == []


def test_waycalculator_vector() -> None:
    # PPT 480 min, RT 420 min, ICT 1 min, 400 parts, 380 good
    c = Components(planned_s=480 * MIN, running_s=420 * MIN, total=400, good=380, ideal_s=400 * MIN)
    k = classic(c)
    assert k["availability"] == pytest.approx(0.875)
    assert round(defined(k["performance"]), 6) == 0.952381
    assert k["quality"] == pytest.approx(0.95)
    assert round(defined(k["oee"]), 6) == 0.791667
    assert k["teep"] is None  # calendar time not given: utilisation undefined


def iso_case() -> Components:
    # One 8 h shift (PBT 28 800 s) inside a 24 h day:
    # APT 21 600, ASUT 1 800, ADET 3 600 (3 failures), ADOT 1 800;
    # PQ 1 000 = GQ 940 + SQ 40 + RQ 20; PRU 18 s -> PRU x PQ = 18 000 s.
    return Components(
        calendar_s=86400,
        planned_s=28800,
        running_s=21600,
        setup_s=1800,
        down_s=3600,
        idle_s=1800,
        total=1000,
        good=940,
        reject=40,
        rework=20,
        ideal_s=18000,
        failures=3,
    )


ISO_EXPECTED = {
    "availability": 21600 / 28800,  # APT/PBT = 0.75
    "effectiveness": 18000 / 21600,  # PRU x PQ / APT = 0.8333
    "quality_ratio": 940 / 1000,  # GQ/PQ = 0.94
    "oee_index": 0.75 * (18000 / 21600) * 0.94,  # = 0.5875
    # AUPT = APT + ASUT = 23 400; NEE = 23400/28800 x E x QR = 0.8125 x 0.8333 x 0.94
    "nee_index": (23400 / 28800) * (18000 / 21600) * 0.94,
    "allocation_efficiency": 27000 / 28800,  # AUBT = AUPT + ADET = 27 000 -> 0.9375
    "production_process_ratio": 21600 / 28800,  # APT/AOET, AOET = AUBT + ADOT = 28 800
    "allocation_ratio": 27000 / 28800,  # AUBT/AOET
    "utilization_efficiency": 21600 / 27000,  # APT/AUBT = 0.8
    "technical_efficiency": 21600 / (21600 + 3600),  # APT/(APT+ADET) = 0.857
    "setup_rate": 1800 / 23400,  # ASUT/AUPT
    "throughput_rate": 1000 / 28800 * 3600,  # PQ/AOET per hour, AOET = AUBT + ADOT = 28 800
    "scrap_ratio": 40 / 1000,
    "rework_ratio": 20 / 1000,
    "first_pass_yield": (1000 - 40 - 20) / 1000,
    "mtbf_s": 23400 / 3,  # AUPT per failure = 7 800 s
    "mttr_s": 3600 / 3,  # ADET per failure = 1 200 s
    "teep": 0.5875 * 28800 / 86400,
}


@pytest.mark.parametrize("kpi", sorted(ISO_EXPECTED))
def test_iso22400_hand_computed(kpi: str) -> None:
    assert iso22400(iso_case())[kpi] == pytest.approx(ISO_EXPECTED[kpi], rel=1e-12)


def test_iso22400_keys() -> None:
    assert set(iso22400(iso_case())) == set(ISO_EXPECTED)
    assert iso22400(iso_case())["oee_index"] == pytest.approx(0.5875)
    assert iso22400(iso_case())["throughput_rate"] == pytest.approx(125.0)


def test_unknown_time_leaves_availability_denominator() -> None:
    # 8 h planned, 48 min without a trustworthy state: PBT = 25 920 s; APT 20 736 -> A = 0.8
    c = Components(planned_s=28800, unknown_s=2880, running_s=20736, down_s=5184)
    assert classic(c)["availability"] == pytest.approx(0.8)
    assert iso22400(c)["availability"] == pytest.approx(0.8)
    assert iso22400(c)["allocation_efficiency"] == pytest.approx(1.0)
    assert flags(c) == ["unknown_time"]


# (components, KPI that must be None, KPI that must be exactly this value)
UNDEFINED = [
    pytest.param(Components(), {"availability", "performance", "quality", "oee"}, {}, id="empty"),
    pytest.param(
        Components(calendar_s=3600, running_s=3600, total=60, good=60, ideal_s=3600),
        {"availability", "oee", "teep"},
        {"performance": 1.0, "quality": 1.0},
        id="no planned time",
    ),
    pytest.param(
        Components(calendar_s=3600, planned_s=3600, unknown_s=3600),
        {"availability", "performance", "quality", "oee", "teep"},
        {},
        id="all planned time unknown",
    ),
    pytest.param(
        # down all shift: nothing made in planned time is a true OEE of 0
        Components(calendar_s=3600, planned_s=3600, down_s=3600),
        {"performance", "quality"},
        {"availability": 0.0, "oee": 0.0, "teep": 0.0},
        id="no run time",
    ),
    pytest.param(
        Components(planned_s=3600, running_s=3600),
        {"quality"},
        {"availability": 1.0, "performance": 0.0, "oee": 0.0},
        id="no count",
    ),
    pytest.param(
        # parts counted with no run time: the state input is wrong, no OEE
        Components(planned_s=3600, down_s=3600, total=10, good=10, ideal_s=10),
        {"performance", "oee"},
        {"availability": 0.0, "quality": 1.0},
        id="count without run time",
    ),
]


@pytest.mark.parametrize(("c", "undefined", "values"), UNDEFINED)
def test_undefined_stays_undefined(
    c: Components, undefined: set[str], values: dict[str, float]
) -> None:
    k = classic(c)
    for name in undefined:
        assert k[name] is None, name
    for name, value in values.items():
        assert k[name] == value, name


def test_iso_undefined_without_denominators() -> None:
    assert all(v is None for v in iso22400(Components()).values())
    k = iso22400(Components(planned_s=3600, running_s=3600, total=10, good=10, ideal_s=3600))
    assert k["mtbf_s"] is None and k["mttr_s"] is None  # no failure
    assert k["technical_efficiency"] == 1.0
    assert k["setup_rate"] == 0.0
    down = iso22400(Components(planned_s=3600, down_s=3600))
    assert down["oee_index"] == 0.0 and down["nee_index"] == 0.0
    assert down["effectiveness"] is None and down["quality_ratio"] is None


def test_energy_per_good() -> None:
    c = dataclasses.replace(oee_com(), energy_kwh=942.4, has_energy=True)
    assert classic(c)["energy_per_good"] == pytest.approx(942.4 / 18848)
    # a meter but nothing good: undefined, not 0 and not infinite
    assert classic(Components(energy_kwh=5.0, has_energy=True))["energy_per_good"] is None


@pytest.mark.parametrize(
    ("c", "tolerance", "expected"),
    [
        # P = 4000/3600 = 1.11: kept, flagged
        (Components(planned_s=3600, running_s=3600, total=4000, good=4000, ideal_s=4000), 1.05,
         ["performance_above_100"]),
        (Components(planned_s=3600, running_s=3600, total=4000, good=4000, ideal_s=4000), 1.2,
         []),
        # P = 1.03 is within the default tolerance
        (Components(planned_s=3600, running_s=3600, total=3708, good=3708, ideal_s=3708), 1.05,
         []),
        (Components(planned_s=3600, running_s=4000, total=1, good=1, ideal_s=1), 1.05,
         ["availability_above_100"]),
        (Components(planned_s=3600, running_s=3600, total=100, good=110, ideal_s=100), 1.05,
         ["quality_above_100"]),
        (Components(planned_s=3600, down_s=3600, total=5, good=5), 1.05,
         ["count_without_run_time"]),
        (Components(calendar_s=60), 1.05, ["no_planned_time"]),
        (Components(planned_s=60, unknown_s=60), 1.05, ["unknown_time"]),
        # float sums of many intervals: A = 1 + 1e-12 is rounding, not an input error
        (Components(planned_s=3600, running_s=3600 * (1 + 1e-12)), 1.05, []),
    ],
)  # fmt: skip
def test_flags(c: Components, tolerance: float, expected: list[str]) -> None:
    assert flags(c, tolerance) == expected


def test_performance_above_100_is_not_clipped() -> None:
    c = Components(planned_s=3600, running_s=3600, total=4000, good=4000, ideal_s=4000)
    assert classic(c)["performance"] == pytest.approx(4000 / 3600)
    assert classic(c)["oee"] == pytest.approx(4000 / 3600)
    assert iso22400(c)["effectiveness"] == pytest.approx(4000 / 3600)


def test_rollup_of_two_machines_is_not_the_mean() -> None:
    # A: a full 8 h shift at 100 %. B: planned 1 h, ran 30 min at ideal speed: OEE 50 %.
    a = Components(planned_s=28800, running_s=28800, total=1600, good=1600, ideal_s=28800)
    b = Components(planned_s=3600, running_s=1800, down_s=1800, total=100, good=100,
                   ideal_s=1800)  # fmt: skip
    line = rollup([a, b])
    oee_a, oee_b, oee_line = classic(a)["oee"], classic(b)["oee"], classic(line)["oee"]
    assert (oee_a, oee_b) == (1.0, 0.5)
    # sum the components, then divide: (28800 + 1800) / (28800 + 3600) = 0.9444
    assert oee_line == pytest.approx(30600 / 32400)
    assert oee_line != pytest.approx(0.75)  # the mean of 100 % and 50 %


def test_addition_sums_every_field() -> None:
    a = Components(
        calendar_s=1, planned_s=2, running_s=3, idle_s=4, down_s=5, setup_s=6,
        planned_stop_s=7, unknown_s=8, total=9, good=10, reject=11, rework=12, ideal_s=13,
        energy_kwh=14, has_energy=False, failures=15, down_by_reason={"jam": 1.0, "x": 2.0},
    )  # fmt: skip
    b = Components(
        calendar_s=100, planned_s=100, running_s=100, idle_s=100, down_s=100, setup_s=100,
        planned_stop_s=100, unknown_s=100, total=100, good=100, reject=100, rework=100,
        ideal_s=100, energy_kwh=100, has_energy=True, failures=100,
        down_by_reason={"jam": 10.0, "y": 20.0},
    )  # fmt: skip
    added = ("good_ideal_s", "reject_ideal_s", "rework_ideal_s", "unknown_count",
             "unknown_ideal_s", "overtime_s", "overtime_count", "implausible",
             "frozen_s")  # fmt: skip
    for i, name in enumerate(added):
        setattr(a, name, 16 + i)
        setattr(b, name, 100)
    s = a + b
    assert s.units is True and (a + dataclasses.replace(b, units=False)).units is False
    for f in dataclasses.fields(Components):
        if f.name not in ("has_energy", "down_by_reason", "units", "products"):
            assert getattr(s, f.name) == getattr(a, f.name) + 100, f.name
    assert s.has_energy is True
    assert s.down_by_reason == {"jam": 11.0, "x": 2.0, "y": 20.0}
    assert a.down_by_reason == {"jam": 1.0, "x": 2.0}  # inputs untouched
    assert rollup([]) == Components()
    assert rollup([a]) == a and rollup([a]) is not a
    assert rollup([a, b, a]) == a + b + a

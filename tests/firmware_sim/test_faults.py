"""Fault state: modes, parameters, parsing from config, seeded probabilities, reboot timing."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_sim.faults import FaultError, FaultMode, Faults, parse_duration


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_default_is_normal_service() -> None:
    faults = Faults()
    assert faults.mode is FaultMode.NONE
    assert faults.action() is FaultMode.NONE
    assert not faults.refusing() and not faults.frozen


def test_from_dict_slow_with_probability() -> None:
    faults = Faults.from_dict({"mode": "slow", "delay": "200ms", "probability": 0.5, "seed": 3})
    assert faults.mode is FaultMode.SLOW
    assert faults.delay == pytest.approx(0.2)
    fired = [faults.action() for _ in range(1000)]
    share = fired.count(FaultMode.SLOW) / 1000
    assert 0.4 < share < 0.6
    assert set(fired) == {FaultMode.SLOW, FaultMode.NONE}
    # the same seed replays the same decisions
    again = Faults.from_dict({"mode": "slow", "delay": "200ms", "probability": 0.5, "seed": 3})
    assert [again.action() for _ in range(1000)] == fired


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"delay": "1s"}, "mode: missing"),
        ({"mode": "explode"}, "unknown fault mode 'explode'"),
        ({"mode": "slow", "dalay": "1s"}, "dalay: not a parameter of mode 'slow'"),
        ({"mode": "refuse", "delay": "1s"}, "delay: not a parameter of mode 'refuse'"),
        ({"mode": "slow", "delay": "fast"}, "delay: expected a duration"),
        ({"mode": "slow", "delay": -1}, "delay: must be a non-negative duration"),
        ({"mode": "drop", "probability": 1.5}, "probability: must be in 0..1"),
        ({"mode": "drop", "probability": "half"}, "probability: expected a number"),
        ({"mode": "exception", "code": 0}, "code: expected an exception code"),
        ({"mode": "drop", "seed": "x"}, "seed: expected an integer"),
    ],
)
def test_bad_config_is_named(config: dict[str, Any], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        Faults.from_dict(config)


def test_a_bad_set_leaves_the_state_alone() -> None:
    faults = Faults()
    faults.set("exception", code=6)
    with pytest.raises(FaultError):
        faults.set("slow", delay="soon")
    assert faults.mode is FaultMode.EXCEPTION and faults.code == 6


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("1.5s", 1.5), ("2min", 120.0), (3, 3.0), (0.25, 0.25), ("7", 7.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1h", "ms", "-1s", True, None, float("nan")])
def test_bad_durations(text: object) -> None:
    with pytest.raises(FaultError):
        parse_duration(text)


def test_connection_and_plant_modes_do_not_act_on_requests() -> None:
    faults = Faults()
    faults.set("freeze")
    assert faults.frozen and faults.action() is FaultMode.NONE
    faults.set("refuse")
    assert faults.refusing() and faults.action() is FaultMode.REFUSE
    faults.clear()
    assert not faults.refusing() and faults.action() is FaultMode.NONE


def test_reboot_runs_listeners_then_refuses_for_the_down_time() -> None:
    clock = _Clock()
    faults = Faults(clock=clock)
    calls: list[str] = []

    def listener() -> None:
        calls.append("reboot")

    faults.add_reboot_listener(listener)
    faults.apply({"mode": "reboot", "down_time": "2s"})
    assert calls == ["reboot"] and faults.reboots == 1
    assert faults.down and faults.refusing()
    clock.t += 1.999
    assert faults.refusing()
    clock.t += 0.001
    assert not faults.refusing() and faults.mode is FaultMode.NONE
    faults.remove_reboot_listener(listener)
    faults.set("reboot", down_time=0)
    assert calls == ["reboot"] and faults.reboots == 2

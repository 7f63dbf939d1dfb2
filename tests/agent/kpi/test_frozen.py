"""Frozen values (docs/kpi.md): a PLC that keeps answering with the same values while the machine
runs. Exact hand-made cases; times UTC on Monday 2026-11-23, a reading a minute, the engine
flushed after each as the agent's tick does."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.kpi.formulas import classic
from agent.model import Quality
from tests.agent.kpi.test_engine import DAY, MIN, Feed, at, kpis, machine, make, parts

TAGS = '  { name = "reject", address = "hr:4", type = "uint32" },\n'
EXTRA = (
    TAGS + '  { name = "temp", address = "hr:10", type = "float32" },\n'
    '  { name = "clock", address = "hr:12", type = "uint16" },\n'
)


def press(frozen: str = 'frozen_after = "5m"', extra: str = "") -> str:
    return machine("press1", frozen=frozen, extra=extra).replace(TAGS, EXTRA)


def send(feed: Feed, t: int, **values: float) -> None:
    feed.send(t, Quality.GOOD, **values)
    feed.events += feed.engine.flush()


def test_a_frozen_source_is_unknown_time_from_its_last_change(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press())
    feed = Feed(engine, config, "press1")
    # Runs at 60 parts a minute; from 06:20 to 06:40 the PLC serves the 06:20 values (frozen)
    # while the press goes on; at 06:40 the values move again, the count 1 200 parts on.
    for minute in range(61):
        frozen = 20 <= minute < 40
        made, temp = (60 * 20, 60.0) if frozen else (60 * minute, 40.0 + minute)
        send(feed, at("06:00") + minute * MIN, state=1, total=made, reject=0, temp=temp)
    [h] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h)
    # The time from the last change (06:20) to the next (06:40) is unknown, not run: the
    # first 5 minutes too, although the freeze was only found at 06:25.
    assert (c.running_s, c.unknown_s, c.frozen_s) == (2400, 1200, 1200)
    # The 1 200 parts counted at 06:40 were made in the frozen time: kept apart.
    assert (c.total, c.unknown_count) == (20 * 60 + 19 * 60, 1200)
    assert h["flags"] == ["unknown_time", "frozen", "unknown_production"]
    assert h["kpis"]["oee"] == pytest.approx(2340 / 2400, abs=1e-12)
    assert engine.statistics()["frozen"] == 1
    # Revised at most once: the hour was still open when the freeze was found.
    assert [d["revision"] for d in kpis(feed.events, "hour", f"{DAY}T06", scope="machine")] == [
        0, 0]  # fmt: skip


def test_a_machine_that_stands_still_is_not_frozen(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press())
    feed = Feed(engine, config, "press1")
    # Down all hour, every value the same: a stopped machine, not a frozen PLC.
    for minute in range(61):
        send(feed, at("06:00") + minute * MIN, state=3, reason=101, total=0, reject=0, temp=40.0)
    [h] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h)
    assert (c.down_s, c.unknown_s, c.frozen_s) == (3600, 0, 0)


def test_moving_values_keep_a_still_counter_a_speed_loss(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press())
    feed = Feed(engine, config, "press1")
    # Running, no part from 06:20 to 06:40 (a stop the state signal misses) but the die
    # temperature moves: the source is alive, the lost time is reduced speed.
    for minute in range(61):
        made = 60 * min(minute, 20) + 60 * max(minute - 40, 0)
        send(feed, at("06:00") + minute * MIN, state=1, total=made, reject=0, temp=40.0 + minute)
    [h] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h)
    assert (c.running_s, c.unknown_s, c.total) == (3600, 0, 20 * 60 + 19 * 60)
    assert classic(c)["performance"] == pytest.approx(2340 / 3600)
    assert "frozen" not in h["flags"]


def test_a_heartbeat_tag_finds_a_freeze_in_any_state(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press(extra='heartbeat = "clock"'))
    feed = Feed(engine, config, "press1")
    # Down all hour; the PLC's clock ticks each minute, except from 06:10 to 06:30 (frozen).
    for minute in range(61):
        clock = minute if not 10 <= minute < 30 else 10
        send(feed, at("06:00") + minute * MIN, state=3, total=0, reject=0, clock=clock)
    [h] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h)
    assert (c.down_s, c.unknown_s, c.frozen_s) == (2400, 1200, 1200)


def test_frozen_after_defaults_to_ten_cycles_and_at_least_a_minute(tmp_path: Path) -> None:
    _, config = make(tmp_path, press(frozen=""))
    kpi = config.machines[0].kpi
    assert kpi is not None and kpi.frozen_after_s() == 60.0  # 1 s cycles
    slow = press(frozen="").replace('ideal_cycle_time = "1s"', 'ideal_cycle_time = "30s"')
    _, config = make(tmp_path, slow)
    kpi = config.machines[0].kpi
    assert kpi is not None and kpi.frozen_after_s() == 300.0


def test_a_gap_without_readings_is_not_a_freeze(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press())
    feed = Feed(engine, config, "press1")
    # Nothing is read from 06:20 to 06:30 (the link is down): the state vouches for max_gap
    # (3 min), the rest is unknown, but nothing answered the same values: not frozen.
    for minute in [*range(21), *range(30, 61)]:
        send(feed, at("06:00") + minute * MIN, state=1, total=60 * minute, reject=0, temp=minute)
    [h] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h)
    assert (c.running_s, c.unknown_s, c.frozen_s) == (3600 - 420, 420, 0)
    assert "frozen" not in h["flags"] and engine.statistics()["frozen"] == 0

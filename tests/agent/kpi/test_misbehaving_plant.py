"""Issue 16: OEE that stays true when the plant misbehaves. Each case with its correct value,
through the real engine (hand-made batches, as tests/agent/kpi/test_engine.py): production in
unknown time, a PLC reboot against a rollover, a line of unlike machines, rework in every
counter combination, production in a break and off shift, late data, the repeated DST hour,
and an agent outage that a replay must place where the live engine had it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.kpi.calendar import planned_intervals, windows
from agent.kpi.counters import counter_step, plausible_limit
from agent.kpi.engine import KpiEngine
from agent.kpi.formulas import Components
from agent.kpi.period import select
from agent.kpi.replay import replay
from agent.kpi.report import hour_label
from agent.kpi.resume import resume
from agent.kpi.view import json_row, time_row
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.store import Store, StoreWriter
from agent.tags import Tag, TagTable
from tests.agent.kpi.test_engine import (
    DAY,
    MIN,
    Feed,
    S,
    at,
    kpis,
    machine,
    make,
    parts,
)
from tests.agent.kpi.windows import kpi_window

# -- 1. production during unknown time ---------------------------------------------------------


def test_parts_counted_across_a_gap_are_not_credited_to_known_run_time(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))  # max_gap 3 min
    feed = Feed(engine, config, "press1")
    # Full speed (1 s ideal cycle) all hour; the link is lost 06:31-06:50 (a bad reading, then
    # nothing), and the first reading after it carries the 20 minutes' parts.
    for minute in range(0, 31):
        feed.send(at("06:00") + minute * MIN, state=1, total=60 * minute, reject=0)
    feed.send(at("06:31"), Quality.BAD, state=0, total=0, reject=0)
    for minute in range(50, 61):
        feed.send(at("06:00") + minute * MIN, state=1, total=60 * minute, reject=0)
    [h06] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h06)
    assert (c.running_s, c.unknown_s) == (41 * 60, 19 * 60)
    # 06:50's delta (1200 parts over 06:30-06:50) is shared out: 1 min of known running, 19
    # min unknown. Without the rule the hour would count 3540 parts in 41 min (P 144 %).
    assert c.unknown_count == 1140 and c.unknown_ideal_s == 1140
    assert c.total == 1800 + 60 + 540  # 07:00's reading counts in hour 07
    assert h06["kpis"]["performance"] == pytest.approx(2400 / 2460)
    assert "unknown_production" in h06["flags"] and "unknown_time" in h06["flags"]
    assert h06["unknown"]["time"] == pytest.approx(19 / 60)
    assert h06["unknown"]["parts"] == pytest.approx(1140 / 3540)


def test_a_counter_read_bad_while_the_state_is_known_counts_whole(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, total=0, reject=0)
    feed.send(at("06:20"), Quality.BAD, total=0)  # the counter alone unreadable
    feed.send(at("06:40"), state=1, total=2400, reject=0)
    feed.send(at("07:00"), state=1, total=3600, reject=0)
    [h06] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    assert parts(h06).total == 2400 and parts(h06).unknown_count == 0  # all known running


def test_the_unknown_share_is_shown_next_to_the_oee() -> None:
    c = Components(planned_s=3600, running_s=2460, unknown_s=1140, total=2400, good=2400,
                   ideal_s=2400, unknown_count=1140, unknown_ideal_s=1140)  # fmt: skip
    w = kpi_window(c, "press1", "stamping/line-1", "hour", f"{DAY}T06", 0, 3600 * S)
    assert time_row(w)[5] == "19m 00s (31.7 %, parts 32.2 %)"  # `lineside oee`
    assert json_row(w)["unknown"] == pytest.approx({"time": 1140 / 3600, "parts": 1140 / 3540})
    assert "unknown_production" in w.flags


# -- 2. a reboot is not a rollover -------------------------------------------------------------


def test_the_plausibility_bound_tells_a_reset_from_a_rollover() -> None:
    limit = plausible_limit(1.0, 60.0)  # 1 part/s for 60 s: at most (2 x 60 + 60) + 2
    assert limit == 182
    assert counter_step(60000, 30, 16, limit).kind == "reset"
    assert counter_step(60000, 30, 16, limit).delta == 30  # not 5566
    assert counter_step(60000, 30, 16).delta == 5566  # what the range alone said
    assert counter_step(4.0e9, 25, 32, limit).delta == 25  # not 2.9e8
    assert counter_step(4.0e9, 25, 32).delta > 2.9e8
    assert counter_step(65530, 4, 16, limit) == counter_step(65530, 4, 16)  # a true rollover
    assert counter_step(65530, 4, 16, limit).kind == "rollover"
    step = counter_step(100, 100100, 32, limit)
    assert (step.delta, step.kind, step.capped) == (182, "normal", True)


def test_a_plc_reboot_adds_the_parts_since_the_reboot_not_a_wrap(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", counter="uint16"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, total=59990, reject=0)
    feed.send(at("06:00", 10), state=1, total=60000, reject=0)
    feed.send(at("06:00", 20), state=1, total=8, reject=0)  # rebooted, counting from 0
    feed.send(at("06:00", 30), state=1, total=18, reject=0)
    feed.send(at("06:00", 40), state=1, total=30018, reject=0)  # impossible in 10 s
    feed.send(at("07:00"), state=2, total=30018, reject=0)
    [h06] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(h06)
    assert c.total == 10 + 8 + 10 + 82  # the jump capped to 1/s x (2 x 10 s + 60 s) + 2
    assert c.implausible == 1 and "implausible_count" in h06["flags"]
    stats = engine.statistics()
    assert (stats["resets"], stats["rollovers"], stats["implausible"]) == (1, 0, 1)


# -- 3. a line of unlike machines --------------------------------------------------------------


def unlike(name: str, cycle: str, counters: str = 'total = "total"\nreject = "reject"') -> str:
    text = machine(name, gap="1h").replace(
        'ideal_cycle_time = "1s"', f'ideal_cycle_time = "{cycle}"'
    )
    text = text.replace('total = "total"\nreject = "reject"', counters)
    return text.replace(
        '{ name = "reject", address = "hr:4", type = "uint32" },',
        '{ name = "reject", address = "hr:4", type = "uint32" },\n'
        '  { name = "good", address = "hr:6", type = "uint32" },\n'
        '  { name = "rework", address = "hr:8", type = "uint32" },',
    )


def test_a_line_weights_quality_by_ideal_time_not_by_count(tmp_path: Path) -> None:
    engine, config = make(tmp_path, unlike("fast", "1s"), unlike("slow", "10s"))
    fast, slow = Feed(engine, config, "fast"), Feed(engine, config, "slow")
    for minute in range(61):
        t = at("06:00") + minute * MIN
        fast.send(t, state=1, total=60 * minute, reject=0)  # 100 %
        slow.send(t, state=1, total=6 * minute, reject=3 * minute)  # Q 50 %
    [line] = kpis(fast.events + slow.events, "hour", f"{DAY}T06", definition="classic",
                  scope="line")  # fmt: skip
    # The 07:00 readings count in hour 07: 59 minutes of parts. Quality Σ good x ICT /
    # Σ made x ICT = (3540 x 1 s + 177 x 10 s) / (3540 x 1 s + 354 x 10 s) = 75 %; by count
    # it would read (3540 + 177) / 3894 = 95.5 %. OEE Σ good x ICT / Σ planned time.
    assert line["kpis"]["quality"] == pytest.approx(0.75)
    assert line["kpis"]["oee"] == pytest.approx((3540 + 1770) / 7200)
    assert line["components"]["total"] is None and line["components"]["good"] is None
    [iso] = kpis(fast.events + slow.events, "hour", f"{DAY}T06", definition="iso22400",
                 scope="line")  # fmt: skip
    assert iso["kpis"]["scrap_ratio"] == pytest.approx(0.25)
    assert iso["kpis"]["throughput_rate"] is None  # units per hour do not add


# -- 4. rework in every counter combination -----------------------------------------------------

COMBINATIONS = {
    "total + reject + rework": ('total = "total"\nreject = "reject"\nrework = "rework"',
                                {"total": 1000, "reject": 30, "rework": 20}),
    "good + reject + rework": ('good = "good"\nreject = "reject"\nrework = "rework"',
                               {"good": 950, "reject": 30, "rework": 20}),
    "total + good + rework": ('total = "total"\ngood = "good"\nrework = "rework"',
                              {"total": 1000, "good": 950, "rework": 20}),
    "total + good + reject + rework": (
        'total = "total"\ngood = "good"\nreject = "reject"\nrework = "rework"',
        {"total": 1000, "good": 950, "reject": 30, "rework": 20},
    ),
}  # fmt: skip


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_rework_is_made_but_not_good(tmp_path: Path, combination: str) -> None:
    counters, counts = COMBINATIONS[combination]
    counted: dict[str, Any] = dict(counts)
    engine, config = make(tmp_path, unlike("press1", "1s", counters))
    feed = Feed(engine, config, "press1")
    zero: dict[str, Any] = dict.fromkeys(counts, 0)
    feed.send(at("06:00"), state=1, **zero)
    feed.send(at("06:30"), state=1, **counted)
    feed.send(at("07:00"), state=1, **counted)
    [h06] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    [iso] = kpis(feed.events, "hour", f"{DAY}T06", definition="iso22400", scope="machine")
    c = parts(h06)
    assert (c.total, c.good, c.reject, c.rework) == (1000, 950, 30, 20)
    assert c.ideal_s == 1000  # rework was made: it takes ideal time
    assert h06["kpis"]["quality"] == pytest.approx(0.95)
    assert iso["kpis"]["first_pass_yield"] == pytest.approx(0.95)
    assert iso["kpis"]["rework_ratio"] == pytest.approx(0.02)
    assert iso["kpis"]["scrap_ratio"] == pytest.approx(0.03)


# -- 5. production in a break and off shift ----------------------------------------------------


def test_running_through_a_break_is_overtime_not_a_performance_gain(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))  # break 10:00-10:30
    feed = Feed(engine, config, "press1")
    for minute in range(0, 91):  # 09:30-11:00 at full speed
        feed.send(at("09:30") + minute * MIN, state=1, total=60 * minute, reject=0)
    [h10] = kpis(feed.events, "hour", f"{DAY}T10", definition="classic", scope="machine")
    c = parts(h10)
    assert (c.planned_s, c.running_s, c.overtime_s) == (1800, 1800, 1800)
    assert c.total == 1800 and c.overtime_count == 1800  # P 100 %, not 200 %
    assert h10["kpis"]["performance"] == pytest.approx(1.0)
    assert "overtime" in h10["flags"] and "count_without_run_time" not in h10["flags"]


def test_off_shift_production_is_overtime_not_a_faulty_state_signal(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))  # shift B ends 22:00
    feed = Feed(engine, config, "press1")
    for minute in range(0, 61):
        feed.send(at("22:00") + minute * MIN, state=1, total=60 * minute, reject=0)
    feed.send(at("23:01"), state=1, total=3660, reject=0)
    [h22] = kpis(feed.events, "hour", f"{DAY}T22", definition="classic", scope="machine")
    assert h22["flags"] == ["overtime", "no_planned_time"]
    assert parts(h22).overtime_count == 3540 and parts(h22).total == 0  # 23:00 is hour 23


# -- 7. late data ------------------------------------------------------------------------------


def test_an_hour_of_late_batches_revises_each_window_once_per_flush(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="2h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, total=0, reject=0)
    feed.send(at("08:00"), state=1, total=7200, reject=0)
    before = len(feed.events)
    for second in range(0, 3600, 10):  # 360 late batches of a lagging second source
        assert feed.send(at("06:00", second), state=2 if second % 20 else 1) == []
    revised = engine.flush()
    keys = [(e.data["scope"], e.data["window"]["name"], e.data["definition"]) for e in revised]
    assert len(keys) == len(set(keys))  # one revision per window, not 360
    # The last late reading (idle at 06:59:50) holds on into hour 07; the shift is open.
    assert {k[1] for k in keys} == {f"{DAY}T06", f"{DAY}T07"}
    assert {e.data["revision"] for e in revised} == {1}
    [h06] = kpis(revised, "hour", f"{DAY}T06", definition="classic", scope="machine")
    assert parts(h06).idle_s == 1800
    assert len(feed.events) == before and engine.flush() == []


# -- 8. the repeated autumn hour ---------------------------------------------------------------

BERLIN = """
[calendar]
timezone = "Europe/Berlin"
[[calendar.shifts]]
name = "N"
start = "00:00"
end = "06:00"
breaks = [{ start = "02:30", end = "03:00" }]
"""


def test_a_break_in_the_repeated_autumn_hour_lasts_its_clock_length(tmp_path: Path) -> None:
    _, config = make(tmp_path, machine("press1"), calendar=BERLIN)
    zone = ZoneInfo("Europe/Berlin")
    day = (int(datetime(2026, 10, 25, 0, tzinfo=zone).timestamp()) * S,
           int(datetime(2026, 10, 26, 0, tzinfo=zone).timestamp()) * S)  # fmt: skip
    planned = planned_intervals(config.calendar, *day)
    # The shift lasts 7 h of real time (02:00-03:00 twice), minus the 30 min break.
    assert sum(e - b for b, e in planned) == (7 * 60 - 30) * MIN
    hours = [w.name for w in windows(config.calendar, *day, ("hour",))]
    labels = [hour_label(h) for h in hours[:5]]
    assert labels == ["00h", "01h", "02h+02", "02h+01", "03h"]


# -- 6. an outage is a fact: the replay places it where the live engine had it -----------------


class Agent:
    """What the runtime does with readings and KPI events on a real store (no polling)."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        self.engine, self.config = make(tmp_path, machine("press1", gap="1h"))
        table = TagTable.from_config(self.config)
        with Store(self.data) as store:
            self.ids = store.register_tags(
                Tag(path=t.path, machine=t.machine, name=t.name) for t in table
            )
        self.engine = KpiEngine(self.config, self.ids)
        self.tag = {t.name: self.ids[t.path] for t in table if t.machine == "press1"}
        self.writer = StoreWriter(self.data)

    def reading(self, t: int, **values: float) -> None:
        names = list(values)
        batch = ReadingBatch.from_columns(
            "plc", [self.tag[n] for n in names], [values[n] for n in names], Quality.GOOD, t
        )
        self.writer.submit_readings(batch)
        self.store(self.engine.on_batch(batch))

    def store(self, events: list[Event]) -> None:
        for e in events:
            self.writer.submit_event(e)

    def stop(self) -> None:
        assert self.writer.flush_blocking(10)
        self.writer.close()

    def start(self, now: int) -> None:
        """Started again: a fresh engine resumed from the store, as the runtime does."""
        self.writer = StoreWriter(self.data)
        self.engine = KpiEngine(self.config, self.ids)
        self.store(resume(self.engine, self.config, now, data_dir=self.data).events)


@contextlib.contextmanager
def stored(agent: Agent) -> Iterator[list[dict[str, Any]]]:
    with Store(agent.data) as store:
        out: list[dict[str, Any]] = []
        after = 0
        while events := store.read_events(after, 1000):
            after = events[-1].seq or after
            out += [e.data for e in events if e.kind is EventKind.KPI]
        yield out


def test_oee_after_a_restart_equals_the_kpi_record_sent_upstream(tmp_path: Path) -> None:
    agent = Agent(tmp_path)
    for minute in range(0, 91):  # 06:00-07:30, full speed
        agent.reading(at("06:00") + minute * MIN, state=1, reason=0, total=60 * minute, reject=0)
    agent.stop()
    agent.start(at("08:00"))  # down 07:30-08:00; the state would vouch for 1 h
    for minute in range(120, 181):  # 08:00-09:00: the counter went on while the agent was down
        agent.reading(at("06:00") + minute * MIN, state=1, reason=0, total=60 * minute, reject=0)
    agent.engine.tick(at("09:05"))
    agent.stop()
    now = at("09:05")
    result = replay(agent.config, select(agent.config, DAY, "hour", now), now, data_dir=agent.data)
    with stored(agent) as events:
        live = {
            (d["window"]["name"], d["definition"]): d
            for d in sorted(events, key=lambda d: d["revision"])
            if d["scope"] == "machine"
        }
    h07 = live[(f"{DAY}T07", "classic")]
    assert h07["components"]["unknown_s"] == 30 * 60  # the outage, not the last state held
    for w in result.windows:
        if w.scope != "machine" or (w.name, "classic") not in live or not w.complete:
            continue
        want = live[(w.name, "classic")]
        assert w.classic == pytest.approx(want["kpis"]), w.name
        assert w.components["unknown_s"] == want["components"]["unknown_s"], w.name
        assert w.components["total"] == want["components"]["total"], w.name
    assert {w.name for w in result.windows} >= {f"{DAY}T07", f"{DAY}T08"}

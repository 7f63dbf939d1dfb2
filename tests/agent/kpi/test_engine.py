"""KpiEngine with hand-made batches: exact components, window splits, unknown time, counters,
late data and line roll-ups. Times are UTC (the calendar's zone) on Monday 2026-11-23."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config, load_config
from agent.kpi.engine import KpiEngine
from agent.kpi.formulas import Components, classic
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.tags import TagTable

DAY = "2026-11-23"
S = 1_000_000_000
MIN = 60 * S


def at(hhmm: str, seconds: int = 0) -> int:
    t = datetime.fromisoformat(f"{DAY}T{hhmm}:00").replace(tzinfo=UTC)
    return int(t.timestamp()) * S + seconds * S


CALENDAR = """
[calendar]
timezone = "UTC"
[[calendar.shifts]]
name = "A"
start = "06:00"
end = "14:00"
breaks = [{ start = "10:00", end = "10:30" }]
[[calendar.shifts]]
name = "B"
start = "14:00"
end = "22:00"
"""


# The hand-made readings here are sparse (a running state once in half an hour, nothing else
# moving): frozen values (docs/kpi.md) are tested on their own, in test_frozen.py.
NOT_FROZEN = 'frozen_after = "24h"'


def machine(
    name: str,
    line: str = "line-1",
    counter: str = "uint32",
    extra: str = "",
    gap: str = "3m",
    frozen: str = NOT_FROZEN,
) -> str:
    return f"""
[[machines]]
name = "{name}"
area = "stamping"
line = "{line}"
[machines.kpi]
state = "state"
states = {{ running = [1], idle = [2], down = [3], setup = [4], planned_stop = [5] }}
reason = "reason"
reasons = {{ "101" = "die jam", "102" = "feeder" }}
total = "total"
reject = "reject"
ideal_cycle_time = "1s"
max_gap = "{gap}"
{frozen}
{extra}
[[sources]]
name = "{name}-plc"
type = "modbus_tcp"
host = "127.0.0.1"
[[sources.units]]
unit_id = 1
machine = "{name}"
tags = [
  {{ name = "state", address = "hr:0", type = "uint16" }},
  {{ name = "reason", address = "hr:1", type = "uint16" }},
  {{ name = "total", address = "hr:2", type = "{counter}" }},
  {{ name = "reject", address = "hr:4", type = "{counter}" }},
]
"""


def make(tmp_path: Path, *machines: str, calendar: str = CALENDAR) -> tuple[KpiEngine, Config]:
    text = 'config_version = 1\n[agent]\nid = "e"\n[plant]\nsite = "s"\n'
    path = tmp_path / "lineside.toml"
    path.write_text(text + "".join(machines) + calendar, encoding="utf-8")
    config = load_config(path)
    table = TagTable.from_config(config)
    # Ids as the store would give them: not the dense ids of the tag table.
    ids = {t.path: 1000 + 7 * t.id for t in table}
    return KpiEngine(config, ids), config


class Feed:
    """Batches for one machine's tags, as the runtime hands them over (store ids)."""

    def __init__(self, engine: KpiEngine, config: Config, name: str) -> None:
        self.engine = engine
        table = TagTable.from_config(config)
        self.ids = {t.name: 1000 + 7 * t.id for t in table if t.machine == name}
        self.events: list[Event] = []

    def send(self, t: int, quality: Quality = Quality.GOOD, **values: float) -> list[Event]:
        names = list(values)
        batch = ReadingBatch.from_columns(
            "plc", [self.ids[n] for n in names], [values[n] for n in names], quality, t
        )
        out = self.engine.on_batch(batch)
        self.events += out
        return out


def kpis(events: list[Event], kind: str, name: str, **match: Any) -> list[dict[str, Any]]:
    """The data of the KPI events of one window, in order."""
    out = []
    for e in events:
        assert e.kind is EventKind.KPI
        w = e.data["window"]
        same = all(e.data.get(k) == v for k, v in match.items())
        if w["kind"] == kind and w["name"] == name and same:
            out.append(e.data)
    return out


def parts(data: dict[str, Any]) -> Components:
    return Components(**data["components"])


# --------------------------------------------------------------------------------------------


def run_day(feed: Feed) -> None:
    """Shift A of a press, minute by minute. The machine runs except 08:00-08:47 (down, die
    jam) and the 10:00-10:30 break (planned stop); while running it makes 50 parts a minute,
    1 of them rejected. Each reading reports the count at that minute."""
    total = reject = 0
    for minute in range(6 * 60, 14 * 60 + 1):
        t = at("00:00") + minute * MIN
        down = 8 * 60 <= minute < 8 * 60 + 47
        brk = 10 * 60 <= minute < 10 * 60 + 30
        state = 3 if down else 5 if brk else 1
        feed.send(t, state=state, reason=101 if down else 0, total=total, reject=reject)
        if state == 1:  # produced in [minute, minute + 1), seen by the next reading
            total += 50
            reject += 1


def test_a_day_gives_exact_components_and_classic_oee(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))
    feed = Feed(engine, config, "press1")
    run_day(feed)
    [classic_a] = kpis(feed.events, "shift", f"{DAY}/A", definition="classic", scope="machine")
    c = parts(classic_a)
    # Planned: 8 h minus the 30 min break. Running: 120 + 73 + 210 min. Counts: readings in
    # [06:00, 14:00) saw 402 running minutes (the 13:59 minute is read at 14:00, next window).
    assert c.planned_s == 450 * 60
    assert c.running_s == 403 * 60
    assert c.down_s == 47 * 60
    assert c.idle_s == c.setup_s == c.unknown_s == c.planned_stop_s == 0
    assert c.calendar_s == 8 * 3600
    assert (c.total, c.reject, c.good) == (402 * 50, 402, 402 * 49)
    assert c.ideal_s == 402 * 50 * 1.0
    assert c.failures == 1
    assert c.down_by_reason == {"down: die jam": 47 * 60}
    k = classic_a["kpis"]
    assert k["availability"] == pytest.approx(403 / 450, abs=1e-12)
    assert k["performance"] == pytest.approx(20100 / (403 * 60), abs=1e-12)
    assert k["quality"] == pytest.approx(19698 / 20100, abs=1e-12)
    assert k["oee"] == pytest.approx(19698 / (450 * 60), abs=1e-12)  # simple OEE
    assert classic_a["revision"] == 0
    assert classic_a["window"]["end_ns"] == at("14:00")
    assert classic_a["pareto"] == [["down: die jam", 2820.0, 1.0]]
    assert classic_a["losses"]["breakdowns"] == 2820.0
    iso = kpis(feed.events, "shift", f"{DAY}/A", definition="iso22400", scope="machine")
    assert len(iso) == 1 and iso[0]["kpis"]["mttr_s"] == 2820.0
    # The hour of the break: 30 min planned, the planned-stop state outside the plan is not a
    # loss; 08:00-09:00 has the failure.
    [h10] = kpis(feed.events, "hour", f"{DAY}T10", definition="classic", scope="machine")
    assert parts(h10).planned_s == 1800 and parts(h10).running_s == 1800
    [h08] = kpis(feed.events, "hour", f"{DAY}T08", definition="classic", scope="machine")
    assert parts(h08).down_s == 47 * 60 and parts(h08).failures == 1
    # Every hour of the shift closed once; the day is still open.
    # + the line, the area and the site
    assert len(kpis(feed.events, "hour", f"{DAY}T13", definition="classic")) == 4
    assert kpis(feed.events, "day", DAY) == []


def test_shift_boundary_splits_time_exactly(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))
    feed = Feed(engine, config, "press1")
    # Running throughout; readings 40 s apart and never on the 14:00 boundary.
    t = at("13:50", 10)
    n = 0
    while t < at("14:20"):
        feed.send(t, state=1, total=n, reject=0)
        n += 40
        t += 40 * S
    [a] = kpis(feed.events, "shift", f"{DAY}/A", definition="classic", scope="machine")
    [h13] = kpis(feed.events, "hour", f"{DAY}T13", definition="classic", scope="machine")
    # The machine's first reading at 13:50:10: the windows holding it count from their start,
    # the time before the reading as unknown.
    assert parts(h13).running_s == 9 * 60 + 50
    assert parts(h13).unknown_s == 50 * 60 + 10
    assert parts(a).running_s == 9 * 60 + 50
    assert parts(a).unknown_s == 450 * 60 - (9 * 60 + 50)  # planned time before the reading
    # Shift B's first hour closes at 15:00; feed on to it and check it starts at 14:00 sharp.
    feed.send(at("15:00", 1), state=1, total=n, reject=0)
    [h14] = kpis(feed.events, "hour", f"{DAY}T14", definition="classic", scope="machine")
    assert parts(h14).running_s + parts(h14).unknown_s == 3600
    # The last reading at 14:19:30 vouches for 3 min (max_gap); then unknown until 15:00:01.
    assert parts(h14).running_s == 19 * 60 + 30 + 180
    assert "unknown_time" in h14["flags"]
    # Counts go by reading time: the readings up to 13:59:50 in shift A, the rest in B.
    assert parts(a).total == 40 * 14  # 13:50:50 ... 13:59:30 each saw 40 more


def test_bad_quality_and_gaps_are_unknown_not_guessed(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))
    feed = Feed(engine, config, "press1")
    for minute in range(9 * 60, 12 * 60 + 1):
        t = at("00:00") + minute * MIN
        if 9 * 60 + 15 <= minute < 9 * 60 + 25:
            feed.send(t, Quality.BAD, state=0)  # the PLC link fails: 10 min bad quality
        elif 11 * 60 <= minute < 11 * 60 + 20:
            continue  # no readings at all for 20 min
        else:
            feed.send(t, state=1)
    [h09] = kpis(feed.events, "hour", f"{DAY}T09", definition="classic", scope="machine")
    [h11] = kpis(feed.events, "hour", f"{DAY}T11", definition="classic", scope="machine")
    assert parts(h09).unknown_s == 600 and parts(h09).running_s == 3000
    # The last reading at 10:59 vouches for running until 11:02; 11:02-11:20 is unknown.
    assert parts(h11).unknown_s == 18 * 60 and parts(h11).running_s == 42 * 60
    assert "unknown_time" in h11["flags"]
    # Availability is measured on the known time only: it ran all the time it was seen.
    assert h11["kpis"]["availability"] == 1.0
    # An unknown state code is unknown time too (12:03-12:30 is the gap after 12:00).
    feed.send(at("12:30"), state=9)
    feed.send(at("13:00"), state=1)
    [h12] = kpis(feed.events, "hour", f"{DAY}T12", definition="classic", scope="machine")
    assert parts(h12).unknown_s == 3420 and parts(h12).running_s == 180


def test_counter_rollover_and_reset_mid_shift(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", counter="uint16"))
    feed = Feed(engine, config, "press1")
    values = [65500, 65530, 4, 20, 3, 10, 10]  # wraps at 2^16 (+10), then a PLC reboot (+3)
    for i, v in enumerate(values):
        feed.send(at("07:00") + i * MIN, state=1, total=v, reject=0)
    feed.send(at("08:00"), state=1, total=10, reject=0)
    [h07] = kpis(feed.events, "hour", f"{DAY}T07", definition="classic", scope="machine")
    assert parts(h07).total == 30 + 10 + 16 + 3 + 7
    assert engine.statistics()["rollovers"] == 1 and engine.statistics()["resets"] == 1
    # A bad-quality counter reading is skipped, not counted as a reset to 0.
    feed.send(at("08:01"), Quality.BAD, total=0)
    feed.send(at("08:02"), state=1, total=15, reject=0)
    feed.send(at("09:00"), state=1, total=15, reject=0)
    [h08] = kpis(feed.events, "hour", f"{DAY}T08", definition="classic", scope="machine")
    assert parts(h08).total == 5


def test_late_data_reemits_the_window_with_a_new_revision(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    feed.send(at("06:50"), state=1, reason=0, total=3000, reject=0)
    first = feed.send(at("07:00"), state=1, reason=0, total=3600, reject=0)
    [h06] = kpis(first, "hour", f"{DAY}T06", definition="classic", scope="machine")
    assert parts(h06).running_s == 3600 and parts(h06).down_s == 0
    # Replayed after an outage: the machine was down 06:20-06:30 (feeder).
    late = feed.send(at("06:20"), state=3, reason=102)
    late += feed.send(at("06:30"), state=1, reason=0)
    assert late == []  # late batches wait for the flush (the runtime's tick)
    late = engine.flush()
    revised = kpis(late, "hour", f"{DAY}T06", definition="classic", scope="machine")
    assert [r["revision"] for r in revised] == [1]  # one per flush, not one per late batch
    assert parts(revised[-1]).down_s == 600 and parts(revised[-1]).running_s == 3000
    assert parts(revised[-1]).down_by_reason == {"down: feeder": 600.0}
    assert parts(revised[-1]).failures == 1
    assert parts(revised[-1]).total == 3000  # counters unchanged (07:00's count is hour 07)
    # The line follows with its own revisions; the open windows carry the change.
    line = kpis(late, "hour", f"{DAY}T06", definition="classic", scope="line")
    assert [r["revision"] for r in line] == [1]
    # The same reading replayed again changes nothing and emits nothing.
    assert feed.send(at("06:30"), state=1, reason=0) == [] and engine.flush() == []
    assert engine.statistics()["duplicates"] >= 1
    feed.send(at("14:00"), state=1, reason=0, total=3600 * 8, reject=0)
    [a] = kpis(feed.events, "shift", f"{DAY}/A", definition="classic", scope="machine")
    assert parts(a).down_s == 600 and a["revision"] == 0


def test_the_tick_emits_the_revisions_of_the_late_data_it_folds_in(tmp_path: Path) -> None:
    # The runtime only ticks (and the tick flushes): the revised windows must come out of it.
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    feed.send(at("07:00"), state=1, reason=0, total=3600, reject=0)
    assert feed.send(at("06:20"), state=3, reason=102) == []
    revised = kpis(engine.tick(at("07:00")), "hour", f"{DAY}T06", definition="classic")
    assert [(r["scope"], r["revision"]) for r in revised] == [
        ("machine", 1), ("line", 1), ("area", 1), ("site", 1)]  # fmt: skip
    assert parts(revised[0]).down_s == 2400
    # An outage flushes too.
    assert feed.send(at("06:40"), state=1, reason=0) == []
    revised = kpis(engine.outage(at("07:00")), "hour", f"{DAY}T06", scope="machine")
    assert [r["revision"] for r in revised] == [2, 2]


def test_late_data_older_than_the_retained_day_is_dropped(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))
    feed = Feed(engine, config, "press1")
    for h in range(0, 60, 2):  # 60 h of readings every 2 min
        for m in range(0, 60 * 2, 2):
            feed.send(at("00:00") + h * 3600 * S + m * MIN, state=1)
    assert feed.send(at("01:00"), state=3) == []
    assert engine.statistics()["late_dropped"] == 1


def test_two_machines_on_a_line_roll_up_by_components(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"), machine("press2"))
    one, two = Feed(engine, config, "press1"), Feed(engine, config, "press2")
    # press1 runs the whole hour at full speed. press2 is seen from 07:30 only (its first half
    # hour is unknown), runs 15 min at half speed with 10 % rejects, then breaks down.
    for minute in range(0, 61):
        t = at("07:00") + minute * MIN
        one.send(t, state=1, total=60 * minute, reject=0)
        if minute >= 30:
            made = min(minute, 45) - 30
            two.send(t, state=1 if minute < 45 else 3, total=30 * made, reject=3 * made)
    events = one.events + two.events
    [m1] = kpis(events, "hour", f"{DAY}T07", definition="classic", machine="press1")
    [m2] = kpis(events, "hour", f"{DAY}T07", definition="classic", machine="press2")
    [line] = kpis(events, "hour", f"{DAY}T07", definition="classic", scope="line")
    assert line["line"] == "stamping/line-1" and line["machine"] is None
    summed = parts(m1) + parts(m2)
    summed.units = False  # machines' counts are not added: the line's are null
    for name in ("total", "good", "reject", "rework", "unknown_count", "overtime_count"):
        assert line["components"][name] is None
        setattr(summed, name, line["components"][name])
    assert parts(line) == summed
    oee = line["kpis"]["oee"]
    assert oee == pytest.approx(classic(summed)["oee"])
    # (3540 + 405 good x 1 s) / (3600 + 1800) s of known planned time (the 08:00 readings
    # count in the next hour), not the mean of the machines' OEEs (3540/3600 and 405/1800).
    assert oee == pytest.approx((3540 + 405) / 5400)
    assert m2["kpis"]["oee"] == pytest.approx(405 / 1800)
    assert oee != pytest.approx((m1["kpis"]["oee"] + m2["kpis"]["oee"]) / 2)
    # The line's window was emitted only once both machines had closed it.
    assert events.index(next(e for e in events if e.data is line)) > events.index(
        next(e for e in events if e.data is m2)
    )


def test_packml_states_and_derived_good(tmp_path: Path) -> None:
    text = machine("press1", gap="1h").replace(
        "states = { running = [1], idle = [2], down = [3], setup = [4], planned_stop = [5] }",
        'packml = true\nunit_mode = "reason"',
    )
    text = text.replace('reason = "reason"\nreasons = { "101" = "die jam", "102" = "feeder" }\n',
                        "")  # fmt: skip
    engine, config = make(tmp_path, text, calendar="")
    feed = Feed(engine, config, "press1")
    feed.send(at("07:00"), state=6, reason=1, total=0, reject=0)  # Execute, Production
    feed.send(at("07:20"), state=11, reason=1, total=1000, reject=10)  # Held: down
    feed.send(at("07:30"), state=2, reason=3, total=1000, reject=10)  # Stopped, Manual: setup
    feed.send(at("07:40"), state=2, reason=2, total=1000, reject=10)  # Maintenance: planned
    feed.send(at("07:50"), state=6, reason=1, total=1000, reject=10)
    feed.send(at("08:00"), state=6, reason=1, total=1500, reject=10)
    [h07] = kpis(feed.events, "hour", f"{DAY}T07", definition="classic", scope="machine")
    c = parts(h07)
    assert (c.running_s, c.down_s, c.setup_s, c.planned_stop_s) == (1800, 600, 600, 600)
    assert c.planned_s == 3000  # no calendar: 24/7, minus the planned stop
    assert (c.total, c.reject, c.good) == (1000, 10, 990)  # the 08:00 reading is in hour 08


def test_tick_closes_windows_of_a_silent_machine(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))
    feed = Feed(engine, config, "press1")
    feed.send(at("07:59"), state=1, total=0, reject=0)
    assert engine.tick(at("08:02")) == []  # within max_gap: a reading may still come
    events = engine.tick(at("08:03", 1))
    [h07] = kpis(events, "hour", f"{DAY}T07", definition="classic", scope="machine")
    assert parts(h07).running_s == 60 and parts(h07).unknown_s == 59 * 60


def test_snapshot_of_the_shift_in_progress(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"), machine("press2"))
    one, two = Feed(engine, config, "press1"), Feed(engine, config, "press2")
    one.send(at("06:00"), state=1, total=0, reject=0)
    two.send(at("06:00"), state=2, total=0, reject=0)
    one.send(at("06:30"), state=1, total=1800, reject=18)
    snap = engine.snapshot(at("06:31"))
    assert snap["window"]["name"] == f"{DAY}/A"
    m1 = snap["machines"]["press1"]
    assert m1["components"]["running_s"] == 31 * 60  # carried on to now, within max_gap
    assert m1["classic"]["quality"] == pytest.approx(0.99)
    m2 = snap["machines"]["press2"]
    assert m2["components"]["idle_s"] == 3 * 60 and m2["components"]["unknown_s"] == 28 * 60
    assert snap["lines"]["stamping/line-1"]["components"]["total"] is None  # units not added
    assert snap["lines"]["stamping/line-1"]["components"]["ideal_s"] == 1800
    # The live view changes nothing: the windows still close with what readings said.
    assert engine.snapshot(at("06:31")) == snap
    assert engine.on_batch(ReadingBatch.from_columns("x", [5], [1.0], Quality.GOOD, 0)) == []


def test_stop_time_by_reason_names_the_category(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("07:00"), state=1, reason=0, total=0, reject=0)  # running: no loss
    feed.send(at("07:10"), state=3, reason=101)  # down, die jam
    feed.send(at("07:20"), state=2, reason=102)  # idle, feeder
    feed.send(at("07:25"), state=4, reason=101)  # setup, reason 101 again
    feed.send(at("07:40"), state=5, reason=102)  # a planned stop is no loss
    feed.send(at("07:50"), state=9, reason=103)  # a code the table lacks: unknown, no loss
    feed.send(at("07:52"), state=2, reason=103)  # idle, a reason without a label
    feed.send(at("08:00"), state=1, reason=0)
    [h07] = kpis(feed.events, "hour", f"{DAY}T07", definition="classic", scope="machine")
    assert parts(h07).down_by_reason == {
        "down: die jam": 600.0,
        "idle: feeder": 300.0,
        "setup: die jam": 900.0,
        "idle: reason 103": 480.0,
    }
    assert h07["pareto"] == [
        ["setup: die jam", 900.0, pytest.approx(900 / 2280)],
        ["down: die jam", 600.0, pytest.approx(1500 / 2280)],
        ["idle: reason 103", 480.0, pytest.approx(1980 / 2280)],
        ["idle: feeder", 300.0, 1.0],
    ]
    c = parts(h07)
    assert sum(c.down_by_reason.values()) == c.down_s + c.idle_s + c.setup_s


def test_snapshot_of_the_hour_in_progress(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:50"), state=1, total=0, reject=0)
    feed.send(at("07:10"), state=3, reason=101, total=1200, reject=0)
    snap = engine.snapshot(at("07:15"), kind="hour")
    assert snap["window"]["name"] == f"{DAY}T07"
    c = snap["machines"]["press1"]["components"]
    assert (c["calendar_s"], c["running_s"], c["down_s"]) == (900, 600, 300)
    assert c["total"] == 1200  # the 07:10 reading's count is in hour 07
    assert snap["lines"]["stamping/line-1"]["components"]["down_s"] == 300
    # The same instant seen as the shift and as the day.
    assert engine.snapshot(at("07:15"), kind="shift")["window"]["name"] == f"{DAY}/A"
    assert engine.snapshot(at("07:15"), kind="day")["machines"]["press1"]["components"][
        "running_s"
    ] == pytest.approx(1200)
    # No shift runs at 23:00: the shift is refused, the default falls back to the day.
    with pytest.raises(ValueError, match="no shift window"):
        engine.snapshot(at("23:00"), kind="shift")
    assert engine.snapshot(at("23:00"))["window"]["kind"] == "day"


def test_a_line_closes_its_windows_when_one_machine_never_reports(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"), machine("press2"), machine("alone", "l2"))
    feed = Feed(engine, config, "press1")
    for minute in range(61):  # 06:00 to 07:00
        feed.send(at("06:00") + minute * MIN, state=1, total=50 * minute, reject=minute // 2)
    assert engine.tick(at("07:02")) == []  # nothing is over by more than max_gap yet
    line = [e for e in feed.events if e.data["scope"] == "line"]
    assert line == []  # press2 has closed nothing: the line waits
    events = engine.tick(at("07:03", 1))
    [l06] = kpis(events, "hour", f"{DAY}T06", definition="classic", scope="line")
    c = parts(l06)
    assert (c.planned_s, c.running_s, c.unknown_s) == (7200, 3600, 3600)  # press2: unknown
    assert c.total is None and c.reject is None  # counts are not added across machines
    assert (c.ideal_s, c.reject_ideal_s) == (2950, 29)  # the 07:00 reading counts in hour 07
    [p2] = kpis(events, "hour", f"{DAY}T06", definition="classic", machine="press2")
    assert parts(p2).unknown_s == 3600 and p2["kpis"]["oee"] is None
    assert "unknown_time" in p2["flags"]
    # A machine alone in a silent line says nothing; the silent ones are named.
    assert not [e for e in events if e.data["line"] == "stamping/l2"]
    assert engine.silent() == ["press2", "alone"]
    # When press2 speaks at last, it goes on from where its unknown time stopped.
    Feed(engine, config, "press2").send(at("07:10"), state=2, total=5, reject=0)
    assert engine.silent() == ["alone"]
    late = engine.tick(at("08:30"))
    [p2_07] = kpis(late, "hour", f"{DAY}T07", definition="classic", machine="press2")
    assert parts(p2_07).idle_s == 180 and parts(p2_07).unknown_s == 3600 - 180


def test_an_outage_makes_the_time_until_the_next_reading_unknown(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("07:00"), state=1, total=0, reject=0)
    feed.send(at("07:10"), state=1, total=600, reject=0)
    assert engine.outage(at("07:15")) == []  # nothing closes before 07:15
    feed.send(at("07:40"), state=1, total=2400, reject=0)
    feed.send(at("08:00"), state=1, total=3600, reject=0)
    [h07] = kpis(feed.events, "hour", f"{DAY}T07", definition="classic", scope="machine")
    c = parts(h07)
    # The state vouched until the outage (07:15), not for max_gap: 07:15-07:40 is unknown.
    assert (c.running_s, c.unknown_s) == (35 * 60, 25 * 60)
    # 07:10-07:40 counted 1800 parts over 5 min known running and 25 min unknown: 300 count,
    # 1500 are production in unknown time (docs/kpi.md), kept out of the OEE.
    assert c.total == 600 + 300 and c.unknown_count == 1500  # 08:00 counts in hour 08
    assert "unknown_production" in h07["flags"]
    # A late reading before the outage recomputes the hour; the outage stays where it was.
    feed.send(at("07:05"), state=3, reason=101)
    feed.events += engine.flush()
    revised = kpis(feed.events, "hour", f"{DAY}T07", definition="classic", scope="machine")
    r = parts(revised[-1])
    assert revised[-1]["revision"] == 1
    assert (r.running_s, r.down_s, r.unknown_s) == (30 * 60, 5 * 60, 25 * 60)


def test_an_outage_closes_the_windows_that_ended_before_it(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:30"), state=1, total=0, reject=0)
    events = engine.outage(at("07:10"))
    [h06] = kpis(events, "hour", f"{DAY}T06", definition="classic", scope="machine")
    assert parts(h06).running_s == 1800  # 06:30-07:00 known, the state vouched within max_gap


def test_revisions_go_on_from_the_stored_ones(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, total=0, reject=0)
    feed.send(at("07:00"), state=1, total=3000, reject=0)
    assert {e.data["revision"] for e in feed.events} == {0}
    engine.adopt_revisions(
        {
            ("machine", "press1", "hour", f"{DAY}T06"): 4,
            ("line", "stamping/line-1", "hour", f"{DAY}T06"): 2,
            ("area", "stamping", "hour", f"{DAY}T06"): 7,
            ("machine", "press1", "hour", f"{DAY}T05"): 9,
        }
    )
    feed.send(at("06:30"), state=3, reason=101)  # late: the hour is revised
    feed.events += engine.flush()
    revised = kpis(feed.events, "hour", f"{DAY}T06", definition="classic")
    assert [(d["scope"], d["revision"]) for d in revised[-4:]] == [
        ("machine", 5), ("line", 3), ("area", 8), ("site", 1)]  # fmt: skip
    # A lower stored revision changes nothing.
    engine.adopt_revisions({("machine", "press1", "hour", f"{DAY}T06"): 1})
    feed.send(at("06:40"), state=1)
    feed.events += engine.flush()
    assert kpis(feed.events, "hour", f"{DAY}T06", scope="machine")[-1]["revision"] == 6

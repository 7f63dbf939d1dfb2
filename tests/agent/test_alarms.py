"""Alarm evaluation (agent/alarms.py): limits with hysteresis and delay, equals, stale, acks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.alarms import NS, AlarmBook, AlarmRule
from agent.config import AlarmSection, load_config
from agent.errors import ConfigError
from agent.kpi.config import MachineKpi
from agent.model import EventKind, Quality, ReadingBatch

TAG = 7
OTHER = 3


def rule(**overrides: Any) -> AlarmRule:
    section = AlarmSection.model_validate(
        {"name": "hot", "machine": "press1", "tag": "oil_temp", **overrides}
    )
    return AlarmRule.of(section, TAG)


def batch(rows: list[tuple[float, float, int]], tag: int = TAG) -> ReadingBatch:
    """Readings of one tag as (seconds, value, quality)."""
    return ReadingBatch.from_columns(
        "plc",
        [tag] * len(rows),
        [v for _, v, _ in rows],
        [q for _, _, q in rows],
        [int(t * NS) for t, _, _ in rows],
    )


G, B = int(Quality.GOOD), int(Quality.BAD)

# (config, readings as (s, value, quality), expected transitions as (s, active))
CASES: list[
    tuple[str, dict[str, Any], list[tuple[float, float, int]], list[tuple[float, bool]]]
] = [
    (
        "above raises and clears",
        {"above": 60},
        [(1, 59, G), (2, 61, G), (3, 59, G)],
        [(2, True), (3, False)],
    ),
    ("equal to the limit is not above", {"above": 60}, [(1, 60, G)], []),
    (
        "hysteresis holds inside the band",
        {"above": 60, "hysteresis": 2},
        [(1, 61, G), (2, 59, G), (3, 58.5, G), (4, 58, G)],
        [(1, True), (4, False)],
    ),
    (
        "below with hysteresis",
        {"below": 10, "hysteresis": 1},
        [(1, 9, G), (2, 10.5, G), (3, 11, G)],
        [(1, True), (3, False)],
    ),
    (
        "delay: a short excursion is not raised",
        {"above": 60, "delay": "5s"},
        [(1, 61, G), (3, 59, G), (4, 61, G), (8, 61, G), (9, 61, G)],
        [(9, True)],
    ),
    (
        "bad quality neither raises nor clears",
        {"above": 60},
        [(1, 70, B), (2, 61, G), (3, 0, B), (4, 50, G)],
        [(2, True), (4, False)],
    ),
    (
        "equals: a state code",
        {"equals": 3},
        [(1, 1, G), (2, 3, G), (3, 3, G), (4, 1, G)],
        [(2, True), (4, False)],
    ),
    (
        "equals: a bit given as true",
        {"equals": True},
        [(1, 0, G), (2, 1, G), (3, 0, G)],
        [(2, True), (3, False)],
    ),
    (
        "stale: bad for the duration",
        {"stale": "10s"},
        [(0, 1, G), (2, 0, B), (5, 0, B), (12, 0, B), (13, 1, G)],
        [(12, True), (13, False)],
    ),
]


@pytest.mark.parametrize(
    ("config", "readings", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_transitions(
    config: dict[str, Any],
    readings: list[tuple[float, float, int]],
    expected: list[tuple[float, bool]],
) -> None:
    book = AlarmBook([rule(**config)], start_ns=0)
    seen = []
    for row in readings:  # one reading per batch, as a poll stores it
        seen += [(e.ts_ns / NS, e.data["active"]) for e in book.on_batch(batch([row]))]
    assert seen == expected
    # The same readings as one batch give the same transitions: the walk is per reading.
    book = AlarmBook([rule(**config)], start_ns=0)
    assert [(e.ts_ns / NS, e.data["active"]) for e in book.on_batch(batch(readings))] == expected


def test_events_keep_the_store_full_shape_and_say_why() -> None:
    book = AlarmBook([rule(above=60, severity="critical")], start_ns=0)
    (raised,) = book.on_batch(batch([(1, 63.5, G)]))
    assert raised.kind is EventKind.ALARM and raised.machine == "press1"
    assert raised.data == {
        "alarm": "hot",
        "active": True,
        "reason": "oil_temp 63.5 above 60",
        "tag": "oil_temp",
        "condition": "above",
        "limit": 60.0,
        "severity": "critical",
        "value": 63.5,
    }
    (cleared,) = book.on_batch(batch([(31, 40, G)]))
    assert cleared.data["active"] is False
    assert cleared.data["reason"] == "oil_temp 63.5 above 60"  # why it had been raised
    assert cleared.data["active_s"] == 30.0


CODES_KPI = MachineKpi.model_validate(
    {
        "state": "state",
        "states": {"running": [1], "idle": [2], "down": [3, 7], "setup": [4]},
        "total": "count",
        "good": "ok",
        "ideal_rate": 1.0,
    }
)
PACKML_KPI = MachineKpi.model_validate(
    {"state": "state", "packml": True, "total": "count", "good": "ok", "ideal_rate": 1.0}
)


@pytest.mark.parametrize(
    ("kpi", "readings", "expected"),
    [
        (CODES_KPI, [(1, 1, G), (2, 3, G), (3, 7, G), (4, 1, G)], [(2, True), (4, False)]),
        (CODES_KPI, [(1, 3, B), (2, 1, G)], []),  # a bad reading is no state
        (PACKML_KPI, [(1, 6, G), (2, 11, G), (3, 9, G), (4, 6, G)], [(2, True), (4, False)]),
    ],
    ids=["code table", "bad reading", "packml held and aborted"],
)
def test_state_alarm(
    kpi: MachineKpi,
    readings: list[tuple[float, float, int]],
    expected: list[tuple[float, bool]],
) -> None:
    section = AlarmSection(name="down", machine="press1", state="down")
    book = AlarmBook([AlarmRule.of(section, TAG, kpi)], start_ns=0)
    events = book.on_batch(batch(readings))
    assert [(e.ts_ns / NS, e.data["active"]) for e in events] == expected
    if events:
        assert events[0].data["reason"] == "press1 is down"
        assert events[0].data["state"] == "down" and events[0].data["tag"] == "state"


def test_other_tags_are_ignored() -> None:
    book = AlarmBook([rule(above=60)], start_ns=0)
    assert book.on_batch(batch([(1, 99, G)], tag=OTHER)) == []


def test_tick_raises_after_the_delay_without_a_new_reading() -> None:
    # Report by exception stores a steady value once: the delay must run out on the clock.
    book = AlarmBook([rule(above=60, delay="5s")], start_ns=0)
    assert book.on_batch(batch([(1, 61, G)])) == []
    assert book.tick(5 * NS) == []
    (raised,) = book.tick(6 * NS)
    assert raised.data["active"] is True and raised.data["value"] == 61
    assert book.tick(7 * NS) == []  # raised once


def test_a_source_that_never_answers_goes_stale() -> None:
    book = AlarmBook([rule(stale="30s")], start_ns=100 * NS)
    assert book.tick(129 * NS) == []
    (raised,) = book.tick(130 * NS)
    assert raised.data["reason"] == "oil_temp: no good reading for 30 s"


def test_acknowledge_is_an_audit_event_once() -> None:
    book = AlarmBook([rule(above=60)], start_ns=0)
    assert book.acknowledge("hot", "127.0.0.1", 1) is None  # nothing active
    book.on_batch(batch([(1, 61, G)]))
    audit = book.acknowledge("hot", "127.0.0.1", 2 * NS)
    assert audit is not None and audit.kind is EventKind.AUDIT
    assert audit.data["alarm"] == "hot" and audit.data["by"] == "127.0.0.1"
    assert audit.data["active_since_ns"] == 1 * NS
    assert book.acknowledge("hot", "127.0.0.1", 3 * NS) is None
    assert book.acknowledge("nope", "x", 3 * NS) is None
    (row,) = book.view(11 * NS)
    assert row["acknowledged"] is True and row["active_s"] == 10.0
    book.on_batch(batch([(12, 50, G)]))
    assert book.view(13 * NS) == []


def test_many_alarms_on_one_batch() -> None:
    rules = [
        rule(above=60),
        AlarmRule.of(AlarmSection(name="low", machine="m", tag="t", below=5), OTHER),
    ]
    book = AlarmBook(rules, start_ns=0)
    both = ReadingBatch.from_columns("plc", [TAG, OTHER, 1], [70, 1, 0], Quality.GOOD, NS)
    assert sorted(e.data["alarm"] for e in book.on_batch(both)) == ["hot", "low"]
    assert np.array_equal(book._watched, [OTHER, TAG])


CONFIG = """
config_version = 1
[agent]
id = "a"
[plant]
site = "s"
[[machines]]
name = "press1"
area = "a"
line = "l"
[[sources]]
name = "plc"
type = "modbus_tcp"
host = "127.0.0.1"
[[sources.units]]
unit_id = 1
machine = "press1"
tags = [{ name = "oil_temp", address = "hr:0", type = "float32" }]
"""


@pytest.mark.parametrize(
    ("alarm", "message"),
    [
        (
            'name = "x"\nmachine = "press1"\ntag = "nope"\nabove = 1',
            "alarms[0].tag: machine 'press1' has no tag 'nope' (its tags: oil_temp)",
        ),
        (
            'name = "x"\nmachine = "press1"\ntag = "oil_temp"',
            "alarms[0]: set one condition: state, above, below, equals or stale",
        ),
        (
            'name = "x"\nmachine = "press1"\ntag = "oil_temp"\nabove = 1\nbelow = 0',
            "alarms[0]: set one condition, not above and below (make two alarms)",
        ),
        (
            'name = "x"\nmachine = "press1"\ntag = "oil_temp"\nequals = 1\nhysteresis = 1',
            "alarms[0]: hysteresis applies to an above or below limit only",
        ),
        ('name = "x"\nmachine = "press1"\ntag = "oil_temp"\nabove = 1\ndelay = "soon"', "delay"),
        (
            'name = "x"\nmachine = "press1"\nstate = "down"',
            "alarms[0].state: machine 'press1' has no [machines.kpi] state tag to watch",
        ),
        (
            'name = "x"\nmachine = "press1"\nstate = "down"\ntag = "oil_temp"',
            "alarms[0].tag: a state alarm watches the [machines.kpi] state tag: leave out tag",
        ),
        (
            'name = "x"\nmachine = "press1"\nabove = 1',
            "alarms[0].tag: missing key 'tag': the tag this alarm watches",
        ),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, alarm: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG + "[[alarms]]\n" + alarm + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_config_loads_alarms(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        CONFIG + '[[alarms]]\nname = "hot"\nmachine = "press1"\ntag = "oil_temp"\n'
        'above = 60\nhysteresis = 2\ndelay = "5s"\n'
    )
    (alarm,) = load_config(path).alarms
    assert (alarm.condition, alarm.above, alarm.delay) == ("above", 60.0, 5.0)


def test_reconfigure_keeps_the_same_rules_and_clears_the_others() -> None:
    down = AlarmSection(name="down", machine="press1", state="down")
    state_rule = AlarmRule.of(down, OTHER, CODES_KPI)  # its limit is NaN
    book = AlarmBook([state_rule, rule(above=60)], start_ns=0)
    book.on_batch(batch([(1, 3, G)], tag=OTHER))  # down
    book.on_batch(batch([(1, 61, G)]))
    assert book.acknowledge("down", "op", 2 * NS) is not None
    same = AlarmRule.of(down, OTHER, CODES_KPI)
    events = book.reconfigure([same, rule(above=70)], 3 * NS)  # "hot" changed
    (cleared,) = events
    assert cleared.data["alarm"] == "hot" and cleared.data["active"] is False
    assert cleared.data["cleared_by"] == "config reload" and cleared.data["limit"] == 60
    assert cleared.data["active_s"] == 2.0
    (row,) = book.view(3 * NS)
    assert row["alarm"] == "down" and row["acknowledged"] is True and row["since_ns"] == NS
    (cleared,) = book.reconfigure([], 4 * NS)  # removed
    assert cleared.data["alarm"] == "down" and book.view(4 * NS) == []
    assert book.on_batch(batch([(5, 99, G)])) == []  # nothing watched any more

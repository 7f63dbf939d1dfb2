"""The engine's trace (agent/kpi/timeline.py) against the windows it closes: the timeline and
the per-product figures add up to the shift's components, late data included."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.kpi.timeline import Timeline, per_product, stop_counts
from agent.model import Event, EventKind
from tests.agent.kpi.test_engine import DAY, MIN, Feed, at, kpis, machine, make, parts

PRODUCT_TAG = '  { name = "die", address = "hr:6", type = "uint16" },\n]'


def press(gap: str = "3m") -> str:
    text = machine("press1", gap=gap, extra='product = "die"\nproduct_names = { "1" = "A" }')
    return text.replace("\n]\n", f"\n{PRODUCT_TAG}\n", 1)


def test_time_and_counts_per_product_add_up_to_the_shift(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press())
    timeline = Timeline()
    engine.trace = timeline
    feed = Feed(engine, config, "press1")
    total = reject = 0
    for minute in range(6 * 60, 14 * 60 + 1):
        t = at("00:00") + minute * MIN
        down = 8 * 60 <= minute < 8 * 60 + 20  # a die change at 08:00, counted as down here
        state = 3 if down else 1
        die = 1 if minute < 8 * 60 + 20 else 2
        feed.send(t, state=state, reason=101 if down else 0, total=total, reject=reject, die=die)
        if state == 1:
            total += 50 if die == 1 else 30
            reject += 1
    [shift] = kpis(feed.events, "shift", f"{DAY}/A", definition="classic", scope="machine")
    c = parts(shift)
    start, end = shift["window"]["start_ns"], shift["window"]["end_ns"]
    segments = timeline.between("press1", start, end)
    counts = timeline.counts_between("press1", start, end)
    rows = per_product(segments, counts, ("total", "reject"))
    assert set(rows) == {1, 2}
    assert sum(r.get("running") or 0.0 for r in rows.values()) == pytest.approx(c.running_s)
    assert sum(r.get("down") or 0.0 for r in rows.values()) == pytest.approx(c.down_s)
    assert sum(r["total"] or 0.0 for r in rows.values()) == pytest.approx(c.total)
    # die 2 from 08:20: not the 10:00-10:30 break (overtime), nor the minute the 14:00
    # reading counts (shift B's)
    assert rows[1]["total"] == 120 * 50 and rows[2]["total"] == (340 - 30 - 1) * 30
    assert rows[1]["down"] == 20 * 60  # the die change happened with die 1 still in
    assert stop_counts(segments) == {"down: die jam": 1}
    assert c.failures == 1


def test_a_recompute_replaces_what_was_traced(tmp_path: Path) -> None:
    engine, config = make(tmp_path, press(gap="1h"))
    timeline = Timeline()
    engine.trace = timeline
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0, die=1)
    feed.send(at("06:50"), state=1, reason=0, total=3000, reject=0)
    feed.send(at("07:00"), state=1, reason=0, total=3600, reject=0)
    # Late: down 06:20-06:30 (feeder), as in test_engine's late-data case.
    feed.send(at("06:20"), state=3, reason=102)
    feed.send(at("06:30"), state=1, reason=0)
    late = engine.flush()
    [revised] = kpis(late, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = parts(revised)
    start = revised["window"]["start_ns"]
    segments = timeline.between("press1", start, start + 60 * MIN)
    down = sum(s.seconds for s in segments if s.category == "down")
    running = sum(s.seconds for s in segments if s.category == "running")
    assert (down, running) == (c.down_s, c.running_s) == (600, 3000)
    counted = sum(x.amount for x in timeline.counts_between("press1", start, start + 60 * MIN))
    assert counted == c.total == 3000  # not counted twice by the recompute


TEXT_PRODUCT_TAG = '  { name = "die", address = "hr:6", type = "string", length = 10 },\n]'


def test_a_text_product_tag_keys_the_products_by_their_strings(tmp_path: Path) -> None:
    # The press's die_id: a string. Each die is a product, named by its string; `products`
    # gives ideal rates by string (DR-DOOR-LH at 30 a minute: 2 s a part, the default 1 s).
    extra = 'product = "die"\nideal_rate = 60\nproducts = { "DR-DOOR-LH" = 30.0 }'
    text = machine("press1", extra=extra).replace('ideal_cycle_time = "1s"\n', "")
    engine, config = make(tmp_path, text.replace("\n]\n", f"\n{TEXT_PRODUCT_TAG}\n", 1))
    timeline = Timeline()
    engine.trace = timeline
    feed = Feed(engine, config, "press1")

    def die(t: int, value: str | None) -> None:
        quality = "good" if value is not None else "bad"
        data = {
            "tag_id": feed.ids["die"],
            "tag": "s/stamping/line-1/press1/die",
            "source": "press1-plc",
            "value": value,
            "quality": quality,
            "reason": "",
        }
        feed.events += engine.on_event(Event(EventKind.TEXT, t, "press1", data))

    total = 0
    for minute in range(6 * 60, 14 * 60 + 1):
        t = at("00:00") + minute * MIN
        if minute == 6 * 60:
            die(t, "DR-HOOD-01")
        if minute == 8 * 60:
            die(t, "DR-DOOR-LH")  # a die change at 08:00, stored once as it happened
        feed.send(t, state=1, reason=0, total=total, reject=0)
        total += 60
    [shift] = kpis(feed.events, "shift", f"{DAY}/A", definition="classic", scope="machine")
    start, end = shift["window"]["start_ns"], shift["window"]["end_ns"]
    rows = per_product(
        timeline.between("press1", start, end), timeline.counts_between("press1", start, end),
        ("total",),
    )  # fmt: skip
    kpi = config.machines[0].kpi
    assert kpi is not None
    names = {kpi.product_label(code): row for code, row in rows.items()}
    assert set(names) == {"DR-HOOD-01", "DR-DOOR-LH"}
    # The count the 08:00 reading brings is the new die's: its string came first.
    assert names["DR-HOOD-01"]["total"] == 119 * 60
    assert sum(r["total"] or 0.0 for r in rows.values()) == pytest.approx(parts(shift).total)
    # The die's own ideal rate: DR-DOOR-LH at 60 a minute runs at twice its 30 a minute.
    assert names["DR-DOOR-LH"]["performance"] == pytest.approx(2.0)
    assert names["DR-HOOD-01"]["performance"] == pytest.approx(119 / 120)  # its default rate

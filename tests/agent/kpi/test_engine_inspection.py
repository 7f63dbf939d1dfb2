"""KpiEngine with quality from inspection verdicts: hand-made verdict events next to hand-made
batches. OK counts as good, NotOK as reject, NotDecidable apart; the counter gives the ideal
time. Times are UTC on Monday 2026-11-23 (the helpers of test_engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.kpi.engine import KpiEngine
from agent.model import Event, EventKind
from tests.agent.kpi.test_engine import DAY, MIN, Feed, S, at, kpis, machine, make


def inspection(name: str = "surface", on: str = "press1") -> str:
    return f"""
[[inspections]]
name = "{name}"
machine = "{on}"
source = {{ type = "sim" }}
model = "surface.onnx"
"""


def inspected(name: str = "press1", uses: str = "surface", gap: str = "3m") -> str:
    return machine(name, extra=f'inspection = "{uses}"', gap=gap)


def verdict(
    t: int, value: str, *, name: str = "surface", machine: str = "press1", **extra: Any
) -> Event:
    data = {"inspection": name, "verdict": value, "score": 0.5, **extra}
    return Event(EventKind.INSPECTION, t, machine, data)


def send(engine: KpiEngine, feed: Feed, *events: Event) -> list[Event]:
    out = []
    for e in events:
        out += engine.on_event(e)
    feed.events += out
    return out


def hour(events: list[Event], hh: str, **match: Any) -> dict[str, Any]:
    [data] = kpis(events, "hour", f"{DAY}T{hh}", definition="classic", scope="machine", **match)
    return data


def test_verdicts_are_the_quality_and_the_counter_the_performance(tmp_path: Path) -> None:
    engine, config = make(tmp_path, inspected(gap="1h"), inspection())
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    # 10 parts a minute by the counter; the camera judged 8 OK, 2 NotOK, 1 undecidable. The
    # PLC's own reject counter (5) is not the quality any more.
    for i, v in enumerate(["OK"] * 8 + ["NotOK"] * 2 + ["NotDecidable"]):
        send(engine, feed, verdict(at("06:10") + i * S, v))
    feed.send(at("06:30"), state=1, reason=0, total=300, reject=5)
    feed.send(at("07:00", 1), state=1, reason=0, total=600, reject=9)
    data = hour(feed.events, "06")
    c = data["components"]
    assert (c["good"], c["reject"], c["total"]) == (8, 2, 10)
    assert c["not_decidable"] == 1
    assert c["produced"] == 300 and c["ideal_s"] == 300.0
    k = data["kpis"]
    assert k["quality"] == pytest.approx(0.8, abs=1e-12)
    assert k["performance"] == pytest.approx(300 / 3600, abs=1e-12)
    assert k["oee"] == pytest.approx(1.0 * (300 / 3600) * 0.8, abs=1e-12)
    [iso] = kpis(feed.events, "hour", f"{DAY}T06", definition="iso22400", scope="machine")
    assert iso["kpis"]["scrap_ratio"] == pytest.approx(0.2, abs=1e-12)
    # The line weighs the machine's quality by ideal time; its counts are not added.
    [line] = kpis(feed.events, "hour", f"{DAY}T06", definition="classic", scope="line")
    assert line["components"]["good"] is None and line["kpis"]["quality"] == pytest.approx(0.8)
    assert engine.statistics()["verdicts"] == 11


def test_a_verdict_behind_the_readings_goes_in_without_a_recompute(tmp_path: Path) -> None:
    # The model runs while the PLC is polled: readings stamped after the frame arrive first.
    engine, config = make(tmp_path, inspected(gap="1h"), inspection())
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    feed.send(at("06:20"), state=1, reason=0, total=10, reject=0)
    assert send(engine, feed, verdict(at("06:19"), "NotOK")) == []
    # ... and a verdict stamped ahead of the readings does not make the next reading late.
    send(engine, feed, verdict(at("06:40"), "OK"))
    feed.send(at("06:30"), state=1, reason=0, total=20, reject=0)
    feed.send(at("07:00"), state=1, reason=0, total=30, reject=0)
    c = hour(feed.events, "06")["components"]
    assert (c["good"], c["reject"], c["produced"]) == (1, 1, 20)
    stats = engine.statistics()
    assert stats["late"] == stats["recomputes"] == 0


def test_a_verdict_for_a_closed_window_revises_it(tmp_path: Path) -> None:
    engine, config = make(tmp_path, inspected(gap="1h"), inspection())
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    send(engine, feed, verdict(at("06:30"), "OK"))
    first = feed.send(at("07:00", 1), state=1, reason=0, total=100, reject=0)
    assert hour(first, "06")["components"]["good"] == 1
    assert send(engine, feed, verdict(at("06:59"), "NotOK")) == []  # waits for the flush
    late = engine.flush()
    revised = hour(late, "06")
    assert revised["revision"] == 1
    assert (revised["components"]["good"], revised["components"]["reject"]) == (1, 1)
    assert engine.statistics()["late"] == 1 and engine.statistics()["recomputes"] == 1
    # A recompute for a late reading keeps both verdicts (they are in the log).
    feed.send(at("06:45"), state=3, reason=101)
    again = engine.flush()
    again_06 = kpis(again, "hour", f"{DAY}T06", definition="classic", scope="machine")
    c = again_06[-1]["components"]
    assert (c["good"], c["reject"], c["down_s"]) == (1, 1, 15 * 60)


def test_two_equal_verdicts_are_two_parts_and_older_than_the_day_are_dropped(
    tmp_path: Path,
) -> None:
    engine, config = make(tmp_path, inspected(), inspection())
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    send(engine, feed, verdict(at("06:05"), "OK"), verdict(at("06:05"), "OK"))
    feed.send(at("07:00", 1), state=1, reason=0, total=2, reject=0)
    assert hour(feed.events, "06")["components"]["good"] == 2
    assert send(engine, feed, verdict(at("05:00"), "NotOK")) == []  # before the agent began
    assert engine.statistics()["late_dropped"] == 1


def test_other_events_and_unknown_verdicts_are_ignored(tmp_path: Path) -> None:
    engine, config = make(tmp_path, inspected(gap="1h"), inspection(), inspection("other"))
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    t = at("06:10")
    ignored = [
        verdict(t, "NotOK", name="other"),  # an inspection the kpi does not name
        # The write-back's audit, and as stores written before the audit kind hold it.
        Event(EventKind.AUDIT, t, "press1", {"inspection": "surface", "verdict": "NotOK"}),
        verdict(t, "NotOK", audit="write_back", result="written"),
        verdict(t, "Maybe"),
        verdict(t, "NotOK", machine="press2"),
        Event(EventKind.ALARM, t, "press1", {"inspection": "surface", "verdict": "NotOK"}),
        Event(EventKind.INSPECTION, t, "press1", {"verdict": "NotOK"}),
    ]
    assert send(engine, feed, *ignored) == []
    feed.send(at("06:30"), state=1, reason=0, total=60, reject=3)
    feed.send(at("07:00", 1), state=1, reason=0, total=60, reject=3)
    c = hour(feed.events, "06")["components"]
    assert (c["good"], c["reject"], c["total"], c["not_decidable"]) == (0, 0, 0, 0)
    assert c["produced"] == 60
    assert hour(feed.events, "06")["kpis"]["quality"] is None  # nothing inspected: undefined
    assert engine.statistics()["verdicts"] == 0


def test_a_machine_without_inspection_keeps_counter_quality(tmp_path: Path) -> None:
    engine, config = make(tmp_path, machine("press1", gap="1h"), inspection())
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0, reject=0)
    assert send(engine, feed, verdict(at("06:10"), "NotOK")) == []
    feed.send(at("06:30"), state=1, reason=0, total=60, reject=3)
    feed.send(at("07:00", 1), state=1, reason=0, total=60, reject=3)
    c = hour(feed.events, "06")["components"]
    assert (c["good"], c["reject"], c["total"]) == (57, 3, 60) and "not_decidable" not in c


def test_the_kpi_inspection_must_be_an_inspection_of_the_machine(tmp_path: Path) -> None:
    # `lineside validate` refuses both (tests/agent/kpi/test_kpi_config.py); so does the engine
    # when handed a config that was not loaded through it.
    engine_config = make(tmp_path, inspected(), inspection())[1]
    spec: Any = engine_config.inspections[0]  # vision's InspectionConfig (a pydantic model)
    other = engine_config.model_copy(
        update={"inspections": (spec.model_copy(update={"name": "x"}),)}
    )
    with pytest.raises(ValueError, match=r"kpi\.inspection 'surface'"):
        KpiEngine(other, {})
    with pytest.raises(ConfigError, match=r"machines\[0\]\.kpi\.inspection: no \[\[insp"):
        make(tmp_path, inspected(uses="nothing"), inspection())


def test_with_inspection_a_counter_of_what_was_made_is_still_needed(tmp_path: Path) -> None:
    only_reject = inspected().replace('total = "total"\n', "")
    with pytest.raises(ConfigError, match="with inspection, name the total counter"):
        make(tmp_path, only_reject, inspection())
    # The total counter alone is enough with inspection (good and reject come from verdicts).
    only_total = inspected().replace('reject = "reject"\n', "")
    engine, config = make(tmp_path, only_total, inspection())
    feed = Feed(engine, config, "press1")
    feed.send(at("06:00"), state=1, reason=0, total=0)
    send(engine, feed, verdict(at("06:01"), "NotOK"))
    feed.send(at("06:02"), state=1, reason=0, total=5)
    feed.send(at("06:00") + 61 * MIN, state=1, reason=0, total=5)
    c = hour(feed.events, "06")["components"]
    assert (c["good"], c["reject"], c["produced"]) == (0, 1, 5)

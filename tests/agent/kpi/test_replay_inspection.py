"""Replaying a store of a machine whose quality comes from an inspection: the verdicts stored as
events are merged with the readings by time, so a restart keeps the verdicts from before it and
`lineside oee` shows the quality the live engine had.

A real store (Store, StoreWriter) is filled as the agent fills it: every reading batch, every
event an inspection emitted (verdicts, write-back audits) and the KPI events of the live engine,
a `KpiEngine` fed in the order the agent feeds it. Times are UTC on Monday 2026-11-23 (the
helpers of test_engine).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.kpi.engine import KpiEngine
from agent.kpi.period import select
from agent.kpi.replay import replay
from agent.kpi.resume import resume
from agent.model import Event, EventKind, Quality, ReadingBatch
from agent.store import DB_NAME, StoreWriter
from agent.store import Store as StoreLog
from agent.tags import Tag, TagTable
from tests.agent.kpi.test_engine import DAY, MIN, S, at, make
from tests.agent.kpi.test_engine_inspection import inspected, inspection

NOW = at("09:40")  # the restart


class Agent:
    """What the runtime does with readings and events, on a real store (no polling)."""

    def __init__(self, tmp_path: Path) -> None:
        self.data = tmp_path / "data"
        _, self.config = make(tmp_path, inspected(gap="10m"), inspection(), inspection("other"))
        table = TagTable.from_config(self.config)
        with StoreLog(self.data) as store:
            ids = store.register_tags(
                Tag(path=t.path, machine=t.machine, name=t.name) for t in table
            )
        self.ids = ids
        self.tag = {t.name: ids[t.path] for t in table if t.machine == "press1"}
        self.writer = StoreWriter(self.data)
        self.engine = KpiEngine(self.config, ids)
        self.kpi: list[Event] = []  # what the live engine emitted

    def reading(self, t: int, **values: float) -> None:
        names = list(values)
        batch = ReadingBatch.from_columns(
            "press1-plc", [self.tag[n] for n in names], [values[n] for n in names], Quality.GOOD, t
        )
        self.writer.submit_readings(batch)
        self._kpi(self.engine.on_batch(batch))

    def event(self, event: Event) -> None:
        self.writer.submit_event(event)
        self._kpi(self.engine.on_event(event))
        self._kpi(self.engine.flush())  # the runtime's tick: late verdicts are folded in

    def _kpi(self, events: Iterable[Event]) -> None:
        for e in events:
            self.kpi.append(e)
            self.writer.submit_event(e)

    def close(self) -> None:
        assert self.writer.flush_blocking(10)
        self.writer.close()

    def restart(self, engine: KpiEngine) -> None:
        """Started again on the same store, with `engine` (resumed from it)."""
        self.writer = StoreWriter(self.data)
        self.engine = engine
        self.kpi = []


def verdict(t: int, value: str, name: str = "surface") -> Event:
    data = {"inspection": name, "source": f"p{t}.jpg", "verdict": value, "score": 0.5,
            "boxes": [{"box": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "class": "scratch"}]}  # fmt: skip
    return Event(EventKind.INSPECTION, t, "press1", data)


def audits(v: Event) -> list[Event]:
    """The write-back's audit as stored now, and as stores before the audit kind hold it."""
    now = {"who": "inspection", "inspection": "surface", "machine": "press1", "address": "co:5",
           "target": "press1:co:5", "value": 1, "verdict": v.data["verdict"],
           "verdict_ts_ns": v.ts_ns, "result": "ok"}  # fmt: skip
    before = {"inspection": "surface", "audit": "write_back", "target": "press1:co:5",
              "verdict": v.data["verdict"], "value": 1, "result": "written"}  # fmt: skip
    return [
        Event(EventKind.AUDIT, v.ts_ns, "press1", now),
        Event(EventKind.INSPECTION, v.ts_ns, "press1", before),
    ]


PATTERN = ["OK", "OK", "NotOK", "OK", "NotDecidable", "OK", "OK"]


def run(agent: Agent, first_min: int, last_min: int) -> list[Event]:
    """Readings each minute of [first, last] (running, 10 parts a minute), a verdict stamped
    30 s into each minute but handed over after the next reading (the model is slower than
    the poll), with the audit of its write-back, and a verdict of another inspection. The
    verdicts of the machine's inspection."""
    out = []
    for minute in range(first_min, last_min + 1):
        t = at("00:00") + minute * MIN
        agent.reading(t, state=1, reason=0, total=10 * (minute - 5 * 60), reject=0)
        if minute > first_min:
            v = verdict(t - 30 * S, PATTERN[minute % len(PATTERN)])
            agent.event(v)
            for a in audits(v):
                agent.event(a)
            agent.event(verdict(t - 30 * S, "NotOK", name="other"))
            out.append(v)
    return out


def tally(verdicts: Iterable[Event], start: int, end: int) -> tuple[int, int, int]:
    values = [v.data["verdict"] for v in verdicts if start <= v.ts_ns < end]
    return values.count("OK"), values.count("NotOK"), values.count("NotDecidable")


def counts(components: dict[str, Any]) -> tuple[int, int, int]:
    c = components
    assert c["total"] == c["good"] + c["reject"]
    return c["good"], c["reject"], c["not_decidable"]


def latest(events: list[Event], kind: str, name: str) -> dict[str, Any]:
    found = [
        e.data
        for e in events
        if e.kind is EventKind.KPI and e.data["scope"] == "machine"
        and e.data["definition"] == "classic"
        and (e.data["window"]["kind"], e.data["window"]["name"]) == (kind, name)
    ]  # fmt: skip
    return max(found, key=lambda d: int(d["revision"]))


@pytest.fixture
def stopped(tmp_path: Path) -> tuple[Agent, list[Event]]:
    """The agent ran 06:00-09:20 and was stopped; its store."""
    agent = Agent(tmp_path)
    verdicts = run(agent, 6 * 60, 9 * 60 + 20)
    # One verdict stamped before the hour turned, handed over after the 08:00 reading closed
    # the hour: the live engine revised 07 for it (a late verdict).
    late = verdict(at("07:59", 59), "NotOK")
    agent.event(late)
    agent.close()
    return agent, [*verdicts, late]


def test_verdicts_before_and_after_a_restart_both_count(
    stopped: tuple[Agent, list[Event]],
) -> None:
    agent, before = stopped
    assert latest(agent.kpi, "hour", f"{DAY}T07")["revision"] >= 1  # late verdicts revised it
    again = KpiEngine(agent.config, agent.ids)
    resumed = resume(again, agent.config, NOW, data_dir=agent.data)
    # Only the verdicts of the machine's inspection, each once (not its audits, old or new,
    # nor the other inspection's verdicts).
    assert resumed.verdicts == len(before)
    assert again.statistics()["verdicts"] == len(before)
    # The replay closed the hours the first run closed and stored: none is stored again.
    # Only the outage is new, as a fact (`agent.model.Outage`).
    assert [e.data["state"] for e in resumed.events] == ["outage"] and resumed.held > 0

    # After the restart the agent goes on: new readings and verdicts into the resumed engine.
    agent.restart(again)
    after = run(agent, 9 * 60 + 40, 10 * 60 + 5)
    agent.close()

    everything = [*before, *after]
    shift = again.snapshot(at("10:05"), kind="shift")["machines"]["press1"]
    assert counts(shift["components"]) == tally(everything, at("06:00"), at("14:00"))
    # The hour open at the restart holds the verdicts from both sides of it.
    hour_09 = latest(agent.kpi, "hour", f"{DAY}T09")
    assert counts(hour_09["components"]) == tally(everything, at("09:00"), at("10:00"))
    assert tally(before, at("09:00"), at("10:00"))[0] > 0
    assert tally(after, at("09:00"), at("10:00"))[0] > 0
    assert hour_09["kpis"]["quality"] is not None


def test_without_the_stored_verdicts_the_restart_would_lose_them(
    stopped: tuple[Agent, list[Event]],
) -> None:
    # The same store with the inspection's verdicts taken out: the quality of the open
    # windows starts from nothing. (The replay above must therefore be what counted them.)
    agent, before = stopped
    with contextlib.closing(sqlite3.connect(agent.data / DB_NAME)) as db, db:
        db.execute("DELETE FROM events WHERE kind = 'inspection'")
    again = KpiEngine(agent.config, agent.ids)
    resumed = resume(again, agent.config, NOW, data_dir=agent.data)
    assert resumed.verdicts == 0
    shift = again.snapshot(NOW, kind="shift")["machines"]["press1"]
    assert counts(shift["components"]) == (0, 0, 0)
    assert tally(before, at("06:00"), at("14:00"))[0] > 0


def test_oee_of_past_hours_has_the_verdicts_the_live_engine_counted(
    stopped: tuple[Agent, list[Event]],
) -> None:
    agent, verdicts = stopped
    config: Config = agent.config
    result = replay(config, select(config, DAY, "hour", NOW), NOW, data_dir=agent.data)
    assert result.verdicts == len(verdicts)
    hours = {w.name: w for w in result.windows if w.machine == "press1"}
    for hh in ("06", "07", "08"):
        live = latest(agent.kpi, "hour", f"{DAY}T{hh}")
        replayed = hours[f"{DAY}T{hh}"]
        start = at(f"{hh}:00")
        want = tally(verdicts, start, start + 60 * MIN)
        assert counts(replayed.components) == counts(live["components"]) == want, hh
        assert replayed.classic["quality"] == pytest.approx(live["kpis"]["quality"], abs=1e-12)

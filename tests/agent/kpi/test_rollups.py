"""Areas and the site: KPI records per window like a line's, by ideal time, counts added only in
one declared unit; and a machine's figures per product. Exact hand-computed values; times UTC on
Monday 2026-11-23."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from agent.config import load_config
from agent.kpi.engine import KpiEngine
from agent.kpi.period import Scope
from agent.kpi.replay import _closed
from agent.kpi.view import json_rows, tables
from agent.model import Event
from agent.tags import TagTable
from tests.agent.kpi.test_engine import CALENDAR, DAY, MIN, Feed, at, kpis


def machine(name: str, area: str, line: str, cycle: str, unit: str, kind: str = "uint32") -> str:
    return f"""
[[machines]]
name = "{name}"
area = "{area}"
line = "{line}"
[machines.kpi]
state = "state"
states = {{ running = [1], idle = [2], down = [3], setup = [4], planned_stop = [5] }}
total = "total"
reject = "reject"
ideal_cycle_time = "{cycle}"
max_gap = "1h"
[[sources]]
name = "{name}-plc"
type = "modbus_tcp"
host = "127.0.0.1"
[[sources.units]]
unit_id = 1
machine = "{name}"
tags = [
  {{ name = "state", address = "hr:0", type = "uint16" }},
  {{ name = "total", address = "hr:2", type = "{kind}", unit = "{unit}" }},
  {{ name = "reject", address = "hr:6", type = "{kind}", unit = "{unit}" }},
]
"""


def plant(tmp_path: Path, *machines: str) -> tuple[KpiEngine, dict[str, Feed]]:
    text = 'config_version = 1\n[agent]\nid = "e"\n[plant]\nsite = "works"\n'
    path = tmp_path / "lineside.toml"
    path.write_text(text + "".join(machines) + CALENDAR, encoding="utf-8")
    config = load_config(path)
    ids = {t.path: 1000 + 7 * t.id for t in TagTable.from_config(config)}
    engine = KpiEngine(config, ids)
    return engine, {m.name: Feed(engine, config, m.name) for m in config.machines}


def run_hour(feeds: dict[str, Feed]) -> list[Event]:
    """06:00-07:00, a reading a minute (the 07:00 one counts in hour 07, so the hour holds 59
    minutes of parts): press1 (1 s a part) runs all hour at full speed, 1 reject a minute;
    press2 (2 s a part) runs at half speed until 06:30, then is down; mill1 (10 s a tonne)
    runs all hour at half speed, 3 t a minute."""
    for minute in range(61):
        t = at("06:00") + minute * MIN
        feeds["press1"].send(t, state=1, total=60 * minute, reject=minute)
        feeds["press2"].send(t, state=1 if minute < 30 else 3, total=15 * min(minute, 30), reject=0)
        feeds["mill1"].send(t, state=1, total=3.0 * minute, reject=0.0)
    return [e for f in feeds.values() for e in f.events]


SITE = (
    machine("press1", "stamping", "l1", "1s", "pcs"),
    machine("press2", "stamping", "l2", "2s", "pcs"),
    machine("mill1", "grinding", "m1", "10s", "t", kind="float64"),
)


def one(events: list[Event], scope: str, definition: str = "classic") -> list[dict[str, Any]]:
    return kpis(events, "hour", f"{DAY}T06", definition=definition, scope=scope)


def test_areas_and_the_site_add_components_then_divide(tmp_path: Path) -> None:
    engine, feeds = plant(tmp_path, *SITE)
    events = run_hour(feeds)
    areas = {d["area"]: d for d in one(events, "area")}
    [site] = one(events, "site")
    assert sorted(areas) == ["grinding", "stamping"]
    stamping, grinding = areas["stamping"], areas["grinding"]
    assert (stamping["line"], stamping["machine"], stamping["site"]) == (None, None, "works")
    assert (site["area"], site["line"], site["site"]) == (None, None, "works")
    # stamping: press1 59 min x 60 = 3540 parts (59 rejects, ideal 3540 s); press2 30 min x 15
    # = 450 parts at 2 s (ideal 900 s), 30 min down. Both count pcs: the counts add.
    c = stamping["components"]
    assert (c["total"], c["good"], c["reject"]) == (3990, 3931, 59)
    assert stamping["unit"] == "pcs" and stamping["notes"] == []
    assert (c["planned_s"], c["running_s"], c["down_s"]) == (7200, 5400, 1800)
    assert (c["ideal_s"], c["good_ideal_s"]) == (4440, 4381)
    k = stamping["kpis"]
    assert k["availability"] == pytest.approx(5400 / 7200, abs=1e-12)
    assert k["performance"] == pytest.approx(4440 / 5400, abs=1e-12)
    assert k["quality"] == pytest.approx(4381 / 4440, abs=1e-12)  # by ideal time
    assert k["oee"] == pytest.approx(4381 / 7200, abs=1e-12)  # Σ good x ICT / Σ planned
    # grinding: 59 x 3 = 177 t at 10 s = 1770 s of 3600 s running.
    g = grinding["components"]
    assert grinding["unit"] == "t" and g["total"] == pytest.approx(177)
    assert grinding["kpis"]["oee"] == pytest.approx(1770 / 3600, abs=1e-12)
    # The site: pcs and t are not added; times and ideal times are.
    s = site["components"]
    assert s["total"] is None and s["good"] is None and site["unit"] is None
    assert site["notes"] == ["counts not added: the machines count in different or undeclared "
                             "units (pcs, t)"]  # fmt: skip
    assert (s["planned_s"], s["running_s"], s["ideal_s"]) == (10800, 9000, pytest.approx(6210))
    k = site["kpis"]
    assert k["availability"] == pytest.approx(9000 / 10800, abs=1e-12)
    assert k["performance"] == pytest.approx(6210 / 9000, abs=1e-12)
    assert k["quality"] == pytest.approx(6151 / 6210, abs=1e-12)
    assert k["oee"] == pytest.approx(6151 / 10800, abs=1e-12)  # 56.95 %, not a mean of OEEs
    [iso] = one(events, "site", "iso22400")
    assert iso["kpis"]["scrap_ratio"] == pytest.approx(59 / 6210, abs=1e-12)
    assert iso["kpis"]["throughput_rate"] is None
    # Each window once per roll-up: 3 machines, 3 lines, 2 areas, 1 site.
    scopes = [d["scope"] for d in kpis(events, "hour", f"{DAY}T06", definition="classic")]
    assert sorted(scopes) == sorted(["machine"] * 3 + ["line"] * 3 + ["area"] * 2 + ["site"])
    # The live view says the same.
    snap = engine.snapshot(at("06:30"), kind="hour")
    assert sorted(snap["areas"]) == ["grinding", "stamping"] and list(snap["sites"]) == ["works"]


def test_oee_prints_a_row_per_line_area_and_site(tmp_path: Path) -> None:
    _, feeds = plant(tmp_path, *SITE)
    windows = [w for w in _closed(run_hour(feeds)) if w.name == f"{DAY}T06"]
    windows.sort(key=lambda w: (("machine", "line", "area", "site").index(w.scope), w.label))
    console = Console(record=True, width=200, color_system=None)
    for part in tables(windows, ZoneInfo("UTC")):
        console.print(part)
    text = console.export_text()
    rows = {line.split()[0] + " " + line.split()[1] for line in text.splitlines() if "%" in line}
    assert {"area stamping", "area grinding", "site works", "line l1"} <= rows
    site_row = next(line for line in text.splitlines() if "site works" in line and "%" in line)
    assert "57.0 %" in site_row and "—" in site_row  # OEE; no count across units
    assert "site works: counts not added" in text
    data = json_rows(windows)
    assert [d["area"] for d in data if d["scope"] == "area"] == ["grinding", "stamping"]
    # --line or --machine: the roll-ups above the line are left out.
    names = {"press1", "press2", "mill1"}

    def kept(line: str | None, machine: str | None, names: set[str]) -> set[str]:
        return {w.scope for w in windows if Scope(frozenset(names), line, machine).keeps(w)}

    assert kept(None, None, names) == {"machine", "line", "area", "site"}
    assert kept("l1", None, {"press1"}) == {"machine", "line"}
    assert kept(None, "press1", {"press1"}) == {"machine"}


# -- per product ---------------------------------------------------------------------------------

PRODUCT_PRESS = (
    machine("press1", "stamping", "l1", "1s", "pcs")
    .replace('ideal_cycle_time = "1s"', 'ideal_rate = 60\nrate_per = "minute"\n'
             'products = { "7" = 30 }\nproduct = "product"\nproduct_names = { "7" = "Bracket B" }')
    .replace('  { name = "reject"', '  { name = "product", address = "hr:9", type = "uint16" },\n'
             '  { name = "reject"')
)  # fmt: skip


def test_each_window_carries_its_figures_per_product(tmp_path: Path) -> None:
    _, feeds = plant(tmp_path, PRODUCT_PRESS)
    press = feeds["press1"]
    # 06:00-06:20 product 3 (1 s a part, the default rate) at full speed, 1 reject a minute;
    # 06:20-06:40 down; 06:40-07:00 product 7 (2 s a part) at half speed, no rejects.
    total = reject = 0
    for minute in range(61):
        product = 3 if minute <= 20 else 7
        state = 3 if 20 <= minute < 40 else 1
        press.send(at("06:00") + minute * MIN, state=state, total=total, reject=reject,
                   product=product)  # fmt: skip
        if state == 1 and minute < 20:
            total, reject = total + 60, reject + 1
        elif state == 1:
            total += 15
    [d] = one(press.events, "machine")
    by = {p["product"]: p for p in d["products"]}
    assert sorted(by) == ["3", "7"]
    three, seven = by["3"], by["7"]
    assert (three["label"], seven["label"]) == ("product 3", "Bracket B")
    # Product 3: 20 min running and the reading at 06:20 (its counts: 1200 parts, 20 rejects)
    # with the down time after it (the product in force until 06:21 is 3).
    c3 = three["components"]
    assert (c3["running_s"], c3["total"], c3["reject"], c3["good"]) == (1200, 1200, 20, 1180)
    assert c3["down_s"] == 60 and c3["ideal_s"] == 1200
    assert three["kpis"]["oee"] == pytest.approx(1180 / 1260, abs=1e-12)
    # Product 7: 19 min down (06:21-06:40), 20 min running, 19 readings of 15 parts at 2 s
    # (the 07:00 reading counts in hour 07).
    c7 = seven["components"]
    assert (c7["running_s"], c7["down_s"], c7["total"], c7["ideal_s"]) == (1200, 1140, 285, 570)
    assert seven["kpis"]["performance"] == pytest.approx(570 / 1200, abs=1e-12)
    assert seven["kpis"]["oee"] == pytest.approx(570 / 2340, abs=1e-12)
    # The products add up to the machine's window.
    for field in ("planned_s", "running_s", "down_s", "total", "good", "ideal_s"):
        assert c3[field] + c7[field] == pytest.approx(d["components"][field]), field
    [iso] = one(press.events, "machine", "iso22400")
    assert {p["product"]: p["kpis"]["quality_ratio"] for p in iso["products"]} == {
        "3": pytest.approx(1180 / 1200), "7": 1.0}  # fmt: skip
    # `lineside oee`: a per-product table, and the products in --json with both definitions.
    [w] = [w for w in _closed(press.events) if w.name == f"{DAY}T06" and w.scope == "machine"]
    console = Console(record=True, width=200, color_system=None)
    for part in tables([w], ZoneInfo("UTC")):
        console.print(part)
    text = console.export_text()
    assert "per product" in text
    row = next(line for line in text.splitlines() if "Bracket B" in line)
    assert "24.4 %" in row and "285" in row  # OEE 570 / 2340
    [data] = json_rows([w])
    assert data["products"][1]["classic"]["oee"] == pytest.approx(570 / 2340)
    assert data["products"][1]["iso22400"]["quality_ratio"] == 1.0
    # A line roll-up has no products (codes mean something on their own machine).
    [line] = one(press.events, "line")
    assert line["products"] == []

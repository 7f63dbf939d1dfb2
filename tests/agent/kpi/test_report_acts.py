"""The report's plant-manager parts as pure functions: waterfall, timeline, Pareto split,
targets, axes that one outlier cannot flatten."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.kpi.formulas import Components
from agent.kpi.period import previous, select
from agent.kpi.report import (
    Extras,
    Target,
    axis_top,
    first_local_hour,
    gantt_chart,
    render,
    split_stops,
    targets_table,
    trend_chart,
    waterfall,
    waterfall_chart,
)
from agent.kpi.timeline import Count, Segment, Timeline, by_product, per_product, stop_counts
from tests.agent.kpi.test_engine import machine as machine_toml
from tests.agent.kpi.test_engine import make
from tests.agent.kpi.windows import kpi_window

S = 1_000_000_000
H = 3600 * S
START = 1_795_384_800 * S  # 2026-11-23 06:00 Asia/Shanghai
ZONE = ZoneInfo("Asia/Shanghai")
SVG = "{http://www.w3.org/2000/svg}"


def machine() -> Components:
    # 8 h planned, 20 min unknown; 40 min down, 30 min setup, 10 min idle; P and Q below 1.
    return Components(
        calendar_s=8 * 3600, planned_s=8 * 3600, unknown_s=1200, running_s=8 * 3600 - 1200 - 4800,
        down_s=2400, setup_s=1800, idle_s=600, total=9000, good=8820, reject=180,
        ideal_s=9000 * 2.5, failures=3, energy_kwh=450.0, has_energy=True,
        down_by_reason={"down: die jam": 1800.0, "down: feeder": 600.0,
                        "setup: die change": 1800.0, "idle: no coil": 600.0},
    )  # fmt: skip


def shift(c: Components, name: str | None = "press1", **state: object) -> object:
    return kpi_window(c, name, "stamping/body", "shift", "2026-11-23/A", START, START + 8 * H,
                      **state)  # fmt: skip


def test_the_waterfall_adds_up_to_the_oee() -> None:
    w = shift(machine())
    steps = waterfall(w)  # type: ignore[arg-type]
    labels = [label for label, _ in steps]
    assert labels[0] == "planned (known)" and labels[-1] == "fully productive"
    planned = steps[0][1]
    assert planned == 8 * 3600 - 1200  # unknown time is not planned time we can blame
    assert steps[1] == ("breakdowns", -2400.0)
    assert steps[2] == ("setup, changeover", -1800.0)
    assert planned + sum(s for _, s in steps[1:-1]) == pytest.approx(steps[-1][1])
    # fully productive / known planned time is the OEE (A x P x Q)
    assert steps[-1][1] / planned == pytest.approx(w.classic["oee"])  # type: ignore[attr-defined]
    svg = ET.fromstring(waterfall_chart(steps, title="t"))
    rects = svg.findall(f"{SVG}rect")
    widths = [float(r.get("width", "")) for r in rects]
    assert widths[0] * steps[-1][1] / planned == pytest.approx(widths[-1], rel=1e-4)
    # each loss hangs from where the previous step ended: x + width = previous x
    xs = [float(r.get("x", "")) for r in rects]
    assert xs[1] + widths[1] == pytest.approx(xs[0] + widths[0], abs=0.2)
    assert xs[2] + widths[2] == pytest.approx(xs[1], abs=0.2)


def test_one_outlier_does_not_flatten_the_trend() -> None:
    values = [0.8, 0.82, 0.78, 0.85, 0.8, 0.79, 0.81, 7.1]  # one 710 % hour
    assert axis_top(values) == 1.0
    assert axis_top([1.2] * 20 + [9.0]) == 1.2  # a plant that runs above 100 % keeps its scale
    assert axis_top([]) == 1.0
    hours = [f"2026-11-23T{6 + i:02d}" for i in range(len(values))]
    svg = ET.fromstring(trend_chart(hours, [("m", values)], title="t", targets=[("m", 0.85)]))
    points = svg.findall(f"{SVG}circle")
    ys = {float(p.get("data-value", "")): float(p.get("cy", "")) for p in points}
    # 80 % and 85 % stay well apart (with 7.1 as the top they would be 1.6 units apart)
    assert ys[0.8] - ys[0.85] > 5
    outliers = svg.findall(f"{SVG}polygon[@class='outlier']")
    assert [float(o.get("data-value", "")) for o in outliers] == [7.1]
    assert "710.0 %" in ET.tostring(svg, encoding="unicode")
    target = svg.find(f"{SVG}line[@class='target']")
    assert target is not None and float(target.get("y1", "")) == pytest.approx(ys[0.85], abs=0.1)


def test_the_timeline_joins_stretches_and_redoes_what_a_recompute_folds_again() -> None:
    t = Timeline()
    t.segment("m", 0, 10 * S, "running", "no reason", 1, True)
    t.segment("m", 10 * S, 20 * S, "running", "no reason", 1, True)  # joined
    t.count("m", 20 * S, "total", 8.0, 20.0, 1)
    t.segment("m", 20 * S, 30 * S, "down", "die jam", 1, True)
    t.segment("m", 30 * S, 40 * S, "running", "old", 1, True)
    t.count("m", 40 * S, "total", 4.0, 10.0, 1)
    t.segment("m", 40 * S, 50 * S, "down", "die jam", 2, True)
    assert [(s.start_ns // S, s.key) for s in t.machines["m"]] == [
        (0, "running"), (20, "down: die jam"), (30, "running"), (40, "down: die jam")]  # fmt: skip
    # a recompute from a checkpoint at 25 s: what follows is traced again
    t.redo("m", 25 * S)
    t.segment("m", 25 * S, 45 * S, "setup", "die change", 1, True)
    t.count("m", 45 * S, "total", 1.0, 2.5, 1)
    assert [(s.start_ns // S, s.end_ns // S, s.key) for s in t.machines["m"]] == [
        (0, 20, "running"), (20, 25, "down: die jam"), (25, 45, "setup: die change")]  # fmt: skip
    assert [c.amount for c in t.counts_between("m", 0, 60 * S)] == [8.0, 1.0]
    assert [c.amount for c in t.counts_between("m", 20 * S, 45 * S)] == [8.0]  # [start, end)
    segs = t.machines["m"]
    assert stop_counts(segs) == {"down: die jam": 1, "setup: die change": 1}
    assert by_product(segs)[1] == {"running": 20.0, "down": 5.0, "setup": 20.0}
    assert t.between("m", 10 * S, 22 * S)[-1] == Segment(20 * S, 22 * S, "down", "die jam", 1)


def test_figures_per_product_derive_the_missing_counter() -> None:
    segs = [
        Segment(0, 100 * S, "running", "", 1),
        Segment(100 * S, 150 * S, "down", "jam", 1),
        Segment(150 * S, 200 * S, "running", "", 2),
        Segment(200 * S, 300 * S, "running", "", 2, planned=False),  # overtime: left out
    ]
    counts = [
        Count(50 * S, "total", 40.0, 80.0, 1),  # 2 s a part
        Count(60 * S, "reject", 2.0, 0.0, 1),
        Count(160 * S, "total", 10.0, 40.0, 2),  # 4 s a part
    ]
    rows = per_product(segs, counts, ("total", "reject"))
    one, two = rows[1], rows[2]
    assert one["total"] == 40 and one["good"] == 38  # good = total - reject
    assert one["availability"] == pytest.approx(100 / 150)
    assert one["performance"] == pytest.approx(80 / 100)
    assert one["quality"] == pytest.approx(38 / 40)
    assert one["oee"] == pytest.approx(38 * 2 / 150)  # good x ideal cycle / known planned
    assert two["oee"] == pytest.approx(10 * 4 / 50)
    # with good + reject counters the total is their sum
    counted = [Count(50 * S, "good", 30.0, 60.0, 1), Count(60 * S, "reject", 2.0, 4.0, 1)]
    rows = per_product(segs, counted, ("good", "reject"))
    assert rows[1]["total"] == 32 and rows[1]["good"] == 30


def test_stops_count_each_start_in_planned_time() -> None:
    segs = [
        Segment(0, 5 * S, "down", "jam", 1),
        Segment(5 * S, 6 * S, "down", "jam", 2),  # product changed during the stop: same stop
        Segment(6 * S, 9 * S, "running", "", 2),
        Segment(9 * S, 10 * S, "down", "jam", 2),
        Segment(10 * S, 11 * S, "down", "jam", 2, planned=False),  # a break: not counted
        Segment(11 * S, 12 * S, "down", "jam", 2),  # ... and the stop goes on after it
        Segment(12 * S, 13 * S, "setup", "die change", 2),
    ]
    assert stop_counts(segs) == {"down: jam": 2, "setup: die change": 1}


def test_the_gantt_colours_each_stop_reason_and_spans_the_shift() -> None:
    rows = {
        "press1": [Segment(START, START + 2 * H, "running", "", 1),
                   Segment(START + 2 * H, START + 3 * H, "down", "die jam", 1),
                   Segment(START + 3 * H, START + 4 * H, "down", "feeder", 2)],
        "press<2>": [Segment(START, START + 4 * H, "unknown", "", None)],
    }  # fmt: skip
    svg = ET.fromstring(
        gantt_chart(rows, START, START + 8 * H, ZONE, title="t", products={"press1": {"2": "B"}})
    )
    segs = svg.findall(f"{SVG}rect[@class='segment']")
    fills = {s.get("data-key"): s.get("fill") for s in segs}
    assert len(set(fills.values())) == 4, "running, two reasons and unknown each their colour"
    widths = [float(s.get("width", "")) for s in segs]
    assert widths[0] == pytest.approx(2 * widths[1], rel=1e-3)
    assert widths[3] == pytest.approx(widths[0] * 2, rel=1e-3)  # half of the 8 h shift
    text = ET.tostring(svg, encoding="unicode")
    assert "06:00" in text and "14:00" in text  # hour ticks in local time
    assert "press&lt;2&gt;" in text
    assert len(svg.findall(f"{SVG}rect[@class='product']")) == 2  # product 1, then B
    assert "B" in [t.text for t in svg.iter(f"{SVG}title")]


def test_breakdowns_are_kept_apart_from_changeovers() -> None:
    unplanned, changeovers = split_stops(machine().down_by_reason)
    assert set(unplanned) == {"down: die jam", "down: feeder", "idle: no coil"}
    assert changeovers == {"setup: die change": 1800.0}


def test_targets_against_actual_and_energy_per_good_unit() -> None:
    html = targets_table([shift(machine())], {"press1": Target(0.85, 10000)})  # type: ignore[list-item]
    cells = re.findall(r"<td>(.*?)</td>", html)
    w = shift(machine())
    oee = w.classic["oee"]  # type: ignore[attr-defined]
    assert cells[0] == "press1" and cells[2] == "85.0 %"
    assert cells[3] == f"{(oee - 0.85) * 100:+.1f} pp"
    assert cells[4:7] == ["8,820", "10,000", "-11.8 %"]
    assert cells[7] == f"{450 / 8820:.3f} kWh"
    assert 'class="below"' in html
    # in progress at a quarter of the shift: the plan is a quarter
    running = shift(machine(), complete=False, as_of_ns=START + 2 * H)
    cells = re.findall(r"<td>(.*?)</td>", targets_table([running], {"press1": Target(None, 10000)}))  # type: ignore[list-item]
    assert cells[5] == "2,500" and cells[2] == "—"


def test_the_report_shows_targets_history_and_the_iso_set() -> None:
    before = kpi_window(machine(), "press1", "stamping/body", "shift", "2026-11-22/A",
                        START - 24 * H, START - 16 * H)  # fmt: skip
    t = Timeline()
    t.segment("press1", START, START + H, "running", "", 7, True)
    t.segment("press1", START + H, START + 2 * H, "down", "die jam", 7, True)
    t.count("press1", START + H, "total", 100.0, 250.0, 7)
    extras = Extras(
        targets={"press1": Target(0.85, 9000)}, timeline=t, history=[before],
        products={"press1": {"7": "Bracket <A>"}}, counters={"press1": ("total", "reject")},
    )  # fmt: skip
    html = render("r", [shift(machine())], [], ZONE, START, extras)  # type: ignore[list-item]
    kinds = [m for m in re.findall(r'<svg [^>]*class="(\w+)"', html)]
    assert kinds.count("trend") == 1  # no hour closed; the 7 days trend
    assert "gantt" in kinds and "waterfall" in kinds and "pareto" in kinds
    assert "11-22/A" in html and "11-23/A" in html
    assert "MTBF" in html and "MTTR" in html and "first pass yield" in html
    assert "die change" in html  # the changeovers table
    assert "@page { size: A4" in html
    products = re.search(r'<table class="products".*?</table>', html, flags=re.S)
    assert products is not None and "Bracket &lt;A&gt;" in products.group(0)
    assert "<td>100</td>" in products.group(0)  # the count of product 7


def test_the_comparison_takes_the_shifts_of_the_7_days_before(tmp_path: Path) -> None:
    _, config = make(tmp_path, machine_toml("press1"))
    now = START + 30 * 24 * H
    selection = select(config, "2026-11-23/A", None, now)
    before = previous(config, selection)
    names = [w.name for w in before.windows]
    # two shifts a day (A, B), seven days, every one before shift A of the 23rd
    assert len(names) == 14 and names[0] == "2026-11-16/A" and names[-1] == "2026-11-22/B"
    assert all(w.start_ns < selection.start_ns for w in before.windows)


def test_hour_ticks_fall_on_the_local_whole_hours() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30
    start = START + 10 * 60 * S  # 06:10 in Shanghai, 03:40 in Kolkata
    tick = first_local_hour(start, kolkata)
    assert tick - start == 20 * 60 * S  # 04:00 Kolkata
    assert first_local_hour(START, ZONE) == START  # already whole
    rows = {"m": [Segment(start, start + 3 * H, "running", "", None)]}
    svg = gantt_chart(rows, start, start + 3 * H, kolkata, title="t")
    assert re.findall(r">(\d\d:\d\d)<", svg) == ["04:00", "05:00", "06:00"]

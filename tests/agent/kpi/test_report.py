"""The HTML shift report: self-contained, escaped, charts that say what the figures say."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

import pytest

from agent.kpi.formulas import Components
from agent.kpi.losses import pareto
from agent.kpi.replay import KpiWindow
from agent.kpi.report import BAR_W, bar_chart, downtime, pareto_chart, render, trend_chart
from tests.agent.kpi.windows import kpi_window

S = 1_000_000_000
H = 3600 * S
START = 1_795_384_800 * S  # 2026-11-23 06:00 Asia/Shanghai
ZONE = ZoneInfo("Asia/Shanghai")
SVG = "{http://www.w3.org/2000/svg}"


def window(
    c: Components, machine: str | None, kind: str = "shift", start: int = START, hours: int = 2
) -> KpiWindow:
    name = "2026-11-23/A" if kind == "shift" else f"2026-11-23T{6 + (start - START) // H:02d}"
    return kpi_window(c, machine, "stamping/body<line>", kind, name, start, start + hours * H)


def comps(oee_hint: float, reasons: dict[str, float], hours: float = 1.0) -> Components:
    planned = 3600.0 * hours
    down = sum(reasons.values())
    running = planned - down
    return Components(
        calendar_s=planned, planned_s=planned, running_s=running, down_s=down,
        total=running * oee_hint, good=running * oee_hint, ideal_s=running * oee_hint,
        down_by_reason=reasons,
    )  # fmt: skip


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(m) for m in re.findall(r"<svg.*?</svg>", html, flags=re.S)]


def report() -> str:
    m1 = comps(0.9, {"die jam": 600.0, "feeder": 120.0}, hours=2)
    m2 = comps(0.5, {"die jam": 300.0, 'coil <b>"end"</b>': 900.0}, hours=2)
    shift = [window(m1, "press1"), window(m2, "press<2>"), window(m1 + m2, None)]
    hours = []
    for i in range(2):
        start = START + i * H
        a = comps(0.9, {"die jam": 300.0})
        b = Components(calendar_s=3600) if i == 1 else comps(0.5, {"feeder": 60.0})
        hours += [
            window(a, "press1", "hour", start, 1),
            window(b, "press<2>", "hour", start, 1),
            window(a + b, None, "hour", start, 1),
        ]
    return render("Shift report <A> & co", shift, hours, ZONE, START + 3 * H)


def test_the_report_is_self_contained() -> None:
    html = report()
    assert html.startswith("<!DOCTYPE html>")
    lowered = html.lower()
    for forbidden in ("<script", "http://", "https://", "src=", "<link", "@import", "url("):
        # The SVG namespace is the one URI allowed: it is a name, never fetched.
        assert lowered.replace('xmlns="http://www.w3.org/2000/svg"', "").count(forbidden) == 0
    kinds = [svg.get("class") for svg in svgs(html)]
    # a waterfall and a stop Pareto per machine and line, the trend, OEE per machine
    assert sorted({str(kind) for kind in kinds}) == ["bars", "pareto", "trend", "waterfall"]
    assert kinds.count("waterfall") == kinds.count("pareto") == 3


def test_names_from_config_and_plc_are_escaped() -> None:
    html = report()
    assert "<b>" not in html and "press<2>" not in html and "<A>" not in html
    assert "press&lt;2&gt;" in html
    assert "coil &lt;b&gt;&quot;end&quot;&lt;/b&gt;" in html
    assert "Shift report &lt;A&gt; &amp; co" in html
    assert "line stamping/body&lt;line&gt;" in html


def test_bars_are_proportional_to_the_values() -> None:
    svg = ET.fromstring(bar_chart([("a", 0.8), ("b", 0.4), ("c", None), ("d", 0.0)], title="t"))
    bars = svg.findall(f"{SVG}rect")
    widths = {float(b.get("data-value", "")): float(b.get("width", "")) for b in bars}
    assert widths[0.8] == pytest.approx(BAR_W * 0.8)
    assert widths[0.4] == pytest.approx(widths[0.8] / 2)
    assert widths[0.0] == 0.0
    assert len(bars) == 3, "an undefined value draws no bar"
    assert "—" in "".join(t.text or "" for t in svg.iter(f"{SVG}text"))
    # A value above 100 % becomes the longest bar: the others scale to it.
    over = ET.fromstring(bar_chart([("a", 1.25), ("b", 0.5)], title="t"))
    w = [float(b.get("width", "")) for b in over.findall(f"{SVG}rect")]
    assert w == pytest.approx([BAR_W, BAR_W * 0.4])


def test_pareto_bars_are_sorted_with_a_cumulative_line() -> None:
    ranked = pareto({"feeder": 120.0, "die jam": 900.0, "coil end": 480.0})
    svg = ET.fromstring(pareto_chart(ranked, title="t"))
    bars = svg.findall(f"{SVG}rect")
    assert [b.get("data-reason") for b in bars] == ["die jam", "coil end", "feeder"]
    heights = [float(b.get("height", "")) for b in bars]
    assert heights == sorted(heights, reverse=True)
    assert heights[1] / heights[0] == pytest.approx(480 / 900, rel=1e-4)  # 3 decimals
    line = svg.find(f"{SVG}polyline[@class='cumulative']")
    assert line is not None
    ys = [float(p.split(",")[1]) for p in (line.get("points") or "").split()]
    assert ys == sorted(ys, reverse=True), "the cumulative share only rises (y goes up)"
    shares = [float(c.get("data-value", "")) for c in svg.findall(f"{SVG}circle")]
    assert shares == pytest.approx([900 / 1500, 1380 / 1500, 1.0])
    empty = pareto_chart([], title="t")
    assert "no downtime" in empty and "<rect" not in empty


def test_trend_breaks_at_undefined_hours_instead_of_drawing_zero() -> None:
    svg = ET.fromstring(
        trend_chart(
            ["2026-11-23T06", "2026-11-23T07", "2026-11-23T08"],
            [("m1", [0.5, 0.8, 0.6]), ("m2", [0.4, None, 0.7])],
            title="t",
        )
    )
    points = svg.findall(f"{SVG}circle")
    by = {(p.get("data-series"), float(p.get("data-value", ""))): p for p in points}
    assert len(points) == 5
    # Higher OEE is drawn higher (smaller y), in proportion.
    y = {k: float(p.get("cy", "")) for k, p in by.items()}
    base = y[("m1", 0.5)] + (y[("m1", 0.5)] - y[("m1", 0.8)]) / 0.3 * 0.5  # the 0 % line
    assert (base - y[("m1", 0.8)]) / (base - y[("m2", 0.4)]) == pytest.approx(2.0, rel=1e-2)
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 1, "m2's line is broken by its undefined hour"


def test_the_report_holds_the_shift_trend_per_machine_and_the_downtime() -> None:
    html = report()
    by = {svg.get("class"): svg for svg in svgs(html)}
    trend, per_machine = by["trend"], by["bars"]
    line_pareto = [svg for svg in svgs(html) if svg.get("class") == "pareto"][-1]
    series = {p.get("data-series") for p in trend.iter(f"{SVG}circle")}
    assert series == {"press1", "press<2>", "line stamping/body<line>"}
    # press<2> has no planned time in its second hour: one point, not a 0.
    assert len([p for p in trend.iter(f"{SVG}circle") if p.get("data-series") == "press<2>"]) == 1
    values = [float(b.get("data-value", "")) for b in per_machine.iter(f"{SVG}rect")]
    # OEE = good x ICT / planned; the line sums the machines: (5832 + 3000) / 14400.
    assert values == pytest.approx([5832 / 7200, 3000 / 7200, 8832 / 14400])
    reasons = [b.get("data-reason") for b in line_pareto.iter(f"{SVG}rect")]
    assert reasons == ['coil <b>"end"</b>', "die jam", "feeder"]  # 900, 900 (by name), 120
    assert "2026-11-23 06:00 – 2026-11-23 08:00" in html


def test_downtime_sums_machines_not_lines() -> None:
    a = window(comps(0.5, {"x": 100.0}), "m1")
    line = window(comps(0.5, {"x": 100.0}), None)
    assert downtime([a, a, line]) == [("x", 200.0, 1.0)]


def test_an_empty_period_says_so() -> None:
    html = render("r", [], [], ZONE, START)
    assert "No figures for this period" in html and "<svg" not in html

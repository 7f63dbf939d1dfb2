"""The operator's view in headless Chromium, at 1920x1080 and on a 400 px phone: the andon
rows, alarms raised and cleared by the simulator's faults and acknowledged from the page, the
health banner, trends (read through the DevTools protocol, not the HTML), and "not live" once
the event stream is gone.

Set LINESIDE_SCREENSHOTS=docs/img to keep the screenshots the docs show.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
from pathlib import Path
from typing import Any

from tests.agent.web.running import running_agent
from tests.integration.test_status_page import (
    DevTools,
    chromium,
    chromium_or_skip,
    evaluate,
    keep_small,
    open_page,
    wait_for,
)
from tests.waiting import until

ALARMS = """
[[alarms]]
name = "press1_silent"
machine = "press1"
tag = "part_count"
stale = "500ms"
severity = "critical"
message = "press1 sends no good readings"

[[alarms]]
name = "die_cold"
machine = "press1"
tag = "die_temp"
below = 1000
message = "die below working temperature"
"""

ANDON = (
    "Array.from(document.querySelectorAll('#andon .andon-row'))"
    ".map(r => [r.dataset.machine, r.querySelector('.andon-state').textContent,"
    " getComputedStyle(r).borderLeftColor])"
)
ALARM_ROWS = (
    "Array.from(document.querySelectorAll('#alarms tbody tr'))"
    ".map(r => [r.cells[0].textContent, r.cells[5].textContent])"
)
# Per sparkline: its tag, the points the server sent, and whether anything was drawn (the
# rendered size of its line and dot, as the browser laid them out).
SPARKS = (
    "Array.from(document.querySelectorAll('#values td.spark svg'))"
    ".map(s => [s.dataset.tag, Number(s.dataset.points),"
    " Array.from(s.querySelectorAll('path, circle'))"
    ".some(e => e.getBoundingClientRect().width > 0)])"
)
# Per machine of the OEE panel: its OEE as shown, whether it is drawn as on target, its
# target's text, its good units against the plan, whether on plan, and the OEE's font size.
TARGETS = (
    "Array.from(document.querySelectorAll('#oee [data-oee-of]')).map(e => [e.dataset.oeeOf,"
    " e.textContent, e.classList.contains('ok'), e.nextSibling.textContent,"
    " document.querySelector(`#oee [data-plan-of=${e.dataset.oeeOf}]`).textContent,"
    " document.querySelector(`#oee [data-plan-of=${e.dataset.oeeOf}]`).classList.contains('ok'),"
    " parseFloat(getComputedStyle(e).fontSize)])"
)
OEE_PANEL = "section.split > div:nth-child(2)"  # the OEE panel with its heading and Pareto
# Everything drawn must fit the viewport's width: nothing cut off on a phone.
OVERFLOW = (
    "Array.from(document.querySelectorAll("
    "'#oee [data-kpi], #oee .oee-vs, #oee .oee-plan, .andon-row, #alarms'))"
    ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)"
    ".map(e => `${e.tagName} ${e.id || e.dataset.kpi || e.dataset.machine || ''}`)"
)


async def screenshot(tools: DevTools, session: str, name: str, selector: str = "") -> None:
    """The viewport, or only the element `selector` picks (scrolled to, below the fold)."""
    folder = os.environ.get("LINESIDE_SCREENSHOTS")
    if not folder:
        return
    clip = {}
    if selector:
        box = await evaluate(
            tools,
            session,
            f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
            " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height,"
            " scale: 1}; })()",
        )
        clip = {"clip": box, "captureBeyondViewport": True}
    image = await tools.call("Page.captureScreenshot", session, format="png", **clip)
    await asyncio.to_thread(keep_small, base64.b64decode(image["data"]), Path(folder) / name)


def errors_of(tools: DevTools) -> list[dict[str, Any]]:
    return [
        e
        for e in tools.events
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
    ]


async def test_operator_view_in_chromium(tmp_path: Path) -> None:
    binary = chromium_or_skip()
    async with (
        # the plant at its real speed, so OEE and the plan read as on a real shift
        running_agent(tmp_path, more=ALARMS, poll_interval="200ms", speed=1.0) as run,
        chromium(binary, tmp_path / "profile") as tools,
    ):
        session = await open_page(tools, run.url, 1920, 1080)
        andon = await wait_for(tools, session, f"{ANDON}.length === 2 && {ANDON}")
        # The OEE panel: each machine's OEE against its target, good units against the plan.
        targets = await wait_for(tools, session, f"{TARGETS}.length === 2 && {TARGETS}")
        await wait_for(tools, session, f"{ALARM_ROWS}.length === 1")
        # Trends: the sparklines come from /api/trend (the store), drawn as SVG paths.
        sparks = await wait_for(
            tools, session, f"{SPARKS}.filter(s => s[1] > 0 && s[2]).length >= 3 && {SPARKS}"
        )
        await evaluate(
            tools,
            session,
            "document.querySelector('#values td.spark svg[data-tag=die_temp]')"
            ".parentNode.click() || true",
        )
        await evaluate(
            tools,
            session,
            "(() => { const b = document.querySelector("
            "'#trend-picks input[value=strokes_per_min]');"
            " b.click(); return true; })()",
        )
        trend = await wait_for(
            tools,
            session,
            "(() => { const p = Array.from(document.querySelectorAll('#trend path.line'));"
            " return p.length === 2 && p.map(x => [x.dataset.tag, Number(x.dataset.points)]); })()",
        )
        # A fault: press1 drops every request; its source is lost, its alarm raised.
        faults = run.plant.units["press1"].faults
        faults.set("drop")
        raised = await wait_for(
            tools, session, f"{ALARM_ROWS}.some(r => r[0] === 'press1_silent') && {ALARM_ROWS}"
        )
        banner = await wait_for(
            tools,
            session,
            "!document.getElementById('banner').hidden"
            " && document.getElementById('banner').textContent",
        )
        await screenshot(tools, session, "status-page-1080p.png")
        faults.clear()
        await wait_for(tools, session, f"{ALARM_ROWS}.length === 1")  # cleared: die_cold left
        await wait_for(tools, session, "document.getElementById('banner').hidden")
        # Acknowledge from the page: the button POSTs with the page's header.
        await evaluate(
            tools, session, "document.querySelector('#alarms button[data-alarm=die_cold]').click()"
        )
        acknowledged = await wait_for(
            tools, session, f"{ALARM_ROWS}[0] && {ALARM_ROWS}[0][1] === 'acknowledged'"
        )

        await screenshot(tools, session, "status-page-oee-1080p.png", OEE_PANEL)

        phone = await open_page(tools, run.url, 400, 800, mobile=True)
        await wait_for(tools, phone, f"{ANDON}.length === 2")
        await wait_for(
            tools,
            phone,
            "Array.from(document.querySelectorAll('#oee [data-kpi=oee]')).length > 0",
        )
        overflow = await evaluate(tools, phone, OVERFLOW)
        phone_targets = await wait_for(tools, phone, f"{TARGETS}.length === 2 && {TARGETS}")
        await screenshot(tools, phone, "status-page-phone.png")
        await screenshot(tools, phone, "status-page-oee-phone.png", OEE_PANEL)

        # The stream goes away: the page must stop saying "live".
        await run.web.close()
        lost = await wait_for(
            tools,
            session,
            "document.getElementById('connection').className.includes('lost')"
            " && document.body.classList.contains('stale')"
            " && document.getElementById('connection').textContent",
        )
        await asyncio.sleep(0.3)
        errors = errors_of(tools)
        await run.agent.writer.flush()
        audits = [e.data for e in run.agent.store.read_events(0, 10_000) if e.kind == "audit"]
    assert errors == [], errors
    assert {m for m, _, _ in andon} == {"press1", "press2"}
    assert all(
        s.split(":")[0] in ("running", "idle", "down", "setup", "planned stop", "unknown")
        for _, s, _ in andon
    ), andon
    for name, shown, on_target, target, plan, on_plan, size in targets:
        kpi = run.agent.config.machines_by_name[name].kpi
        assert kpi is not None and kpi.target_oee == 0.85 and kpi.target_output == 9000
        assert shown.endswith("%") and "target 85.0%" in target, (shown, target)
        assert on_target == (float(shown[:-1]) >= 85.0), (shown, on_target)
        counts = re.fullmatch(r"([\d,]+) goodplan so far ([\d,]+) · shift 9,000", plan)
        assert counts is not None, plan
        good_n, plan_n = (int(n.replace(",", "")) for n in counts.groups())
        assert 0 < plan_n < 9000  # the shift so far: pro rata
        if abs(good_n - plan_n) > 1:  # whole numbers on the page, the class from the exact ones
            assert on_plan == (good_n > plan_n), plan
        assert size >= 32  # readable at 3 m: the OEE at 2.2rem
    assert all(r[6] >= 32 for r in phone_targets)
    assert len({tag for tag, _, _ in sparks}) == len(sparks)
    assert dict(trend).keys() == {"die_temp", "strokes_per_min"}
    assert all(points > 0 for _, points in trend), trend
    assert ["press1_silent", "acknowledge"] in raised, raised
    assert "source press1-plc is lost" in banner, banner
    assert acknowledged
    assert overflow == [], overflow
    assert lost.startswith("not live"), lost
    assert [a["alarm"] for a in audits] == ["die_cold"]


async def test_trend_route_serves_a_phone_few_points(tmp_path: Path) -> None:
    """Downsampled on the server: an hour of 5 polls a second comes as at most `points`."""
    import httpx

    async with (
        running_agent(tmp_path, poll_interval="200ms") as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        await until(lambda: run.agent.writer.statistics().readings_written > 100)
        answer = await client.get(
            "/api/trend", params={"machine": "press1", "tag": "die_temp", "points": "10"}
        )
    series = answer.json()["tags"]["die_temp"]
    assert 0 < len(series["t"]) <= 10

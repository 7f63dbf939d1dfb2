"""The shift reports on the status page: a list of the last 7 days and the report of a shift,
the same HTML `lineside report` writes, behind the page's token and Host rules."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from agent.kpi.document import shift_report
from agent.web.reports import shift_of
from tests.agent.web.running import running_agent


async def test_the_reports_list_links_each_shift_to_its_report(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as run, httpx.AsyncClient(base_url=run.url) as client:
        for _ in range(150):  # bounded: until the store holds readings to replay
            state = (await client.get("/api/state")).json()
            if state["store"]["readings_written"] > 50:
                break
            await asyncio.sleep(0.1)
        page = await client.get("/")
        listing = await client.get("/reports")
        links = re.findall(r'<a href="(/reports/[^"]+)">', listing.text)
        assert links, listing.text
        report = await client.get(links[0])
        current = await client.get("/reports/current")
        bad = await client.get("/reports/2026-99-99")
        other = await client.get("/reports/..%2F..%2Fetc")
        config = run.agent.config
        written = shift_report(config, "current", run.agent.clock.time_ns())
    assert 'href="reports"' in page.text and 'href="reports/current"' in page.text
    assert listing.status_code == 200 and listing.headers["content-type"].startswith("text/html")
    assert "in progress" in listing.text  # the shift (or day) running now
    policy = report.headers["content-security-policy"]
    assert "style-src 'unsafe-inline'" in policy and "script" not in policy
    assert report.status_code == 200 and current.status_code == 200
    for html in (report.text, current.text):
        assert html.startswith("<!DOCTYPE html>") and "<script" not in html
        assert 'class="gantt"' in html and 'class="waterfall"' in html

    # the same document the CLI writes (its generation time and live figures apart)
    def skeleton(html: str) -> list[str]:
        return re.findall(r"<h[1-4][^>]*>(.*?)</h[1-4]>", html)

    assert skeleton(current.text) == skeleton(written)
    assert bad.status_code == 404 and "2026-99-99" in bad.json()["error"]
    assert other.status_code == 404


async def test_reports_ask_for_the_token_and_a_known_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_TOKEN", "s3cret-token")
    web = 'port = 0\ntoken_env = "LINESIDE_TEST_TOKEN"'
    async with running_agent(tmp_path, web=web) as run, httpx.AsyncClient(base_url=run.url) as c:
        bare = await c.get("/reports")
        shift = await c.get("/reports/current")
        good = await c.get("/reports", headers={"Authorization": "Bearer s3cret-token"})
        elsewhere = await c.get(
            "/reports",
            headers={"Authorization": "Bearer s3cret-token", "Host": "evil.example:80"},
        )
    assert bare.status_code == 401 and shift.status_code == 401
    assert good.status_code == 200
    assert elsewhere.status_code == 421


def test_only_shift_names_reach_the_replay() -> None:
    assert shift_of("/reports/2026-11-23/A") == "2026-11-23/A"
    assert shift_of("/reports/current") == "current"
    assert shift_of("/reports/2026-11-23%2FNight") == "2026-11-23/Night"
    assert shift_of("/reports/../x") is None
    assert shift_of("/reports/<script>") is None

"""Alarms end to end: the simulator's faults raise and clear them, the store keeps the events,
the page lists them and acknowledges them (POST with the guards), the trend reads the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.model import EventKind
from tests.agent.web.running import running_agent
from tests.waiting import until

ALARMS = """
[[alarms]]
name = "press1_silent"
machine = "press1"
tag = "part_count"
stale = "300ms"
severity = "critical"

[[alarms]]
name = "die_cold"
machine = "press1"
tag = "die_temp"
below = 1000
message = "die below working temperature"
"""


def stored(run: Any, kind: EventKind) -> list[dict[str, Any]]:
    return [e.data for e in run.agent.store.read_events(0, 10_000) if e.kind is kind]


async def test_a_fault_raises_and_clears_an_alarm_and_the_page_acknowledges(
    tmp_path: Path,
) -> None:
    async with (
        running_agent(tmp_path, more=ALARMS) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        agent = run.agent
        await until(lambda: [a["alarm"] for a in agent.alarms.view(0)] == ["die_cold"])
        faults = run.plant.units["press1"].faults
        faults.set("drop")  # every request of press1 closes its connection: readings go bad
        await until(lambda: "press1_silent" in [a["alarm"] for a in agent.alarms.view(0)])
        state = (await client.get("/api/state")).json()
        listed = {a["alarm"]: a for a in state["alarms"]}
        assert listed["press1_silent"]["severity"] == "critical"
        assert listed["press1_silent"]["active_s"] >= 0
        assert listed["die_cold"]["reason"] == "die below working temperature"
        faults.clear()
        await until(lambda: "press1_silent" not in [a["alarm"] for a in agent.alarms.view(0)])

        ack = "/api/alarms/ack"
        header = {"X-Lineside-Action": "ack"}
        plain_get = await client.get(ack, params={"alarm": "die_cold"})
        no_header = await client.post(ack, params={"alarm": "die_cold"})
        foreign = await client.post(
            ack, params={"alarm": "die_cold"}, headers={**header, "Origin": "http://evil.example"}
        )
        unknown = await client.post(ack, params={"alarm": "nope"}, headers=header)
        origin = {"Origin": run.url.rstrip("/")}
        done = await client.post(ack, params={"alarm": "die_cold"}, headers={**header, **origin})
        again = await client.post(ack, params={"alarm": "die_cold"}, headers=header)
        state = await run.web.state.state(None, max_age=0)  # /api/state is up to 1 s old
        await agent.writer.flush()
        alarms = stored(run, EventKind.ALARM)
        audits = stored(run, EventKind.AUDIT)
    assert plain_get.status_code == 405 and plain_get.headers["allow"] == "POST"
    assert no_header.status_code == 403 and "x-lineside-action" in no_header.json()["error"]
    assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
    assert unknown.status_code == 409
    assert done.status_code == 200, done.text
    assert done.json()["by"] == "loopback 127.0.0.1"
    assert again.status_code == 409  # acknowledged once
    (row,) = state["alarms"]
    assert row["alarm"] == "die_cold" and row["acknowledged"] is True
    silent = [(a["active"], a["condition"]) for a in alarms if a["alarm"] == "press1_silent"]
    assert silent == [(True, "stale"), (False, "stale")]
    assert next(a for a in alarms if a["alarm"] == "die_cold")["value"] < 1000
    (audit,) = audits
    assert audit["action"] == "acknowledge" and audit["alarm"] == "die_cold"


async def test_acknowledging_beyond_loopback_needs_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_TOKEN", "s3cret-token")
    web = 'bind = "0.0.0.0"\nport = 0\ntoken_env = "LINESIDE_TEST_TOKEN"'
    async with running_agent(tmp_path, web=web, more=ALARMS) as run:
        await until(lambda: bool(run.agent.alarms.view(0)))
        base = f"http://127.0.0.1:{run.web.port}"
        params = {"alarm": "die_cold"}
        header = {"X-Lineside-Action": "ack"}
        async with httpx.AsyncClient(base_url=base) as client:
            bare = await client.post("/api/alarms/ack", params=params, headers=header)
            bearer = {"Authorization": "Bearer s3cret-token", **header}
            done = await client.post("/api/alarms/ack", params=params, headers=bearer)
    assert bare.status_code == 401
    assert done.status_code == 200 and done.json()["by"] == "token 127.0.0.1"


async def test_trend_route_reads_the_running_store(tmp_path: Path) -> None:
    async with (
        running_agent(tmp_path) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        await until(lambda: run.agent.writer.statistics().readings_written > 50)
        trend = await client.get(
            "/api/trend",
            params=[("machine", "press1"), ("tag", "die_temp"), ("tag", "state")],
        )
        bad = await client.get("/api/trend", params={"machine": "press1", "tag": "nope"})
    assert trend.status_code == 200, trend.text
    tags = trend.json()["tags"]
    assert set(tags) == {"die_temp", "state"}
    assert tags["die_temp"]["t"] and len(tags["die_temp"]["t"]) <= 300
    assert bad.status_code == 400 and "no stored tag 'nope'" in bad.json()["error"]


async def test_an_alarm_active_at_a_restart_is_not_raised_twice(tmp_path: Path) -> None:
    raised: list[dict[str, Any]] = []
    for _ in range(2):
        async with running_agent(tmp_path, more=ALARMS) as run:
            await until(lambda: "die_cold" in [a["alarm"] for a in run.agent.alarms.view(0)])
            await run.agent.writer.flush()
            raised = [a for a in stored(run, EventKind.ALARM) if a["alarm"] == "die_cold"]
    assert [a["active"] for a in raised] == [True]  # once, across both runs


async def test_metrics_show_each_alarm_active_acknowledged_and_raised(tmp_path: Path) -> None:
    """The `[[alarms]]` in /metrics of the running agent: a simulator fault raises one, a
    reading below its limit the other, an operator acknowledges it."""
    from tests.agent.web.test_server import samples

    silent = (("alarm", "press1_silent"), ("machine", "press1"), ("severity", "critical"))
    cold = (("alarm", "die_cold"), ("machine", "press1"), ("severity", "warning"))

    async def scraped(client: httpx.AsyncClient) -> dict[Any, float]:
        await run.web.state.figures(max_age=0)  # /metrics renders a snapshot up to 1 s old
        answer = await client.get("/metrics")
        assert answer.status_code == 200
        return samples(answer.text)

    async with (
        running_agent(tmp_path, more=ALARMS) as run,
        httpx.AsyncClient(base_url=run.url) as client,
    ):
        agent = run.agent
        await until(lambda: [a["alarm"] for a in agent.alarms.view(0)] == ["die_cold"])
        before = await scraped(client)
        faults = run.plant.units["press1"].faults
        faults.set("drop")  # every request of press1 closes its connection: readings go bad
        await until(lambda: "press1_silent" in [a["alarm"] for a in agent.alarms.view(0)])
        raised = await scraped(client)
        faults.clear()
        await until(lambda: "press1_silent" not in [a["alarm"] for a in agent.alarms.view(0)])
        assert agent.acknowledge_alarm("die_cold", "tester")
        await until(lambda: agent.alarms.states["die_cold"].acknowledged)
        after = await scraped(client)
    assert before["lineside_alarm_active", silent] == 0
    assert before["lineside_alarm_raised_total", silent] == 0
    assert before["lineside_alarm_active", cold] == 1
    assert before["lineside_alarm_acknowledged", cold] == 0
    assert before["lineside_alarm_raised_total", cold] == 1
    assert raised["lineside_alarm_active", silent] == 1
    assert raised["lineside_alarm_raised_total", silent] == 1
    assert after["lineside_alarm_active", silent] == 0  # cleared, and counted still
    assert after["lineside_alarm_raised_total", silent] == 1
    assert after["lineside_alarm_acknowledged", cold] == 1
    assert after["lineside_alarm_acknowledged", silent] == 0


def _alarm(name: str, body: str) -> str:
    return f'\n[[alarms]]\nname = "{name}"\nmachine = "press1"\n{body}\n'


async def test_a_reload_adds_removes_and_changes_alarms(tmp_path: Path) -> None:
    """SIGHUP's reload applies `[[alarms]]`: the unchanged alarm keeps its state and its
    acknowledgement, a removed or changed active alarm is cleared with an event, an added one
    is raised by its condition."""
    kept = _alarm("die_cold", 'tag = "die_temp"\nbelow = 1000')
    gone = _alarm("die_cold_too", 'tag = "die_temp"\nbelow = 1001')
    changed = _alarm("die_not_hot", 'tag = "die_temp"\nbelow = 1002')
    async with running_agent(tmp_path, more=kept + gone + changed) as run:
        agent = run.agent
        names = ["die_cold", "die_cold_too", "die_not_hot"]
        await until(lambda: sorted(a["alarm"] for a in agent.alarms.view(0)) == names)
        assert agent.acknowledge_alarm("die_cold", "test")
        since = agent.alarms.view(0)[0]["since_ns"]
        path = tmp_path / "lineside.toml"
        text = path.read_text(encoding="utf-8")
        added = _alarm("press1_silent", 'tag = "part_count"\nstale = "300ms"')
        now = kept + _alarm("die_not_hot", 'tag = "die_temp"\nbelow = -50') + added
        path.write_text(text.replace(kept + gone + changed, now), encoding="utf-8")
        assert await agent.reload() is True
        after = {a["alarm"]: a for a in agent.alarms.view(0)}
        run.plant.units["press1"].faults.set("drop")  # press1's readings go bad: stale
        await until(lambda: "press1_silent" in [a["alarm"] for a in agent.alarms.view(0)])
        run.plant.units["press1"].faults.clear()
        await agent.writer.flush()
        alarms = stored(run, EventKind.ALARM)
        audits = stored(run, EventKind.AUDIT)
    assert list(after) == ["die_cold"]  # the removed and the changed alarm are cleared
    assert after["die_cold"]["acknowledged"] is True and after["die_cold"]["since_ns"] == since
    cleared = {a["alarm"]: a for a in alarms if not a["active"]}
    assert cleared["die_cold_too"]["cleared_by"] == "config reload"
    assert cleared["die_not_hot"]["cleared_by"] == "config reload"
    assert cleared["die_not_hot"]["limit"] == 1002  # the rule that was active
    assert "die_cold" not in cleared
    raised = [a["alarm"] for a in alarms if a["active"]]
    assert raised.count("die_cold") == 1 and raised.count("press1_silent") == 1
    reload = next(a for a in audits if a["action"] == "config reload")
    assert reload["alarms"] == {
        "added": ["press1_silent"],
        "removed": ["die_cold_too"],
        "changed": ["die_not_hot"],
    }
    assert "+1 alarm, -1, ~1 changed" in reload["summary"]

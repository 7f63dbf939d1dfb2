"""The fleet view's pure halves: an agent's status from its figures, and rows from messages."""

from __future__ import annotations

import io
from typing import Any

import orjson
from rich.console import Console

from agent.fleet import agent_status, all_online, fleet_rows, render_fleet, span, status_filter
from tests.agent.test_cli import HEAVY, imported_after, lineside

NOW_MS = 1_800_000_000_000


def figures(**changes: Any) -> dict[str, Any]:
    """The shape `StateBuilder.figures()` returns, cut down to what the status reads."""
    base: dict[str, Any] = {
        "agent_id": "edge-7",
        "sources": [
            {"name": "press1-plc", "state": "connected", "last_error": None},
            {"name": "press2-plc", "state": "lost", "last_error": "connection refused"},
        ],
        "sinks": [
            {"name": "uns", "state": "connected", "backlog": 40, "oldest_unsent_age_s": 3.5,
             "last_error": None},
            {"name": "mes", "state": "failing", "backlog": 2, "oldest_unsent_age_s": 90.0,
             "last_error": "503 from the MES"},
        ],
        "store": {"last_error": None},
        "oee": {
            "available": True,
            "rows": [
                {"scope": "machine", "name": "press1", "oee": 0.81},
                {"scope": "machine", "name": "press2", "oee": None},
                {"scope": "line", "name": "body-line-1", "oee": 0.7},
            ],
        },
    }  # fmt: skip
    base.update(changes)
    return base


def test_status_sums_the_sinks_and_counts_sources_up_and_down() -> None:
    status = agent_status(figures(), version="1.2.3", uptime_s=3725.04)
    assert status["agent_id"] == "edge-7"
    assert status["version"] == "1.2.3"
    assert status["uptime_s"] == 3725.0
    assert (status["sources_up"], status["sources_down"]) == (1, 1)
    assert status["sources"] == {"press1-plc": "connected", "press2-plc": "lost"}
    assert status["backlog"] == 42
    assert status["oldest_unsent_age_s"] == 90.0
    assert status["oee"] == {"press1": 0.81, "press2": None}, "machines only, not lines"
    assert [s["name"] for s in status["sinks"]] == ["uns", "mes"]
    orjson.dumps(status)  # JSON-ready


def test_last_error_is_of_a_part_down_now_before_one_recovered() -> None:
    assert agent_status(figures(), version="1", uptime_s=0)["last_error"] == (
        "source press2-plc: connection refused"
    )
    recovered = figures(
        sources=[{"name": "press1-plc", "state": "connected", "last_error": "timed out"}],
        sinks=[],
    )
    assert agent_status(recovered, version="1", uptime_s=0)["last_error"] == (
        "source press1-plc: timed out"
    )
    store = figures(sources=[], sinks=[], store={"last_error": "disk full"})
    assert agent_status(store, version="1", uptime_s=0)["last_error"] == "store: disk full"
    quiet = figures(sources=[], sinks=[])
    status = agent_status(quiet, version="1", uptime_s=0)
    assert status["last_error"] is None
    assert status["backlog"] == 0
    assert status["oldest_unsent_age_s"] is None


def message(**body: Any) -> bytes:
    return orjson.dumps(body)


def test_rows_say_online_offline_stale_or_unreadable() -> None:
    rows = fleet_rows(
        {
            "plant/a/b/site1/_agent/edge-2/status": message(
                online=True, ts=NOW_MS - 2_000, interval_s=5.0, backlog=0
            ),
            "plant/a/b/site1/_agent/edge-1/status": message(online=False, reason="connection lost"),
            "plant/a/b/site1/_agent/edge-3/status": message(
                online=True, ts=NOW_MS - 60_000, interval_s=5.0
            ),
            "plant/a/b/site1/_agent/edge-4/status": b"not json",
            "plant/a/b/site1/_agent/edge-5/status": b"",  # a deleted retained message
        },
        NOW_MS,
    )
    assert [(r["site"], r["agent_id"], r["state"]) for r in rows] == [
        ("site1", "edge-1", "offline"),
        ("site1", "edge-2", "online"),
        ("site1", "edge-3", "stale"),
        ("site1", "edge-4", "unreadable"),
    ]
    assert rows[1]["age_s"] == 2.0
    assert rows[0]["age_s"] is None, "a Will carries no time"
    assert not all_online(rows)
    assert all_online(rows[1:2])
    assert not all_online([]), "no agent at all is not a healthy fleet"


def test_status_filter_names_one_site_or_every_site() -> None:
    assert status_filter("lineside", "plant1") == "lineside/plant1/_agent/+/status"
    assert status_filter("a/b", None) == "a/b/+/_agent/+/status"


def test_span() -> None:
    assert [span(v) for v in (None, 0, 59.9, 125, 3725, 93784.0)] == [
        "-",
        "0s",
        "59s",
        "2m05s",
        "1h02m",
        "1d2h",
    ]


def test_table_marks_offline_red_and_prints_errors_as_written() -> None:
    rows = fleet_rows(
        {
            "l/s/_agent/edge-1/status": message(
                online=True, ts=NOW_MS, interval_s=5.0, version="1.0", uptime_s=65,
                sources_up=2, sources_down=0, backlog=7, oldest_unsent_age_s=None,
                last_error="sink uns: refused [bold]x[/bold]", oee={"press1": 0.815},
            ),
            "l/s/_agent/edge-2/status": message(online=False, reason="connection lost"),
        },
        NOW_MS,
    )  # fmt: skip
    console = Console(
        file=io.StringIO(), record=True, width=200, color_system="standard", force_terminal=True
    )
    render_fleet(rows, console)
    text = console.export_text(clear=False)
    assert "sink uns: refused [bold]x[/bold]" in text, "no markup in figures"
    assert "press1 82%" in text
    assert "1m05s" in text
    assert "2 up, 0 down" in text
    assert "1 of 2 agents online" in text
    styled = console.export_text(styles=True)
    red = next(line for line in styled.splitlines() if "edge-2" in line)
    assert "\x1b[31m" in red
    plain = next(line for line in styled.splitlines() if "edge-1" in line)
    assert "\x1b[31m" not in plain


def test_fleet_help_loads_no_mqtt_client() -> None:
    listed = lineside("--help")
    assert listed.returncode == 0 and "fleet" in listed.stdout
    loaded = imported_after(
        "import sys\nsys.argv=['lineside','fleet','status','--help']\n"
        "from agent.cli.app import app\ntry:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)

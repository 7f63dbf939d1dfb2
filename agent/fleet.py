"""The fleet view: what one agent says about itself, and a site's agents read back as rows.

Every agent with an MQTT sink publishes a retained status message on
`<prefix>/<site>/_agent/<agent_id>/status` (connectors/mqtt/fleet.py), with a Will that
replaces it by an offline one when the agent dies; `lineside fleet status` reads them all.

Both halves are pure. `agent_status` makes the message's figures out of the status page's
(`StateBuilder.figures()`, agent/web/state.py), the one place the agent's figures are
gathered. `fleet_rows` turns the retained messages read from the broker into table rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from rich.console import Console

# A status that says "online" but is older than this many intervals (plus the margin, for
# clocks a little apart) comes from an agent whose broker lost its Will: shown as stale.
STALE_INTERVALS = 3
STALE_MARGIN_S = 10.0
UP = "connected"  # the link and forwarder state of a source or sink that works


def agent_status(figures: Mapping[str, Any], *, version: str, uptime_s: float) -> dict[str, Any]:
    """The status message's figures from the status page's figures (JSON-ready)."""
    sources = {s["name"]: s["state"] for s in figures.get("sources", [])}
    sinks = [
        {
            "name": s["name"],
            "state": s["state"],
            "backlog": s["backlog"],
            "oldest_unsent_age_s": s["oldest_unsent_age_s"],
        }
        for s in figures.get("sinks", [])
    ]
    ages = [s["oldest_unsent_age_s"] for s in sinks if s["oldest_unsent_age_s"] is not None]
    oee = figures.get("oee") or {}
    return {
        "agent_id": figures.get("agent_id"),
        "version": version,
        "uptime_s": round(uptime_s, 1),
        "sources_up": sum(state == UP for state in sources.values()),
        "sources_down": sum(state != UP for state in sources.values()),
        "sources": sources,
        "backlog": sum(s["backlog"] for s in sinks),
        "oldest_unsent_age_s": max(ages) if ages else None,
        "sinks": sinks,
        "last_error": last_error(figures),
        "oee": {
            row["name"]: row["oee"] for row in oee.get("rows", []) if row.get("scope") == "machine"
        },
    }


def last_error(figures: Mapping[str, Any]) -> str | None:
    """The error most worth a look, naming its part: one of a source or sink that is down
    now first, then the store's, then one a part kept from before it recovered."""
    parts = [("source", s) for s in figures.get("sources", [])]
    parts += [("sink", s) for s in figures.get("sinks", [])]
    down = [(kind, p) for kind, p in parts if p.get("last_error") and p.get("state") != UP]
    for kind, part in down:
        return f"{kind} {part['name']}: {part['last_error']}"
    store_error = (figures.get("store") or {}).get("last_error")
    if store_error:
        return f"store: {store_error}"
    for kind, part in parts:
        if part.get("last_error"):
            return f"{kind} {part['name']}: {part['last_error']}"
    return None


# ---------------------------------------------------------------------------------------------
# Reading the fleet back


def status_filter(prefix: str, site: str | None) -> str:
    """The topic filter of every agent's status, of one site or (None) of every site."""
    return f"{prefix}/{site or '+'}/_agent/+/status"


def fleet_rows(messages: Mapping[str, bytes], now_ms: int) -> list[dict[str, Any]]:
    """One row per retained status message (topic → payload), by site and agent.

    `state` is "online", "offline" (the agent stopped, or its Will said it died), "stale"
    (online by its word but silent for more than `STALE_INTERVALS` intervals) or "unreadable"
    (not a status message)."""
    rows = []
    for topic, payload in messages.items():
        parts = topic.rsplit("/", 4)
        if len(parts) != 5 or not payload:  # an empty payload deletes a retained message
            continue
        _, site, _, agent_id, _ = parts
        try:
            status = orjson.loads(payload)
        except orjson.JSONDecodeError:
            status = None
        if not isinstance(status, dict):
            rows.append({"site": site, "agent_id": agent_id, "state": "unreadable"})
            continue
        row: dict[str, Any] = {**status, "site": site, "agent_id": agent_id}
        ts, interval = status.get("ts"), status.get("interval_s")
        age = (now_ms - ts) / 1000 if isinstance(ts, int | float) else None
        row["age_s"] = round(max(0.0, age), 1) if age is not None else None
        if status.get("online") is not True:
            row["state"] = "offline"
        elif (
            age is not None
            and isinstance(interval, int | float)
            and age > STALE_INTERVALS * interval + STALE_MARGIN_S
        ):
            row["state"] = "stale"
        else:
            row["state"] = "online"
        rows.append(row)
    return sorted(rows, key=lambda r: (r["site"], r["agent_id"]))


def all_online(rows: list[dict[str, Any]]) -> bool:
    """Whether there is at least one agent and every one is online (the exit code)."""
    return bool(rows) and all(r["state"] == "online" for r in rows)


def span(seconds: Any) -> str:
    """`93784.0` → "1d2h", `125` → "2m05s": a duration at a glance; "-" when unknown."""
    if not isinstance(seconds, int | float):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _oee(values: Any) -> str:
    if not isinstance(values, Mapping) or not values:
        return "-"
    return " ".join(
        f"{name} {v:.0%}" if isinstance(v, int | float) else f"{name} -"
        for name, v in values.items()
    )


_STYLES = {"offline": "red", "unreadable": "red", "stale": "yellow"}


def render_fleet(rows: list[dict[str, Any]], console: Console) -> None:
    """The fleet as one table; offline agents in red, stale ones in yellow."""
    # Here, not at the top: a running agent imports this module for its status message.
    from rich.table import Table
    from rich.text import Text

    sites = {r["site"] for r in rows}
    table = Table(title_justify="left")
    columns = ["agent", "state", "version", "uptime", "sources", "backlog", "oldest unsent"]
    columns += ["OEE", "last error"]
    if len(sites) > 1:
        columns.insert(0, "site")
    for column in columns:
        right = column in ("uptime", "backlog", "oldest unsent")
        table.add_column(column, justify="right" if right else "left")
    for r in rows:
        sources = (
            f"{r['sources_up']} up, {r['sources_down']} down"
            if isinstance(r.get("sources_up"), int) and isinstance(r.get("sources_down"), int)
            else "-"
        )
        backlog = r.get("backlog")
        cells = [
            r["agent_id"],
            r["state"],
            str(r.get("version") or "-"),
            span(r.get("uptime_s")),
            sources,
            str(backlog) if isinstance(backlog, int) else "-",
            span(r.get("oldest_unsent_age_s")),
            _oee(r.get("oee")),
            str(r.get("last_error") or r.get("reason") or "-"),
        ]
        if len(sites) > 1:
            cells.insert(0, r["site"])
        # Text, not markup: an error quoting "[...]" must print as it is.
        table.add_row(*(Text(c) for c in cells), style=_STYLES.get(r["state"]))
    console.print(table)
    online = sum(r["state"] == "online" for r in rows)
    console.print(f"{online} of {len(rows)} agents online", highlight=False)

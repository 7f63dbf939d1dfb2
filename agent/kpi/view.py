"""KPI windows as rich tables and JSON rows (`lineside oee`). Pure: no I/O, no clock.

Undefined figures (no planned time, no count) print as "—", never as 0: a reader must not take
"no data" for "0 % OEE". Flags stay visible next to the figures they qualify.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from itertools import groupby
from typing import Any

from rich.table import Table
from rich.text import Text

from agent.kpi.replay import KpiWindow

UNDEFINED = "—"
TOP_LOSSES = 3

# Short words for the engine's flags (docs/kpi.md, "Edge cases").
FLAG_TEXT = {
    "performance_above_100": "P > 100 %",
    "availability_above_100": "A > 100 % (input error)",
    "quality_above_100": "Q > 100 % (input error)",
    "count_without_run_time": "parts without run time",
    "unknown_time": "unknown time",
    "no_planned_time": "no planned time",
}


def percent(value: float | None) -> str:
    """A ratio as a percentage with one decimal; "—" when undefined (or not finite)."""
    if value is None or not math.isfinite(value):
        return UNDEFINED
    return f"{value * 100:.1f} %"


def duration(seconds: float | None) -> str:
    """Seconds as `2h 05m`, `12m 03s` or `45s` (rounded to the second)."""
    if seconds is None or not math.isfinite(seconds):
        return UNDEFINED
    s = round(seconds)
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def count(value: float) -> str:
    """A count: integers without decimals (parts), fractional amounts with two (tonnes)."""
    if not math.isfinite(value):
        return UNDEFINED
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def local_time(t_ns: int, zone: tzinfo) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M")


def top_losses(w: KpiWindow, top: int = TOP_LOSSES) -> list[str]:
    """The largest downtime reasons as `die jam 12m 03s (41 %)` (share of all the downtime)."""
    out = []
    previous = 0.0
    for reason, seconds, cumulative in w.pareto[:top]:
        out.append(f"{reason} {duration(seconds)} ({(cumulative - previous) * 100:.0f} %)")
        previous = cumulative
    return out


def flag_texts(w: KpiWindow) -> list[str]:
    out = []
    for f in w.flags:
        text = FLAG_TEXT.get(f, f.replace("_", " "))
        if f == "unknown_time":
            text += f" {duration(w.components.get('unknown_s', 0.0))}"
        out.append(text)
    return out


def window_title(w: KpiWindow, zone: tzinfo) -> str:
    span = f"{local_time(w.start_ns, zone)} – {local_time(w.end_ns, zone)}"
    title = f"{w.kind} {w.name} ({span})"
    if not w.complete and w.as_of_ns is not None:
        title += f", in progress as of {local_time(w.as_of_ns, zone)}"
    return title


COLUMNS = ("", "A", "P", "Q", "OEE", "total", "good", "reject", "run", "down", "setup", "idle",
           "unknown", "top losses", "flags")  # fmt: skip


def table_row(w: KpiWindow) -> list[str]:
    """One row of the table: the classic figures, counts, times, top losses and flags."""
    k, c = w.classic, w.components
    performance = percent(k["performance"])
    if "performance_above_100" in w.flags:
        performance += " !"
    return [
        w.label if w.scope == "machine" else f"line {w.line}",
        percent(k["availability"]),
        performance,
        percent(k["quality"]),
        percent(k["oee"]),
        count(c["total"]),
        count(c["good"]),
        count(c["reject"]),
        duration(c["running_s"]),
        duration(c["down_s"]),
        duration(c["setup_s"]),
        duration(c["idle_s"]),
        duration(c["unknown_s"]),
        "; ".join(top_losses(w)) or "-",
        ", ".join(flag_texts(w)),
    ]


def tables(windows: Sequence[KpiWindow], zone: tzinfo) -> list[Table]:
    """One table per window (hour, shift or day): a row per machine, then one per line."""
    out = []
    for _, group in groupby(windows, key=lambda w: (w.start_ns, w.kind, w.name)):
        rows = list(group)
        table = Table(title=window_title(rows[0], zone), title_justify="left")
        for i, column in enumerate(COLUMNS):
            table.add_column(column, justify="right" if 0 < i < 13 else "left")
        for w in rows:
            style = "bold" if w.scope == "line" else None
            cells = table_row(w)
            flagged = Text(cells[-1], style="yellow") if cells[-1] else Text("")
            table.add_row(*cells[:-1], flagged, style=style)
        out.append(table)
    return out


def json_row(w: KpiWindow) -> dict[str, Any]:
    """Everything about one window as plain JSON data (both definitions)."""
    return {
        "scope": w.scope,
        "machine": w.machine,
        "line": w.line,
        "window": {"kind": w.kind, "name": w.name, "start_ns": w.start_ns, "end_ns": w.end_ns},
        "complete": w.complete,
        "as_of_ns": w.as_of_ns,
        "revision": w.revision,
        "kpis": {"classic": w.classic, "iso22400": w.iso22400},
        "components": w.components,
        "flags": w.flags,
        "losses": w.losses,
        "pareto": [{"reason": r, "seconds": s, "cumulative_share": f} for r, s, f in w.pareto],
    }


def json_rows(windows: Sequence[KpiWindow]) -> list[dict[str, Any]]:
    return [json_row(w) for w in windows]

"""KPI windows as rich tables and JSON rows (`lineside oee`). Pure: no I/O, no clock.

Undefined figures (no planned time, no count) print as "—", never as 0: a reader must not take
"no data" for "0 % OEE". Flags stay visible next to the figures they qualify.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from itertools import groupby
from typing import TYPE_CHECKING, Any

from agent.kpi.replay import KpiWindow

# rich is imported by the two table builders only: the status page imports this module for its
# formatting, and a running agent has no use for rich (~1.6 MB of RSS).
if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

UNDEFINED = "—"
TOP_LOSSES = 3

# Short words for the engine's flags (docs/kpi.md, "Edge cases").
FLAG_TEXT = {
    "performance_above_100": "P > 100 %",
    "availability_above_100": "A > 100 % (input error)",
    "quality_above_100": "Q > 100 % (input error)",
    "count_without_run_time": "parts without run time",
    "unknown_time": "unknown time",
    "frozen": "frozen values (unknown time)",
    "unknown_production": "parts in unknown time",
    "implausible_count": "implausible count capped",
    "overtime": "overtime (ran outside planned time)",
    "no_planned_time": "no planned time",
}


def unknown_share(w: KpiWindow) -> dict[str, float | None]:
    """The share of planned time with no known state and of production (by ideal time)
    counted across unknown time, from a window's components (docs/kpi.md)."""
    c = w.components
    planned, lost = float(c.get("planned_s") or 0.0), float(c.get("unknown_s") or 0.0)
    ideal, lost_ideal = float(c.get("ideal_s") or 0.0), float(c.get("unknown_ideal_s") or 0.0)
    return {
        "time": lost / planned if planned > 0 else None,
        "parts": lost_ideal / (ideal + lost_ideal) if ideal + lost_ideal > 0 else None,
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


def count(value: float | None) -> str:
    """A count: integers without decimals (parts), fractional amounts with two (tonnes); "—"
    for a line, whose machines' counts are in different units and are not added."""
    if value is None or not math.isfinite(value):
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
        # how much time is unknown is in the time table's own column
        out.append(FLAG_TEXT.get(f, f.replace("_", " ")))
    return out


def window_title(w: KpiWindow, zone: tzinfo) -> str:
    span = f"{local_time(w.start_ns, zone)} – {local_time(w.end_ns, zone)}"
    title = f"{w.kind} {w.name} ({span})"
    if not w.complete and w.as_of_ns is not None:
        title += f", in progress as of {local_time(w.as_of_ns, zone)}"
    return title


# Two tables per window so each fits an 80-column terminal: the figures, then where the time went.
FIGURE_COLUMNS = ("", "A", "P", "Q", "OEE", "total", "good", "reject")
TIME_COLUMNS = ("", "run", "down", "setup", "idle", "unknown", "top losses")


def _name(w: KpiWindow) -> str:
    # A line by its own name (its area is in --json): the tables stay 80 columns wide.
    if w.scope == "line" and w.line is not None:
        return f"line {w.line.rsplit('/', 1)[-1]}"
    return w.label if w.scope == "machine" else f"{w.scope} {w.label}"


def unknown_text(w: KpiWindow) -> str:
    """The unknown time and its share of planned time, and the share of parts counted across
    unknown time when some were: `12m 00s (2.5 %)`, `12m 00s (2.5 %, parts 3.1 %)`."""
    share = unknown_share(w)
    text = duration(w.components["unknown_s"])
    shares = [percent(share["time"])] if share["time"] else []
    if share["parts"]:
        shares.append(f"parts {percent(share['parts'])}")
    return f"{text} ({', '.join(shares)})" if shares else text


def figure_row(w: KpiWindow) -> list[str]:
    """The classic figures and the counts of one window ("—" where undefined)."""
    k, c = w.classic, w.components
    performance = percent(k["performance"])
    if "performance_above_100" in w.flags:
        performance += " !"
    return [
        _name(w),
        percent(k["availability"]),
        performance,
        percent(k["quality"]),
        percent(k["oee"]),
        count(c["total"]),
        count(c["good"]),
        count(c["reject"]),
    ]


def time_row(w: KpiWindow) -> list[str]:
    """Run, stop and unknown time of one window, and its top losses."""
    c = w.components
    return [
        _name(w),
        duration(c["running_s"]),
        duration(c["down_s"]),
        duration(c["setup_s"]),
        duration(c["idle_s"]),
        unknown_text(w),
        "; ".join(top_losses(w)) or "-",
    ]


def tables(windows: Sequence[KpiWindow], zone: tzinfo) -> list[Text | Table]:
    """Per window (hour, shift or day): its title, the figures and the time as two tables with a
    row per machine then one per line, and a line per machine or line that carries flags."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    out: list[Text | Table] = []
    for _, group in groupby(windows, key=lambda w: (w.start_ns, w.kind, w.name)):
        rows = list(group)
        figures, times = Table(box=box.SIMPLE_HEAD), Table(box=box.SIMPLE_HEAD)
        for i, column in enumerate(FIGURE_COLUMNS):
            figures.add_column(column, justify="right" if i else "left")
        for i, column in enumerate(TIME_COLUMNS):
            times.add_column(column, justify="right" if 0 < i < 6 else "left", overflow="fold")
        flagged = Text()
        for w in rows:
            style = None if w.scope == "machine" else "bold"
            figures.add_row(*figure_row(w), style=style)
            times.add_row(*time_row(w), style=style)
            if w.flags:
                flagged.append(f"{_name(w)}: {', '.join(flag_texts(w))}\n", style="yellow")
            for note in w.notes:
                flagged.append(f"{_name(w)}: {note}\n", style="dim")
        out += [Text(window_title(rows[0], zone), style="bold"), figures, times]
        per_product = product_table(rows)
        if per_product is not None:
            out.append(per_product)
        if flagged:
            flagged.rstrip()
            out.append(flagged)
    return out


PRODUCT_COLUMNS = ("", "product", "A", "P", "Q", "OEE", "total", "good", "run", "unknown")


def product_rows(w: KpiWindow) -> list[list[str]]:
    """A machine's figures per product (docs/kpi.md, Per product): a row per product."""
    out = []
    for p in w.products:
        k, c = p["classic"], p["components"]
        out.append([
            _name(w), str(p["label"]), percent(k["availability"]), percent(k["performance"]),
            percent(k["quality"]), percent(k["oee"]), count(c["total"]), count(c["good"]),
            duration(c["running_s"]), duration(c["unknown_s"]),
        ])  # fmt: skip
    return out


def product_table(rows: Sequence[KpiWindow]) -> Table | None:
    """The per-product table of one window's machines; None when none has a product tag."""
    body = [r for w in rows for r in product_rows(w)]
    if not body:
        return None
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, title="per product", title_justify="left")
    for i, column in enumerate(PRODUCT_COLUMNS):
        table.add_column(column, justify="right" if i > 1 else "left")
    for r in body:
        table.add_row(*r)
    return table


def json_row(w: KpiWindow) -> dict[str, Any]:
    """Everything about one window as plain JSON data (both definitions)."""
    return {
        "scope": w.scope,
        "machine": w.machine,
        "line": w.line,
        "area": w.area,
        "site": w.site,
        "window": {"kind": w.kind, "name": w.name, "start_ns": w.start_ns, "end_ns": w.end_ns},
        "complete": w.complete,
        "as_of_ns": w.as_of_ns,
        "revision": w.revision,
        "kpis": {"classic": w.classic, "iso22400": w.iso22400},
        "components": w.components,
        "unknown": unknown_share(w),
        "flags": w.flags,
        "losses": w.losses,
        "pareto": [{"reason": r, "seconds": s, "cumulative_share": f} for r, s, f in w.pareto],
        "unit": w.unit,
        "notes": list(w.notes),
        "products": list(w.products),
    }


def json_rows(windows: Sequence[KpiWindow]) -> list[dict[str, Any]]:
    return [json_row(w) for w in windows]

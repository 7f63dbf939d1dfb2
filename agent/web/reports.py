"""The shift reports the status page serves: `/reports` lists the shifts of the last 7 days
(days without a shift calendar), each a link to `/reports/<shift>`, which is the HTML that
`lineside report --shift <shift>` writes, replayed from the store (agent/kpi/document.py).

The report is a self-contained page with an inline style sheet and no script, so it gets its
own Content-Security-Policy: inline styles, nothing else.
"""

from __future__ import annotations

import re
from datetime import UTC
from urllib.parse import unquote

from agent.config.sections import Config
from agent.kpi.calendar import windows
from agent.kpi.period import local_date
from agent.kpi.view import local_time

PREFIX = "/reports"
DAYS = 7
NS = 1_000_000_000
# `current`, `today`, `yesterday`, a date, or a date and a shift name (as `--shift` takes them)
SHIFT = re.compile(r"current|today|yesterday|\d{4}-\d{2}-\d{2}(/[\w .-]{1,40})?")
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}li{margin:.3em 0}.note{color:#666}"
)


def is_report_path(path: str) -> bool:
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def shift_of(path: str) -> str | None:
    """The shift a `/reports/<shift>` path names, or None when it names none we take."""
    text = unquote(path.removeprefix(f"{PREFIX}/"))
    return text if SHIFT.fullmatch(text) else None


def listing(config: Config, now_ns: int) -> str:
    """The list page: newest first, the shift in progress marked."""
    # Imported here: `html` loads `html.entities` (0.3 MB), which a running agent needs only
    # when someone asks for this page.
    from html import escape

    calendar = config.calendar
    kind = "shift" if calendar is not None and calendar.shifts else "day"
    zone = calendar.zone if calendar is not None else UTC
    start = now_ns - DAYS * 24 * 3600 * NS
    found = [w for w in windows(calendar, start, now_ns + 1, (kind,)) if w.start_ns <= now_ns]
    items = []
    for w in sorted(found, key=lambda w: w.start_ns, reverse=True):
        span = f"{local_time(w.start_ns, zone)} – {local_time(w.end_ns, zone)}"
        running = " (in progress)" if w.end_ns > now_ns else ""
        items.append(
            f'<li><a href="{PREFIX}/{escape(w.name, quote=True)}">{escape(kind)} '
            f'{escape(w.name)}</a> <span class="note">{escape(span)}{running}</span></li>'
        )
    today = local_date(config, now_ns).isoformat()
    body = "\n".join(items) or f"<li>no {kind} in the last {DAYS} days</li>"
    title = f"{escape(config.agent.id)}: shift reports"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{STYLE}</style></head><body>"
        f'<h1>{title}</h1><p class="note">The last {DAYS} days; each report is the one '
        f"<code>lineside report</code> writes, printable on A4. Today is {today}.</p>"
        f'<p><a href="/">back to the status page</a></p><ul>\n{body}\n</ul></body></html>\n'
    )

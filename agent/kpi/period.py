"""Which period a KPI command computes: `--shift today|yesterday|DATE|DATE/NAME|current`,
`--window shift|day|hour` and `--line`/`--machine`, resolved against the plant calendar.

Pure: a config, the text the user gave and the time now in, windows (or a `SelectionError` with
the message for the user) out. `lineside oee`, `lineside report` and the status page's reports
(agent/kpi/document.py) select their periods here; agent/kpi/replay.py computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from agent.config.sections import Config
from agent.kpi.calendar import KINDS, Window, WindowKind, window_at, windows

NS = 1_000_000_000
HOUR_NS = 3600 * NS


class SelectionError(ValueError):
    """The period asked for does not exist (a date without a shift, a bad date, no such line)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """The windows a command asks for; `start_ns`..`end_ns` covers them all."""

    windows: tuple[Window, ...]

    @property
    def start_ns(self) -> int:
        return min(w.start_ns for w in self.windows)

    @property
    def end_ns(self) -> int:
        return max(w.end_ns for w in self.windows)


# ---------------------------------------------------------------------------------------------
# Which windows: `--shift today|yesterday|DATE|DATE/NAME|current` and `--window`


def local_date(config: Config, t_ns: int) -> date:
    """The plant's local date at an instant (UTC without a calendar)."""
    day = window_at(config.calendar, "day", t_ns)
    assert day is not None  # every instant has a day
    return date.fromisoformat(day.name)


def default_kind(config: Config) -> WindowKind:
    return "shift" if config.calendar is not None and config.calendar.shifts else "day"


def select(config: Config, shift: str, kind: WindowKind | None, now_ns: int) -> Selection:
    """The windows of `kind` (default: shift, or day without shifts) in the period `shift`.

    `shift` is `current` (the shift in progress now, or the day outside shifts), `today`,
    `yesterday`, a local date `2026-11-23` (every shift starting that day, or its day) or one
    shift `2026-11-23/A`. Hours are the hours of the shifts selected (of the day without shifts).
    Raises SelectionError with a message for the user.
    """
    calendar = config.calendar
    has_shifts = calendar is not None and bool(calendar.shifts)
    asked = kind
    kind = kind or default_kind(config)
    if kind == "shift" and not has_shifts:
        raise SelectionError("the config's [calendar] has no shifts: use --window day or hour")
    text = shift.strip()
    if text == "current":
        at = window_at(calendar, "shift", now_ns) if has_shifts else None
        if asked == "shift" and at is None:
            raise SelectionError("no shift is running now: give a date, e.g. --shift today")
        day_now = window_at(calendar, "day", now_ns)
        assert day_now is not None
        # Outside shifts the current period is the day, as in the live snapshot.
        period = day_now if kind == "day" or at is None else at
        return _within(config, "day" if kind == "shift" and at is None else kind, [period], now_ns)
    name: str | None = None
    if text in ("today", "yesterday"):
        day = local_date(config, now_ns) - timedelta(days=1 if text == "yesterday" else 0)
    else:
        day_text, _, name = text.partition("/")
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise SelectionError(
                f"--shift {shift!r}: expected today, yesterday, current, a date like "
                "2026-11-23 or one shift like 2026-11-23/A"
            ) from None
        name = name or None
        if name is not None and not has_shifts:
            raise SelectionError("the config's [calendar] has no shifts to pick one from")
    day_window = _day(config, day)
    if not has_shifts:
        return _within(config, kind, [day_window], now_ns)
    assert calendar is not None
    # Shifts belong to the date they start on; a night shift reaches into the next day.
    found = [
        w
        for w in windows(calendar, day_window.start_ns, day_window.end_ns, ("shift",))
        if w.name.startswith(f"{day.isoformat()}/")
    ]
    if name is not None:
        known = ", ".join(s.name for s in calendar.shifts)
        found = [w for w in found if w.name == f"{day.isoformat()}/{name}"]
        if not found:
            raise SelectionError(
                f"no shift {name!r} on {day.isoformat()} ({day:%A}); the shifts: {known}"
            )
    if not found and kind != "day":
        off = " (a day off)" if day in calendar.days_off else ""
        raise SelectionError(f"no shift on {day.isoformat()} ({day:%A}){off}")
    if kind == "day":
        return _within(config, kind, [day_window], now_ns)
    return _within(config, kind, found, now_ns)


def _day(config: Config, day: date) -> Window:
    zone = config.calendar.zone if config.calendar is not None else None
    noon = datetime.combine(day, datetime.min.time()).replace(hour=12, tzinfo=zone)
    at = window_at(config.calendar, "day", int(noon.timestamp()) * NS)
    assert at is not None
    return at


def _within(config: Config, kind: WindowKind, periods: list[Window], now_ns: int) -> Selection:
    """Windows of `kind` for the periods: the periods themselves, or the hours inside them."""
    if kind != "hour":
        return Selection(tuple(periods))
    hours = hours_of(config, Selection(tuple(periods)), now_ns)
    if not hours.windows:
        raise SelectionError("no hour of that period has begun yet")
    return hours


def hours_of(config: Config, selection: Selection, now_ns: int) -> Selection:
    """The hours inside the selected windows that have begun by `now_ns` (the report's trend)."""
    hours: dict[str, Window] = {}
    for p in selection.windows:
        for w in windows(config.calendar, p.start_ns, p.end_ns, ("hour",)):
            if w.start_ns < now_ns:  # hours that have not begun have nothing to show
                hours[w.name] = w
    return Selection(tuple(sorted(hours.values(), key=lambda w: w.start_ns)))


def previous(config: Config, selection: Selection, days: int = 7) -> Selection:
    """The windows of the same kind as the selection's (shifts, or days) that began in the
    `days` before it: the report's comparison with the shifts before."""
    kind = selection.windows[0].kind
    start = selection.start_ns - days * 24 * HOUR_NS
    found = [
        w
        for w in windows(config.calendar, start, selection.start_ns, (kind,))
        if start <= w.start_ns < selection.start_ns
    ]
    return Selection(tuple(found))


# ---------------------------------------------------------------------------------------------
# Which machines and lines: `--line`, `--machine`


def window_kind(text: str | None) -> WindowKind | None:
    """`--window` as a window kind (None: the default, see `select`)."""
    for kind in KINDS:
        if text == kind:
            return kind
    if text is not None:
        raise SelectionError(f"unknown window {text!r}; choose shift, day or hour")
    return None


def on_line(line: str | None, full: str) -> bool:
    """Whether the line `full` ("area/line") is the one asked for (all when None)."""
    return line is None or line in (full, full.split("/", 1)[1])


class Placed(Protocol):
    """What a scope reads of a KPI window: whose figures they are."""

    @property
    def scope(self) -> str: ...  # machine, line, area or site
    @property
    def machine(self) -> str | None: ...
    @property
    def line(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Scope:
    """The machines a KPI command is kept to: those with `[machines.kpi]` on the line and the
    machine asked for (every one when neither is given)."""

    machines: frozenset[str]
    line: str | None = None
    machine: str | None = None

    def keeps(self, window: Placed) -> bool:
        """A machine's window of the scope; a line's when no single machine is asked for; an
        area's and the site's only when neither a line nor a machine is."""
        if window.scope == "machine":
            return window.machine in self.machines
        if window.scope == "line":
            return (
                self.machine is None and window.line is not None and on_line(self.line, window.line)
            )
        return self.machine is None and self.line is None


def scope_of(config: Config, line: str | None = None, machine: str | None = None) -> Scope:
    """The scope of `--line` and `--machine`; SelectionError when the config has no machine with
    KPIs or the line or machine asked for is not one of them."""
    with_kpi = [m for m in config.machines if m.kpi is not None]
    if not with_kpi:
        raise SelectionError(
            f"{config.file}: no machine has a [machines.kpi] section (see docs/kpi.md)"
        )
    lines = sorted({f"{m.area}/{m.line}" for m in with_kpi})
    if machine is not None and machine not in {m.name for m in with_kpi}:
        known = ", ".join(m.name for m in with_kpi)
        raise SelectionError(f"unknown machine {machine!r}; the machines with KPIs: {known}")
    if not any(on_line(line, x) for x in lines):
        raise SelectionError(f"unknown line {line!r}; the lines: {', '.join(lines)}")
    names = frozenset(
        m.name
        for m in with_kpi
        if on_line(line, f"{m.area}/{m.line}") and machine in (None, m.name)
    )
    return Scope(names, line, machine)

"""The one-screen summary `lineside validate` prints for a valid config (rich tables or JSON)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from agent.config.protocols import SourceModel
from agent.config.sections import Config
from agent.duration import format_duration
from agent.size import format_size
from agent.store.bounds import record_bytes


def _intervals(source: SourceModel) -> list[str]:
    return [format_duration(s) for s in source.poll_intervals()]


def _tag_count(source: SourceModel) -> int:
    return sum(len(source.tags_of(m)) for m in source.machines())


def store_bytes_per_day(config: Config) -> float:
    """What the configured polls add to the store a day if every reading is stored (report
    "all"; report by exception stores less)."""
    per_second = sum(
        record_bytes(readings) / interval
        for source in config.sources
        for interval, readings in source.poll_groups()
        if readings
    )
    return per_second * 86400.0


def store_days(config: Config) -> float | None:
    """How many days of records the size bound holds at that rate (None: nothing is polled)."""
    per_day = store_bytes_per_day(config)
    return config.store.max_size / per_day if per_day else None


def _span(seconds: float) -> str:
    """`3.2 days`, `5.0 hours`, `1.4 minutes`, `12 seconds`: the span the size bound holds."""
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def _store_line(config: Config) -> str:
    store = config.store
    days = store_days(config)
    size, age = format_size(store.max_size), format_duration(store.max_age)
    if days is None:
        return f"Store: max_size {size}, max_age {age}; nothing is polled."
    span = _span(days * 86400.0)
    held = f"Store: max_size {size} holds about {span} of every reading polled"
    if days * 86400.0 < store.max_age:
        return f"{held}: less than max_age {age}, so the oldest go earlier (delivered ones first)."
    return f"{held}; records stay for max_age {age}."


def summary_dict(config: Config) -> dict[str, object]:
    """The summary as plain data (for `validate --json`)."""
    calendar = config.calendar
    return {
        "file": str(config.file),
        "agent": {"id": config.agent.id, "data_dir": str(config.agent.data_dir)},
        "site": config.plant.site,
        "machines": [
            {
                "name": m.name,
                "area": m.area,
                "line": m.line,
                "kind": m.kind,
                "sources": [s.name for s in config.sources_of(m.name)],
                "tags": [t.name for t in config.tags_of(m.name)],
            }
            for m in config.machines
        ],
        "sources": [
            {
                "name": s.name,
                "type": s.type,
                "endpoint": s.endpoint,
                "unit_ids": list(s.unit_ids()),
                "machines": list(s.machines()),
                "tags": _tag_count(s),
                "poll_intervals": _intervals(s),
            }
            for s in config.sources
        ],
        "sinks": [{"name": s.name, "type": s.type, "endpoint": s.endpoint} for s in config.sinks],
        "store": {
            "max_size": config.store.max_size,
            "max_age_s": config.store.max_age,
            "bytes_per_day": round(store_bytes_per_day(config)),
            "days_held": store_days(config),
        },
        "calendar": None
        if calendar is None
        else {
            "timezone": calendar.timezone,
            "days_off": [d.isoformat() for d in calendar.days_off],
            "shifts": [
                {
                    "name": sh.name,
                    "start": f"{sh.start:%H:%M}",
                    "end": f"{sh.end:%H:%M}",
                    "days": list(sh.days),
                    "breaks": [f"{b.start:%H:%M}-{b.end:%H:%M}" for b in sh.breaks],
                }
                for sh in calendar.shifts
            ],
        },
    }


def render_summary(config: Config, console: Console) -> None:
    """Agent, site, machines, sources, sinks and shifts of a valid config, on one screen."""
    console.print(
        f"[bold]{config.file}[/]: valid. Agent [bold]{config.agent.id}[/] at site "
        f"[bold]{config.plant.site}[/], data in {config.agent.data_dir}",
        highlight=False,
    )
    machines = Table(title="Machines", title_justify="left")
    for column in ("name", "area / line", "kind", "sources", "tags"):
        machines.add_column(column, justify="right" if column == "tags" else "left")
    for m in config.machines:
        machines.add_row(
            m.name,
            f"{m.area} / {m.line}",
            m.kind,
            ", ".join(s.name for s in config.sources_of(m.name)) or "-",
            str(len(config.tags_of(m.name))),
        )
    console.print(machines)
    sources = Table(title="Sources", title_justify="left")
    for column in ("name", "type", "endpoint", "units", "tags", "poll"):
        sources.add_column(column, justify="right" if column == "tags" else "left")
    for s in config.sources:
        sources.add_row(
            s.name,
            s.type,
            s.endpoint,
            ", ".join(map(str, s.unit_ids())) or "-",
            str(_tag_count(s)),
            ", ".join(_intervals(s)),
        )
    console.print(sources)
    if config.sinks:
        sinks = Table(title="Sinks", title_justify="left")
        for column in ("name", "type", "endpoint"):
            sinks.add_column(column)
        for k in config.sinks:
            sinks.add_row(k.name, k.type, k.endpoint)
        console.print(sinks)
    else:
        console.print("No sinks: readings stay in the local store.")
    console.print(_store_line(config), highlight=False)
    if config.calendar is not None and config.calendar.shifts:
        shifts = Table(title=f"Shifts ({config.calendar.timezone})", title_justify="left")
        for column in ("name", "time", "days", "breaks"):
            shifts.add_column(column)
        for sh in config.calendar.shifts:
            shifts.add_row(
                sh.name,
                f"{sh.start:%H:%M}-{sh.end:%H:%M}",
                " ".join(sh.days),
                ", ".join(f"{b.start:%H:%M}-{b.end:%H:%M}" for b in sh.breaks) or "-",
            )
        console.print(shifts)

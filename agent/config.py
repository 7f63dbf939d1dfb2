"""Loading one lineside config (TOML, plus tag lists in CSV files) into a frozen `Config`.

Every problem becomes one line `FILE: WHERE: MESSAGE`, WHERE being the key path
(`sources[0].units[0].tags[3].address`) or, for a row of a tag CSV file, the file and 1-based
line number plus the column (`press_tags.csv:7: address`). `load_config` raises `ConfigError`
with every problem it can find in one pass, and no other exception for bad input.

The top of this module holds the building blocks the connectors' config models share (names,
deadbands, paths relative to the config file, credentials); it imports no connector, so the
connectors' config modules can import it. Source and sink entries are dispatched on their `type`
through `agent.registry`, which is the discriminated union: one `type` → one config model.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent import registry
from agent.duration import Duration, PositiveDuration
from agent.errors import ConfigError, Problem
from agent.kpi.config import MachineKpi, StateName
from agent.kpi.config import problems as kpi_problems
from agent.logs import LogSection
from agent.model import DataType
from agent.size import Size, format_size
from agent.source import WritesToPlc
from agent.web.config import WebSection

# Every config model: unknown keys are errors (typos must not pass silently), values immutable.
STRICT = ConfigDict(extra="forbid", frozen=True)

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

# ---------------------------------------------------------------------------------------------
# Building blocks shared by the connectors' config models


def key_error(key: str, message: str) -> PydanticCustomError:
    """An error a model validator raises about one of its keys (reported at `...<model>.<key>`)."""
    return PydanticCustomError("at_key", "{message}", {"key": key, "message": message})


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_name(value: str) -> str:
    """Names end up in MQTT topics and tag paths: letters, digits, `_` and `-` only."""
    if not _NAME.fullmatch(value):
        raise ValueError(f"names may use only letters, digits, '_' and '-', got {value!r}")
    return value


Name = Annotated[str, AfterValidator(check_name)]


@dataclass(frozen=True, slots=True)
class Deadband:
    """Report a value only when it moved by `amount` (absolute) or `amount` % of the last one."""

    amount: float
    relative: bool = False

    def __str__(self) -> str:
        return f"{self.amount:g}%" if self.relative else f"{self.amount:g}"


def parse_deadband(value: object) -> Deadband:
    if isinstance(value, Deadband):
        return value
    relative = False
    if isinstance(value, str):
        text = value.strip()
        relative = text.endswith("%")
        try:
            amount = float(text.removesuffix("%"))
        except ValueError:
            raise ValueError(
                f'expected a number (absolute) or a percentage like "2%", got {value!r}'
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        amount = float(value)
    else:
        raise ValueError(f'expected a number (absolute) or a percentage like "2%", got {value!r}')
    if amount < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return Deadband(amount, relative)


DeadbandField = Annotated[Deadband, PlainValidator(parse_deadband), PlainSerializer(str)]


def _relative_to_config(value: Path, info: ValidationInfo) -> Path:
    # Paths in a config mean "next to the config file", whatever the working directory.
    base = (info.context or {}).get("base_dir")
    return value if base is None else Path(base) / value


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]

RETENTION_REMOVED = (
    "retention is no longer a key: records stay for max_age whether sent or not, and only "
    "max_size drops them earlier; remove it (set max_age to keep less)"
)
LITERAL_PASSWORD = (
    "a password in the config file is refused: "
    "use password_env (an environment variable) or password_file"
)


class Credentials(BaseModel):
    """User name and where its password comes from; never the password itself."""

    model_config = STRICT

    username: str | None = None
    password_env: str | None = None
    password_file: ConfigPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise key_error("password", LITERAL_PASSWORD)
        return data

    @model_validator(mode="after")
    def _one_password_source(self) -> Self:
        if self.password_env is not None and self.password_file is not None:
            raise key_error("password_file", "use either password_env or password_file, not both")
        if self.username is None and (self.password_env or self.password_file):
            raise key_error("username", "a password is set but no username")
        return self


@runtime_checkable
class TagModel(Protocol):
    """What the agent needs to know of any tag, whatever its protocol."""

    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def deadband(self) -> Deadband | None: ...
    @property
    def type(self) -> DataType | None:
        """The declared data type; None: the protocol tells at run time (float64 for the KPI
        checks)."""
        ...

    @property
    def scale(self) -> float: ...


@runtime_checkable
class SourceModel(Protocol):
    """What every source config model offers the agent (see connectors/*/config.py)."""

    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    def unit_ids(self) -> tuple[int, ...]: ...
    def machines(self) -> tuple[str, ...]: ...
    def tags_of(self, machine: str) -> tuple[TagModel, ...]: ...
    def poll_intervals(self) -> tuple[float, ...]: ...
    def poll_groups(self) -> tuple[tuple[float, int], ...]:
        """(interval in seconds, readings) per poll group: each poll stores one record."""
        ...

    def machine_refs(self) -> Iterator[tuple[Loc, str]]:
        """(key path of a `machine` key, relative to the source; the machine it names)."""
        ...

    def tag_places(self) -> Iterator[tuple[Loc, str, str]]:
        """(key path of a tag, relative to the source; its machine; its name)."""
        ...


@runtime_checkable
class InspectionModel(Protocol):
    """An `[[inspections]]` entry (vision/config.py), loaded only when a config has one."""

    @property
    def name(self) -> str: ...
    @property
    def machine(self) -> str: ...


@runtime_checkable
class SinkModel(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def endpoint(self) -> str: ...


# ---------------------------------------------------------------------------------------------
# The agent-level sections


class AgentSection(BaseModel):
    model_config = STRICT

    id: str
    data_dir: Annotated[ConfigPath, Field(validate_default=True)] = Path("data")
    # "changes": store a reading when it moved past its deadband or its quality changed
    # (report by exception); "all": store every sample of every poll.
    report: Literal["changes", "all"] = "changes"
    # Report an unchanged value at least this often, so a quiet tag is told from a dead one.
    heartbeat: Duration = 60.0

    @field_validator("id", mode="before")
    @classmethod
    def _id_charset(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(
                f"agent ids may use only letters, digits, '_', '.' and '-', got {value!r}"
            )
        return value


class StoreSection(BaseModel):
    """The SQLite log: durability, bounds and batching (see docs/configuration.md)."""

    model_config = STRICT

    # FULL survives power loss; NORMAL is faster and may lose the last commits on power loss.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    max_size: Size = 1024**3
    # The store is the plant's local history: every record stays this long, sent or not; only
    # max_size drops records earlier (delivered ones first).
    max_age: PositiveDuration = 7 * 86400.0
    flush_interval: PositiveDuration = 0.01  # group commit: at most one per interval
    flush_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 5000
    # readings held in memory while the store takes no writes (full); then new ones are dropped
    max_pending: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000

    @model_validator(mode="before")
    @classmethod
    def _no_retention(cls, data: Any) -> Any:
        if isinstance(data, dict) and "retention" in data:
            raise key_error("retention", RETENTION_REMOVED)
        return data


class ForwardSection(BaseModel):
    """How the store is forwarded to every sink (see docs/configuration.md)."""

    model_config = STRICT

    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 200  # records per send
    live_window: PositiveDuration = 10.0  # older records go out marked historical
    replay_rate: Annotated[float, Field(ge=0)] = 0.0  # historical records/s; 0: no cap


class PlantSection(BaseModel):
    model_config = STRICT

    site: Name


class Machine(BaseModel):
    """One machine in the ISA-95 hierarchy site / area / line / machine."""

    model_config = STRICT

    name: Name
    area: Name
    line: Name
    kind: str = ""
    description: str = ""
    kpi: MachineKpi | None = None  # which tags feed OEE (agent/kpi/config.py)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _minutes(t: time) -> int:
    return t.hour * 60 + t.minute


class Break(BaseModel):
    model_config = STRICT

    start: time
    end: time


class Shift(BaseModel):
    model_config = STRICT

    name: Name
    start: time
    end: time  # earlier than start: the shift crosses midnight
    days: tuple[Weekday, ...] = WEEKDAYS
    breaks: tuple[Break, ...] = ()

    @property
    def minutes(self) -> int:
        return (_minutes(self.end) - _minutes(self.start)) % 1440

    @model_validator(mode="after")
    def _breaks_inside(self) -> Self:
        if self.start == self.end:
            raise key_error("end", "a shift needs a length: start and end are equal")
        for i, brk in enumerate(self.breaks):
            # Measure from the shift start so shifts across midnight need no special case.
            begin = (_minutes(brk.start) - _minutes(self.start)) % 1440
            finish = (_minutes(brk.end) - _minutes(self.start)) % 1440
            if brk.start == brk.end or finish <= begin or finish > self.minutes:
                raise key_error(
                    f"breaks[{i}]",
                    f"break {brk.start:%H:%M}-{brk.end:%H:%M} is not within the shift "
                    f"{self.start:%H:%M}-{self.end:%H:%M}",
                )
        return self


class Calendar(BaseModel):
    model_config = STRICT

    timezone: str
    days_off: tuple[date, ...] = ()
    shifts: tuple[Shift, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f'unknown time zone {value!r}: use an IANA name like "Asia/Shanghai"'
            ) from None
        return value

    @model_validator(mode="after")
    def _unique_shifts(self) -> Self:
        seen: set[str] = set()
        for i, shift in enumerate(self.shifts):
            if shift.name in seen:
                raise key_error(f"shifts[{i}].name", f"duplicate shift name {shift.name!r}")
            seen.add(shift.name)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


ALARM_CONDITIONS = ("state", "above", "below", "equals", "stale")


class AlarmSection(BaseModel):
    """One `[[alarms]]` entry: a condition on one tag of one machine (agent/alarms.py)."""

    model_config = STRICT

    name: Name
    machine: Name
    tag: str | None = None  # for a state alarm: the machine's [machines.kpi] state tag
    state: StateName | None = None  # raised while the machine is in this state
    above: float | None = None  # raised above this value, cleared below it minus hysteresis
    below: float | None = None  # raised below this value, cleared above it plus hysteresis
    equals: float | None = None  # a state code or a bit (true = 1): raised while equal
    stale: PositiveDuration | None = None  # raised when the tag has no good reading this long
    hysteresis: Annotated[float, Field(ge=0)] = 0.0
    delay: Duration = 0.0  # the condition holds this long before the alarm is raised
    severity: Literal["info", "warning", "critical"] = "warning"
    message: str = ""

    @field_validator("equals", mode="before")
    @classmethod
    def _bit(cls, value: object) -> object:
        return float(value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_condition(self) -> Self:
        given = [k for k in ALARM_CONDITIONS if getattr(self, k) is not None]
        if not given:
            raise ValueError("set one condition: state, above, below, equals or stale")
        if len(given) > 1:
            raise ValueError(f"set one condition, not {' and '.join(given)} (make two alarms)")
        if self.hysteresis and given[0] not in ("above", "below"):
            raise ValueError("hysteresis applies to an above or below limit only")
        if given[0] == "state" and self.tag is not None:
            raise key_error(
                "tag", "a state alarm watches the [machines.kpi] state tag: leave out tag"
            )
        if given[0] != "state" and self.tag is None:
            raise key_error("tag", "missing key 'tag': the tag this alarm watches")
        return self

    @property
    def condition(self) -> str:
        return next(k for k in ALARM_CONDITIONS if getattr(self, k) is not None)


class Config(BaseModel):
    """A whole, valid config: what the runtime gets."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    file: Path  # the config file it was read from
    config_version: Literal[1]
    agent: AgentSection
    plant: PlantSection
    machines: tuple[Machine, ...] = ()
    sources: tuple[SourceModel, ...] = ()
    sinks: tuple[SinkModel, ...] = ()
    calendar: Calendar | None = None
    store: StoreSection = StoreSection()
    forward: ForwardSection = ForwardSection()
    inspections: tuple[InspectionModel, ...] = ()
    web: WebSection = WebSection()  # the status page, /metrics and the health endpoints
    log: LogSection = LogSection()  # levels, format, an optional rotated file
    alarms: tuple[AlarmSection, ...] = ()  # conditions raised and cleared as alarm events
    # Addresses lineside may write, as "machine:address" ("press1:co:5"); nothing else is written.
    write_allow: tuple[str, ...] = ()

    @property
    def machines_by_name(self) -> dict[str, Machine]:
        return {m.name: m for m in self.machines}

    @property
    def sources_by_name(self) -> dict[str, SourceModel]:
        return {s.name: s for s in self.sources}

    @property
    def sinks_by_name(self) -> dict[str, SinkModel]:
        return {s.name: s for s in self.sinks}

    def sources_of(self, machine: str) -> tuple[SourceModel, ...]:
        return tuple(s for s in self.sources if machine in s.machines())

    def tags_of(self, machine: str) -> tuple[TagModel, ...]:
        """Every tag of one machine, across all its sources, in config order."""
        return tuple(t for s in self.sources for t in s.tags_of(machine))

    def tag_path(self, machine: str, tag: str) -> str:
        """The ISA-95 identity `site/area/line/machine/tag`."""
        m = self.machines_by_name[machine]
        return f"{self.plant.site}/{m.area}/{m.line}/{m.name}/{tag}"


# ---------------------------------------------------------------------------------------------
# Loading

_TOP_KEYS = (
    "config_version",
    "agent",
    "plant",
    "machines",
    "sources",
    "sinks",
    "calendar",
    "store",
    "forward",
    "inspections",
    "write_allow",
    "web",
    "log",
    "alarms",
)


@dataclass(frozen=True, slots=True)
class _TagFile:
    """Where the rows of one `tags_file` came from, to report problems as `file:line`."""

    written: str  # as written in the config
    lines: tuple[int, ...]  # 1-based line number of each row (the header is line 1)


class _Loader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = str(path)
        self.problems: list[Problem] = []
        self.tag_files: dict[Loc, _TagFile] = {}
        self.context = {"base_dir": path.resolve().parent}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(Problem(self.file, where, message))

    # -- reading ------------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        try:
            data = read_regular_file(self.path, TOML_LIMIT)
        except FileNotFoundError:
            raise ConfigError([Problem(self.file, "", "file not found")]) from None
        except UnreadableFile as exc:
            raise ConfigError([Problem(self.file, "", str(exc))]) from None
        # A BOM is how some Windows editors mark UTF-8; TOML does not allow one, so drop it.
        text = _decode(data, self.file, "").removeprefix("\ufeff")
        if not text.strip():
            raise ConfigError(
                [
                    Problem(
                        self.file,
                        "",
                        "empty file; `lineside init --profile press` writes a starter",
                    )
                ]
            )
        doc: dict[str, Any] | None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Problem(self.file, "", f"not valid TOML: {exc}")]) from None
        except RecursionError:  # tomllib parses nested arrays and inline tables recursively
            doc = None
        if doc is None or _too_deep(doc):
            raise ConfigError([Problem(self.file, "", NESTED_TOO_DEEPLY)])
        return doc

    def read_tag_files(self, node: object, loc: Loc) -> None:
        """Replace every `tags_file` by its rows (as `tags`), wherever it appears."""
        if isinstance(node, list):
            for i, item in enumerate(node):
                self.read_tag_files(item, (*loc, i))
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            self.read_tag_files(value, (*loc, key))
        written = node.get("tags_file")
        if not isinstance(written, str):
            return  # absent, or the wrong type: the model reports it
        where = _dotted((*loc, "tags_file"))
        if "tags" in node:
            self.problem(where, "use either tags or tags_file, not both")
            return
        csv_path = self.context["base_dir"] / written
        rows = self.read_csv(csv_path, written, where)
        if rows is None:
            node["tags"] = []
            node["tags_file"] = str(csv_path)
            self.tag_files[loc] = _TagFile(written, ())
            return
        node["tags"] = [row for _, row in rows]
        node["tags_file"] = str(csv_path)
        self.tag_files[loc] = _TagFile(written, tuple(line for line, _ in rows))

    def read_csv(
        self, csv_path: Path, written: str, where: str
    ) -> list[tuple[int, dict[str, str]]] | None:
        try:
            data = read_regular_file(csv_path, CSV_LIMIT)
        except FileNotFoundError:
            self.problem(where, f"file not found: {written} (looked for {csv_path})")
            return None
        except UnreadableFile as exc:
            self.problem(where, f"{written}: {exc}")
            return None
        try:
            text = _decode(data, self.file, written)
            text = text.removeprefix("\ufeff")  # spreadsheets like to start with a BOM
            table = _csv_rows(text, self.file, written)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return None
        header = table[0][1] if table else None
        if header is None or not any(h.strip() for h in header):
            self.problem(f"{written}:1", "no header row (the first line names the columns)")
            return None
        columns = [h.strip() for h in header]
        bad_header = False
        for i, column in enumerate(columns):
            if not column:
                self.problem(f"{written}:1", f"column {i + 1} has no name")
                bad_header = True
            elif columns.index(column) != i:
                self.problem(f"{written}:1", f"column {column!r} appears twice")
                bad_header = True
        if bad_header:
            return None
        rows: list[tuple[int, dict[str, str]]] = []
        for start, cells in table[1:]:
            if not any(c.strip() for c in cells):
                continue  # blank lines are layout, not rows
            if len(cells) > len(columns):
                self.problem(
                    f"{written}:{start}",
                    f"{len(cells)} cells but the header names {len(columns)} columns",
                )
                continue
            # An empty cell means "not given", so the model's default applies.
            row = {c: v.strip() for c, v in zip(columns, cells, strict=False) if v.strip()}
            rows.append((start, row))
        if not rows:
            self.problem(f"{written}:1", "no tag rows after the header")
        return rows

    # -- validating ---------------------------------------------------------------------------

    def where(self, loc: Loc) -> str:
        """A key path, or `file.csv:LINE[: column]` inside the rows of a tags_file."""
        for cut in range(len(loc) - 1, -1, -1):
            origin = self.tag_files.get(loc[:cut])
            if origin is None or loc[cut] != "tags" or len(loc) <= cut + 1:
                continue
            index = loc[cut + 1]
            if isinstance(index, int) and index < len(origin.lines):
                at = f"{origin.written}:{origin.lines[index]}"
                rest = loc[cut + 2 :]
                return f"{at}: {_dotted(rest)}" if rest else at
        return _dotted(loc)

    def validate(self, model: type[M], data: object, loc: Loc) -> M | None:
        try:
            return model.model_validate(data, context=self.context)
        except ValidationError as exc:
            seen: set[tuple[str, str]] = set()
            for error in exc.errors(include_url=False):
                where, message = self.translate(error, loc)
                if (where, message) not in seen:  # one unknown CSV column → one line
                    seen.add((where, message))
                    self.problem(where, message)
            return None

    def translate(self, error: Mapping[str, Any], prefix: Loc) -> tuple[str, str]:
        loc: Loc = (*prefix, *error["loc"])
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind == "at_key":
            key_loc = _parse_key(str(ctx["key"]))
            return self.where((*loc, *key_loc)), str(ctx["message"])
        if kind in ("extra_forbidden", "missing"):
            key, parent = loc[-1], loc[:-1]
            origin_where = self.where(loc)
            if kind == "extra_forbidden" and origin_where != _dotted(loc):
                # An unknown key in a CSV row is an unknown column: say so once, at the header.
                csv_name = origin_where.split(":", 1)[0]
                return f"{csv_name}:1", f"unknown column {key!r}"
            if kind == "missing" and origin_where != _dotted(loc):
                return self.where(parent), f"no value in column {key!r}"
            word = "unknown" if kind == "extra_forbidden" else "missing"
            return self.where(parent), f"{word} key {key!r}"
        return self.where(loc), _plain_message(error)

    def validate_list(self, doc: dict[str, Any], key: str, model: type[M]) -> list[tuple[int, M]]:
        items = doc.get(key, [])
        if not isinstance(items, list):
            self.problem(key, f"expected a list of tables ([[{key}]]), got {_show(items)}")
            return []
        out = []
        for i, item in enumerate(items):
            valid = self.validate(model, item, (key, i))
            if valid is not None:
                out.append((i, valid))
        return out

    def validate_connectors(
        self, doc: dict[str, Any], key: str, role: str, known: Mapping[str, registry.Connector]
    ) -> list[tuple[int, BaseModel]]:
        items = doc.get(key, [])
        if not isinstance(items, list):
            self.problem(key, f"expected a list of tables ([[{key}]]), got {_show(items)}")
            return []
        names = ", ".join(sorted(known))
        out: list[tuple[int, BaseModel]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                self.problem(f"{key}[{i}]", f"expected a table, got {_show(item)}")
                continue
            kind = item.get("type")
            if kind is None:
                self.problem(f"{key}[{i}]", f"missing key 'type' (known: {names})")
                continue
            if not isinstance(kind, str) or kind not in known:
                self.problem(
                    f"{key}[{i}].type", f"unknown {role} type {_show(kind)} (known: {names})"
                )
                continue
            valid = self.validate(registry.config_model(kind), item, (key, i))
            if valid is not None:
                out.append((i, valid))
        return out

    def section(self, doc: dict[str, Any], key: str, model: type[M]) -> M | None:
        if key not in doc:
            self.problem("", f"missing section [{key}]")
            return None
        return self.validate(model, doc[key], (key,))

    def load(self) -> Config:
        doc = self.read()
        self.read_tag_files(doc, ())
        for key in doc:
            if key not in _TOP_KEYS:
                self.problem("", f"unknown key {key!r}")
        if "config_version" not in doc:
            self.problem("", "missing key 'config_version': add config_version = 1 at the top")
        elif doc["config_version"] != 1 or isinstance(doc["config_version"], bool):
            self.problem(
                "config_version",
                f"must be 1 (the format this lineside reads), got {_show(doc['config_version'])}",
            )
        agent = self.section(doc, "agent", AgentSection)
        plant = self.section(doc, "plant", PlantSection)
        machines = self.validate_list(doc, "machines", Machine)
        sources = self.validate_connectors(doc, "sources", "source", registry.SOURCES)
        sinks = self.validate_connectors(doc, "sinks", "sink", registry.SINKS)
        calendar = None
        if "calendar" in doc:
            calendar = self.validate(Calendar, doc["calendar"], ("calendar",))
        store = StoreSection()
        if "store" in doc:
            store = self.validate(StoreSection, doc["store"], ("store",)) or store
        forward = ForwardSection()
        if "forward" in doc:
            forward = self.validate(ForwardSection, doc["forward"], ("forward",)) or forward
        web = WebSection()
        if "web" in doc:
            web = self.validate(WebSection, doc["web"], ("web",)) or web
        logs = LogSection()
        if "log" in doc:
            logs = self.validate(LogSection, doc["log"], ("log",)) or logs
        self.cross_check(doc, machines, sources, sinks)
        self.cross_check_kpi(machines, sources, agent.heartbeat if agent is not None else 0.0)
        inspections, write_allow = self.inspections(doc, sources)
        self.cross_check_kpi_inspection(doc, machines)
        alarms = self.alarms(doc, machines, sources)
        if self.problems or agent is None or plant is None:
            raise ConfigError(self.problems)
        return Config(
            file=self.path,
            config_version=1,
            agent=agent,
            plant=plant,
            machines=tuple(m for _, m in machines),
            sources=tuple(s for _, s in sources),
            sinks=tuple(s for _, s in sinks),
            calendar=calendar,
            store=store,
            forward=forward,
            inspections=inspections,
            write_allow=write_allow,
            web=web,
            log=logs,
            alarms=alarms,
        )

    def alarms(
        self,
        doc: dict[str, Any],
        machines: list[tuple[int, Machine]],
        sources: list[tuple[int, BaseModel]],
    ) -> tuple[AlarmSection, ...]:
        """The `[[alarms]]` entries: unique names, each on a tag its machine has."""
        valid = self.validate_list(doc, "alarms", AlarmSection)
        kpis = {m.name: m.kpi for _, m in machines if m.kpi is not None}
        tags = {
            (machine, tag)
            for _, source in sources
            if isinstance(source, SourceModel)
            for _, machine, tag in source.tag_places()
        }
        first: dict[str, int] = {}
        for i, alarm in valid:
            if alarm.name in first:
                self.problem(
                    f"alarms[{i}].name",
                    f"duplicate alarm name {alarm.name!r} (also alarms[{first[alarm.name]}])",
                )
            first.setdefault(alarm.name, i)
            if alarm.state is not None:
                kpi = kpis.get(alarm.machine)
                if kpi is None:
                    self.problem(
                        f"alarms[{i}].state",
                        f"machine {alarm.machine!r} has no [machines.kpi] state tag to watch",
                    )
                elif kpi.packml and alarm.state in ("setup", "planned_stop"):
                    self.problem(
                        f"alarms[{i}].state",
                        f"a PackML machine is in {alarm.state} by its unit mode: watch the "
                        f"{kpi.unit_mode or 'unit mode'} tag with equals instead",
                    )
                continue
            if (alarm.machine, alarm.tag) not in tags:
                known = sorted(t for m, t in tags if m == alarm.machine)
                hint = f" (its tags: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})"
                self.problem(
                    f"alarms[{i}].tag",
                    f"machine {alarm.machine!r} has no tag {alarm.tag!r}" + (hint if known else ""),
                )
        return tuple(a for _, a in valid)

    def inspections(
        self, doc: dict[str, Any], sources: list[tuple[int, BaseModel]]
    ) -> tuple[tuple[InspectionModel, ...], tuple[str, ...]]:
        """The `[[inspections]]` and `write_allow` keys, checked against machines and tags."""
        allow: list[str] = []
        raw_allow = doc.get("write_allow", [])
        if not isinstance(raw_allow, list):
            expected = 'expected a list like ["press1:co:5"]'
            self.problem("write_allow", f"{expected}, got {_show(raw_allow)}")
            raw_allow = []
        # Imported here: vision/config.py builds on this module's building blocks.
        from vision.config import InspectionConfig, allowed_write

        for i, entry in enumerate(raw_allow):
            try:
                allow.append(allowed_write(entry))
            except ValueError as exc:
                self.problem(f"write_allow[{i}]", str(exc))
        if "inspections" not in doc:
            return (), tuple(allow)
        items = doc["inspections"]
        if not isinstance(items, list):
            expected = "expected a list of tables ([[inspections]])"
            self.problem("inspections", f"{expected}, got {_show(items)}")
            items = []
        valid: list[tuple[int, InspectionConfig]] = []
        for i, item in enumerate(items):
            try:
                valid.append((i, InspectionConfig.model_validate(item, context=self.context)))
            except ValidationError as exc:
                for error in exc.errors(include_url=False):
                    # pydantic puts the chosen `type` of a tagged union into the key path
                    # (trigger.fps.fps); the file has no such key, so leave it out.
                    loc = error["loc"]
                    if len(loc) > 2 and loc[0] in ("source", "trigger"):
                        loc = (loc[0], *loc[2:])
                    self.problem(*self.translate({**error, "loc": loc}, ("inspections", i)))
        tags = {
            (machine, tag)
            for _, source in sources
            if isinstance(source, SourceModel)
            for _, machine, tag in source.tag_places()
        }
        raw = doc.get("machines")
        declared = {
            m.get("name") for m in (raw if isinstance(raw, list) else []) if isinstance(m, dict)
        }
        names: dict[str, int] = {}
        for i, inspection in valid:
            if inspection.name in names:
                first = names[inspection.name]
                self.problem(
                    f"inspections[{i}].name",
                    f"duplicate inspection name {inspection.name!r} (also inspections[{first}])",
                )
            names.setdefault(inspection.name, i)
            if inspection.machine not in declared:
                self.problem(f"inspections[{i}].machine", f"unknown machine {inspection.machine!r}")
                continue
            trigger = inspection.trigger
            if trigger.type == "tag" and (inspection.machine, trigger.tag) not in tags:
                self.problem(
                    f"inspections[{i}].trigger.tag",
                    f"machine {inspection.machine!r} has no tag {trigger.tag!r}",
                )
            if inspection.write_back is not None:
                served = any(
                    isinstance(source, WritesToPlc)
                    and source.write_target(inspection.machine) is not None
                    for _, source in sources
                )
                if not served:
                    self.problem(
                        f"inspections[{i}].write_back",
                        f"machine {inspection.machine!r} has no modbus_tcp source to write to",
                    )
                target = f"{inspection.machine}:{inspection.write_back.address}"
                if target not in allow:
                    self.problem(
                        f"inspections[{i}].write_back.address",
                        f"{target} is not on the write_allow list (add it there to allow writes)",
                    )
        return tuple(v for _, v in valid), tuple(allow)

    def cross_check(
        self,
        doc: dict[str, Any],
        machines: list[tuple[int, Machine]],
        sources: list[tuple[int, BaseModel]],
        sinks: list[tuple[int, BaseModel]],
    ) -> None:
        for key, valid in (("machines", machines), ("sources", sources), ("sinks", sinks)):
            first: dict[str, int] = {}
            for i, item in valid:
                name = str(getattr(item, "name", ""))
                if name in first:
                    self.problem(
                        f"{key}[{i}].name",
                        f"duplicate {key[:-1]} name {name!r} (also {key}[{first[name]}])",
                    )
                else:
                    first[name] = i
        # Declared names come from the raw file, so a machine with another problem is not
        # also reported as "unknown" wherever it is used.
        raw = doc.get("machines")
        declared = [
            m["name"]
            for m in (raw if isinstance(raw, list) else [])
            if isinstance(m, dict) and isinstance(m.get("name"), str)
        ]
        tag_seen: dict[tuple[str, str], str] = {}
        for i, source in sources:
            assert isinstance(source, SourceModel)
            for loc, machine in source.machine_refs():
                if machine not in declared:
                    known = ", ".join(dict.fromkeys(declared)) or "none"
                    self.problem(
                        self.where(("sources", i, *loc)),
                        f"unknown machine {machine!r} (declared in [[machines]]: {known})",
                    )
            for loc, machine, tag in source.tag_places():
                where = self.where(("sources", i, *loc))
                if (machine, tag) in tag_seen:
                    self.problem(
                        where,
                        f"duplicate tag name {tag!r} for machine {machine!r} "
                        f"(also at {tag_seen[machine, tag]})",
                    )
                else:
                    tag_seen[machine, tag] = where

    def cross_check_kpi(
        self,
        machines: list[tuple[int, Machine]],
        sources: list[tuple[int, BaseModel]],
        heartbeat_s: float,
    ) -> None:
        """The tags a `[machines.kpi]` section names exist on its machine and are numeric."""
        for i, machine in machines:
            if machine.kpi is None:
                continue
            tags = {
                t.name: t
                for _, source in sources
                if isinstance(source, SourceModel)
                for t in source.tags_of(machine.name)
            }
            for key, message in kpi_problems(machine.kpi, tags, heartbeat_s):
                self.problem(f"machines[{i}].kpi.{key}", message)

    def cross_check_kpi_inspection(
        self, doc: dict[str, Any], machines: list[tuple[int, Machine]]
    ) -> None:
        """`[machines.kpi] inspection` names an `[[inspections]]` entry of the same machine."""
        # Entries from the raw file, so one with another problem is not also called missing.
        raw = doc.get("inspections")
        owner = {
            e["name"]: e.get("machine")
            for e in (raw if isinstance(raw, list) else [])
            if isinstance(e, dict) and isinstance(e.get("name"), str)
        }
        for i, machine in machines:
            name = machine.kpi.inspection if machine.kpi is not None else None
            if name is None:
                continue
            where = f"machines[{i}].kpi.inspection"
            if name not in owner:
                known = ", ".join(owner) or "none"
                self.problem(where, f"no [[inspections]] entry {name!r} (the entries: {known})")
            elif owner[name] != machine.name:
                self.problem(
                    where,
                    f"inspection {name!r} inspects machine {owner[name]!r}, not {machine.name!r}",
                )


def load_config(path: Path) -> Config:
    """Read and check a config file; raises `ConfigError` listing every problem found."""
    return _Loader(Path(path)).load()


# ---------------------------------------------------------------------------------------------
# Plain messages


# The largest config and tag files lineside reads. Real ones are a few kilobytes; the caps
# stop a wrong path (a log, a disk image, /dev/zero) from filling memory.
TOML_LIMIT = 16 * 1024**2
CSV_LIMIT = 64 * 1024**2

# Tables and arrays inside each other: a real config nests 7 deep (sources[0].units[0].tags[0]).
# The check keeps the recursive steps after parsing (tags_file, validation) clear of the stack.
MAX_DEPTH = 64
NESTED_TOO_DEEPLY = f"nested too deeply: more than {MAX_DEPTH} levels of tables and arrays"

_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFile(Exception):
    """A config or tag file lineside refuses to read; the message says why, without its name."""


def _check_regular(info: os.stat_result, limit: int) -> None:
    for test, kind in _NOT_REGULAR:
        if test(info.st_mode):
            raise UnreadableFile(f"is {kind}, not a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile("not a regular file")
    if info.st_size > limit:
        raise UnreadableFile(_too_large(info.st_size, limit))


def _too_large(size: int, limit: int) -> str:
    return f"too large: {size:,} bytes (the limit is {format_size(limit)})"


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them.

    The type is checked before opening, so a device or a FIFO is never opened (/dev/zero would
    fill memory, /dev/urandom and a FIFO never end, opening some devices has side effects), and
    again on the open file in case the path changed in between; O_NONBLOCK keeps even that
    open from waiting for a FIFO's writer. FileNotFoundError passes through for the caller to
    word; every other refusal is an UnreadableFile.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        _check_regular(os.stat(path), limit)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as f:
            _check_regular(os.fstat(f.fileno()), limit)
            data = f.read(limit + 1)  # +1: a file that grew past the limit since the check
    except (FileNotFoundError, UnreadableFile):
        raise
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror}") from None
    except ValueError:  # e.g. a NUL byte in the name
        raise UnreadableFile("not a usable file name") from None
    if len(data) > limit:
        raise UnreadableFile(_too_large(len(data), limit))
    return data


def _too_deep(doc: object) -> bool:
    """Whether tables and arrays nest more than MAX_DEPTH levels (iterative, not recursive)."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: list[object] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level > MAX_DEPTH:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _csv_rows(text: str, file: str, written: str) -> list[tuple[int, list[str]]]:
    """Every row of a CSV text (blank ones too) with the 1-based line it starts on.

    The csv module ends a quoted cell that never closes at the end of the file, taking every
    later line into it without a word, and it raises for a cell over its field limit or a NUL:
    each becomes one problem at the line of the row.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        if _open_quote(_from_line(text, start)):
            message = UNTERMINATED_QUOTE
        elif "field larger than field limit" in str(exc):
            message = f"cell longer than {csv.field_size_limit():,} characters"
        else:
            message = f"not readable as CSV: {exc}"
        raise ConfigError([Problem(file, f"{written}:{start}", message)]) from None
    if rows and _open_quote(_from_line(text, rows[-1][0])):
        raise ConfigError([Problem(file, f"{written}:{rows[-1][0]}", UNTERMINATED_QUOTE)])
    return rows


UNTERMINATED_QUOTE = "unterminated quote: a quoted cell in this row never closes"

_QUOTED_CELL = re.compile(r'"[^"]*+(?:""[^"]*+)*+"')  # "" inside quotes is a quote character
_CELL_END = re.compile(r"[,\r\n]")


def _from_line(text: str, line: int) -> str:
    """`text` from the start of its 1-based `line`, lines ending as the csv reader sees them."""
    lines = io.StringIO(text, newline="")
    for _ in range(line - 1):
        lines.readline()
    return lines.read()


def _open_quote(text: str) -> bool:
    """Whether CSV `text` (from the start of a row) ends inside a quoted cell.

    Follows the csv module's rules as lineside reads (excel dialect, not strict): a quote opens
    a quoted cell only as a cell's first character; after its closing quote, the rest of the
    cell up to the next comma or line end is plain text.
    """
    pos = 0
    while pos < len(text):
        if text[pos] == '"':
            quoted = _QUOTED_CELL.match(text, pos)
            if quoted is None:
                return True
            pos = quoted.end()
        end = _CELL_END.search(text, pos)
        if end is None:
            return False
        pos = end.end()
    return False


def _decode(data: bytes, file: str, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise ConfigError(
            [Problem(file, where, f"not UTF-8 text: byte 0x{bad} on line {line}; save as UTF-8")]
        ) from None


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _parse_key(key: str) -> Loc:
    """`"shifts[1].name"` → ("shifts", 1, "name"): the inverse of `_dotted`."""
    loc: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        loc.append(int(index) if index else name)
    return tuple(loc)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "tuple": "a list",
    "list": "a list",
    "dict": "a table",
    "model": "a table",
    "model_attributes": "a table",
    "dataclass": "a table",
    "path": "a file path",
    "time": 'a time like "06:00"',
    "date": "a date like 2026-10-01",
}


def _plain_message(error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    ctx = error.get("ctx") or {}
    got = _show(error.get("input"))
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {got}"
    limits = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in limits:
        words, key = limits[kind]
        return f"must be {words} {ctx[key]}, got {got}"
    if kind == "too_short":
        return f"needs at least {ctx['min_length']} entries"
    if kind == "string_pattern_mismatch":
        return f"does not match the pattern {ctx['pattern']}, got {got}"
    for prefix, words in _TYPE_WORDS.items():
        if kind.startswith(prefix + "_") and kind.endswith(
            ("_type", "_parsing", "_from_float", "_fractional_part", "_from_datetime_parsing")
        ):
            return f"expected {words}, got {got}"
    return str(error["msg"]).removeprefix("Value error, ")

"""The agent-level sections of a config and `Config`, the whole valid config the runtime gets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.config.calendar import Calendar
from agent.config.fields import STRICT, ConfigPath, Name, key_error
from agent.config.protocols import InspectionModel, SinkModel, SourceModel, TagModel
from agent.duration import Duration, PositiveDuration
from agent.kpi.config import MachineKpi, StateName
from agent.logs import LogSection
from agent.size import Size
from agent.web.config import WebSection

RETENTION_REMOVED = (
    "retention is no longer a key: records stay for max_age whether sent or not, and only "
    "max_size drops them earlier; remove it (set max_age to keep less)"
)


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

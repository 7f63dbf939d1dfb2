"""Loading one lineside config (TOML, plus tag lists in CSV files) into a frozen `Config`.

Every problem becomes one line `FILE: WHERE: MESSAGE` (agent/config/messages.py);
`load_config` raises `ConfigError` with every problem it can find in one pass, and no other
exception for bad input.

The package, by what each part owns:

- `fields`: the building blocks every config model shares, the connectors' included (names,
  deadbands, paths relative to the config file, credentials); it imports no connector.
- `protocols`: what every source, sink, tag and inspection entry offers the agent.
- `calendar`: the plant calendar (shifts, breaks, days off).
- `sections`: the agent-level sections and `Config` itself.
- `files`: reading config and tag files safely (regular files, size caps, UTF-8, CSV rows).
- `messages`: pydantic's errors in plain words.
- `checks`: the checks across entries (unique names, machines and tags that exist).
- `loader`: `load_config`, which puts them together.

The names below are those the rest of lineside imports from `agent.config`.
"""

from agent.config.calendar import WEEKDAYS, Break, Calendar, Shift, Weekday
from agent.config.fields import (
    LITERAL_PASSWORD,
    STRICT,
    ConfigPath,
    Credentials,
    Deadband,
    DeadbandField,
    Loc,
    Name,
    check_name,
    key_error,
    parse_deadband,
)
from agent.config.files import CSV_LIMIT, TOML_LIMIT, UnreadableFile, read_regular_file
from agent.config.loader import load_config
from agent.config.protocols import InspectionModel, SinkModel, SourceModel, TagModel
from agent.config.sections import (
    ALARM_CONDITIONS,
    RETENTION_REMOVED,
    AgentSection,
    AlarmSection,
    Config,
    ForwardSection,
    Machine,
    PlantSection,
    StoreSection,
)

__all__ = [
    "ALARM_CONDITIONS",
    "CSV_LIMIT",
    "LITERAL_PASSWORD",
    "RETENTION_REMOVED",
    "STRICT",
    "TOML_LIMIT",
    "WEEKDAYS",
    "AgentSection",
    "AlarmSection",
    "Break",
    "Calendar",
    "Config",
    "ConfigPath",
    "Credentials",
    "Deadband",
    "DeadbandField",
    "ForwardSection",
    "InspectionModel",
    "Loc",
    "Machine",
    "Name",
    "PlantSection",
    "Shift",
    "SinkModel",
    "SourceModel",
    "StoreSection",
    "TagModel",
    "UnreadableFile",
    "Weekday",
    "check_name",
    "key_error",
    "load_config",
    "parse_deadband",
    "read_regular_file",
]

"""Loading one config file: the TOML, the tag CSV files it names, every section validated, then
the checks across entries; every problem found in one pass, as one `FILE: WHERE: MESSAGE` line.

WHERE is the key path (`sources[0].units[0].tags[3].address`) or, for a row of a tag CSV file,
the file and 1-based line number plus the column (`press_tags.csv:7: address`). `load_config`
raises `ConfigError` with every problem, and no other exception for bad input.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent import registry
from agent.config import checks
from agent.config.calendar import Calendar
from agent.config.fields import Loc
from agent.config.files import (
    CSV_LIMIT,
    NESTED_TOO_DEEPLY,
    TOML_LIMIT,
    UnreadableFile,
    csv_rows,
    decode,
    read_regular_file,
    too_deep,
)
from agent.config.messages import dotted, show, translate
from agent.config.sections import (
    AgentSection,
    AlarmSection,
    Config,
    ForwardSection,
    Machine,
    PlantSection,
    StoreSection,
)
from agent.errors import ConfigError, Problem
from agent.logs import LogSection
from agent.web.config import WebSection

if TYPE_CHECKING:
    from vision.config import InspectionConfig

M = TypeVar("M", bound=BaseModel)

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
        self.context: dict[str, Any] = {"base_dir": path.resolve().parent}

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
        text = decode(data, self.file, "").removeprefix("\ufeff")
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
        if doc is None or too_deep(doc):
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
        where = dotted((*loc, "tags_file"))
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
            text = decode(data, self.file, written)
            text = text.removeprefix("\ufeff")  # spreadsheets like to start with a BOM
            table = csv_rows(text, self.file, written)
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
                return f"{at}: {dotted(rest)}" if rest else at
        return dotted(loc)

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
        return translate(error, prefix, self.where)

    def validate_list(self, doc: dict[str, Any], key: str, model: type[M]) -> list[tuple[int, M]]:
        items = doc.get(key, [])
        if not isinstance(items, list):
            self.problem(key, f"expected a list of tables ([[{key}]]), got {show(items)}")
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
            self.problem(key, f"expected a list of tables ([[{key}]]), got {show(items)}")
            return []
        names = ", ".join(sorted(known))
        out: list[tuple[int, BaseModel]] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                self.problem(f"{key}[{i}]", f"expected a table, got {show(item)}")
                continue
            kind = item.get("type")
            if kind is None:
                self.problem(f"{key}[{i}]", f"missing key 'type' (known: {names})")
                continue
            if not isinstance(kind, str) or kind not in known:
                self.problem(
                    f"{key}[{i}].type", f"unknown {role} type {show(kind)} (known: {names})"
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
                f"must be 1 (the format this lineside reads), got {show(doc['config_version'])}",
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
        self.found(checks.names_and_machines(doc, machines, sources, sinks, self.where))
        heartbeat = agent.heartbeat if agent is not None else 0.0
        self.found(checks.kpi_tags(machines, sources, heartbeat))
        inspections, write_allow = self.inspections(doc, sources)
        self.found(checks.kpi_inspections(doc, machines))
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
        """The `[[alarms]]` entries, each valid and checked against machines and tags."""
        valid = self.validate_list(doc, "alarms", AlarmSection)
        self.found(checks.alarms(valid, machines, sources))
        return tuple(a for _, a in valid)

    def inspections(
        self, doc: dict[str, Any], sources: list[tuple[int, BaseModel]]
    ) -> tuple[tuple[InspectionConfig, ...], tuple[str, ...]]:
        """The `[[inspections]]` and `write_allow` keys, checked against machines and tags."""
        allow: list[str] = []
        raw_allow = doc.get("write_allow", [])
        if not isinstance(raw_allow, list):
            expected = 'expected a list like ["press1:co:5"]'
            self.problem("write_allow", f"{expected}, got {show(raw_allow)}")
            raw_allow = []
        if not raw_allow and "inspections" not in doc:
            return (), ()
        # Imported here, and only for a config with either key: vision/config.py builds on this
        # package's building blocks, and its models cost an agent without them ~0.6 MB of RSS.
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
            self.problem("inspections", f"{expected}, got {show(items)}")
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
        self.found(checks.inspections(doc, valid, sources, allow))
        return tuple(v for _, v in valid), tuple(allow)

    def found(self, problems: checks.Found) -> None:
        for where, message in problems:
            self.problem(where, message)


def load_config(path: Path) -> Config:
    """Read and check a config file; raises `ConfigError` listing every problem found."""
    return _Loader(Path(path)).load()

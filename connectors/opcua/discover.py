"""Finding what an OPC UA server serves: its variables, as a tag list a config can load.

`lineside discover opcua URL` connects anonymously with policy None (`discover`);
`lineside discover opcua -c CONFIG --source NAME` connects as the agent connects for that
source (`discover_source`, through `session.open_session`: its endpoint, security policy and
mode, certificate, key passphrase, trust folder and login), so a server that offers only secure
endpoints can be browsed, and every refusal reads as the agent's. Then either browses level by
level from a root node (Objects by default) to
a depth, many nodes per Browse request (continuation points followed), through hierarchical
references, never into properties (EngineeringUnits, EURange: metadata, not tags) and never
twice into the same node. Standard nodes (namespace 0) below the Objects folder, the Server
object and its diagnostics, are left out unless the root is one of them. The variables found
are then read, in batches sized to the server's MaxNodesPerRead, for DataType, AccessLevel,
ValueRank and ArrayDimensions.

`tag_rows` turns variables into rows of a `tags_file` (the columns `OpcUaTag` accepts), so the
output loads straight into a config. A variable becomes a tag when the agent can make a
float64 reading of it: Boolean, every integer width, Float, Double, DateTime, and arrays of
those with a fixed length (`array_length`, flattened to `name[i]`). Text, byte strings,
structures, arrays of unknown length and unreadable variables are counted and left out.
The browse path, the OPC UA data type and the access level go into the description.

`browse` and `describe` are the I/O; `pick_source`, `tag_rows`, `tag_name`, `to_csv` and
`to_toml` are pure.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames, ObjectIds
from asyncua.ua.uaerrors import UaError

from agent.config import SourceModel
from agent.errors import ConnectError, LinesideError, one_line
from connectors.opcua.config import OpcUaSourceConfig
from connectors.opcua.session import close_session, open_session, read_limits, translate

DEFAULT_DEPTH = 5
MAX_DEPTH = 50
BROWSE_BATCH = 100  # nodes per Browse request
CSV_COLUMNS = ("name", "node_id", "type", "array_length", "description")

# OPC UA built-in data types (namespace 0) the agent reads, and the tag type declared for each;
# None: readable, but no lineside type fits exactly (the source takes the server's type).
_TYPES: dict[int, str | None] = {
    ObjectIds.Boolean: "bool",
    ObjectIds.SByte: None,
    ObjectIds.Byte: None,
    ObjectIds.Int16: "int16",
    ObjectIds.UInt16: "uint16",
    ObjectIds.Int32: "int32",
    ObjectIds.UInt32: "uint32",
    ObjectIds.Int64: "int64",
    ObjectIds.UInt64: "uint64",
    ObjectIds.Float: "float32",
    ObjectIds.Double: "float64",
    ObjectIds.Duration: "float64",  # a Double subtype
    ObjectIds.DateTime: None,
    ObjectIds.UtcTime: None,  # a DateTime subtype
}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True, slots=True)
class Variable:
    """One variable found: where it is and what it holds."""

    node_id: str
    path: tuple[str, ...]  # browse names from below the root to the variable
    data_type: str = ""  # the OPC UA name ("Double"), or the type's node id if not standard
    data_type_id: int | None = None  # the namespace-0 numeric id, None for other types
    readable: bool = True
    writable: bool = False
    array_length: int | None = None  # fixed length of a one-dimensional array
    array: bool = False  # any array (ValueRank >= 1 or unknown dimensions)

    @property
    def browse_path(self) -> str:
        return "/".join(self.path)

    @property
    def access(self) -> str:
        if self.readable and self.writable:
            return "read/write"
        return "read" if self.readable else ("write" if self.writable else "none")


@dataclass(frozen=True, slots=True)
class Discovery:
    """What `discover` found: the variables, and how many nodes and requests it took."""

    endpoint: str
    root: str
    depth: int
    variables: tuple[Variable, ...]
    nodes_browsed: int
    requests: int
    security: str = "None"  # "Basic256Sha256/SignAndEncrypt" when browsed through a source


async def discover(
    endpoint: str,
    *,
    root: str = "i=85",
    depth: int = DEFAULT_DEPTH,
    time_limit: float = 5.0,
    progress: Progress | None = None,
) -> Discovery:
    """Connect anonymously to `endpoint` (policy None), browse and describe; ConnectError if not.

    Each request, and the connect, is bounded by `time_limit`.
    """
    root_id = parse_node_id(root)
    check_depth(depth)
    report = progress or _silent
    report(f"connecting to {endpoint}", 0, None)
    client = Client(endpoint, timeout=time_limit)
    client.name = client.description = "lineside discover"
    # A minute outlives any browse; asyncua's one-hour default is revised (with a warning) by
    # most servers, and a session we fail to close should not linger that long.
    client.session_timeout = 60_000
    try:
        async with asyncio.timeout(time_limit):
            await client.connect()
    except Exception as exc:  # asyncua fails in many types, some bare: always one line
        client.disconnect_socket()
        if isinstance(exc, TimeoutError | OSError | UaError | ConnectionError | ValueError):
            raise translate(exc, f"cannot connect to {endpoint}") from None
        raise ConnectError(f"cannot connect to {endpoint}: {one_line(exc)}") from None
    return await _explore(client, endpoint, "None", root_id, depth, time_limit, report)


async def discover_source(
    source: OpcUaSourceConfig,
    *,
    root: str = "i=85",
    depth: int = DEFAULT_DEPTH,
    progress: Progress | None = None,
) -> Discovery:
    """Connect as the agent does for `source`, browse and describe; ConnectError if refused.

    The session is the agent's (`open_session`): the same security checks, trust folder and
    login, and the same one-line refusals; nothing falls back to policy None. The source's
    `timeout` bounds the connect and each request.
    """
    root_id = parse_node_id(root)
    check_depth(depth)
    report = progress or _silent
    report(f"connecting to {source.endpoint} as source {source.name}", 0, None)
    # A connection lost mid-browse fails the next request, and that error is the one reported.
    client = await open_session(source, lambda why: None)
    security = (
        f"{source.security_policy}/{source.security_mode}"
        if source.security_policy != "None"
        else "None"
    )
    return await _explore(client, source.endpoint, security, root_id, depth, source.timeout, report)


async def _explore(
    client: Client,
    endpoint: str,
    security: str,
    root_id: ua.NodeId,
    depth: int,
    time_limit: float,
    report: Progress,
) -> Discovery:
    """Browse and describe through a connected `client`, then close its session."""
    try:
        browsed, requests = await browse(client, root_id, depth, time_limit, report)
        limits = await read_limits(client, time_limit)
        variables, reads = await describe(
            client, browsed, limits.nodes_per_read(None) // 4 or 1, time_limit, report
        )
    except (TimeoutError, OSError, UaError, ConnectionError) as exc:
        raise translate(exc, f"browsing {endpoint}") from None
    except LinesideError:
        raise
    except Exception as exc:  # asyncua's bugs too: one line, never a traceback
        raise ConnectError(f"browsing {endpoint}: {one_line(exc)}") from None
    finally:
        await close_session(client, time_limit, [])
    return Discovery(
        endpoint,
        root_id.to_string(),
        depth,
        tuple(variables),
        len(browsed.nodes),
        requests + reads + 1,
        security,
    )


def _silent(what: str, done: int, total: int | None) -> None:
    pass


def pick_source(sources: Sequence[SourceModel], name: str) -> OpcUaSourceConfig:
    """The OPC UA source called `name` among a config's sources; ValueError naming the choices."""
    names = [s.name for s in sources if isinstance(s, OpcUaSourceConfig)]
    choices = f"its OPC UA sources: {', '.join(names)}" if names else "it has no OPC UA source"
    for s in sources:
        if s.name == name:
            if isinstance(s, OpcUaSourceConfig):
                return s
            raise ValueError(f"--source {name}: a {s.type} source, not OPC UA; {choices}")
    raise ValueError(f"--source: no source named {name!r}; {choices}")


def parse_node_id(text: str) -> ua.NodeId:
    """A node id from `ns=2;s=x`, `i=85` or the name `Objects`; ValueError when not one."""
    if text.lower() in ("objects", "root"):
        return ua.NodeId(
            ua.Int32(ObjectIds.ObjectsFolder if text.lower() == "objects" else ObjectIds.RootFolder)
        )
    try:
        return ua.NodeId.from_string(text)
    except (ValueError, UaError, IndexError):
        raise ValueError(
            f'--root: expected a node id like "ns=2;s=press1" or "i=85" (Objects), got {text!r}'
        ) from None


def check_depth(depth: int) -> int:
    if not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"--depth must be between 1 and {MAX_DEPTH}, got {depth}")
    return depth


@dataclass
class Browsed:
    """Variables found by browsing: node id → browse path; and every node visited."""

    variables: dict[ua.NodeId, tuple[str, ...]]
    nodes: set[ua.NodeId]


async def browse(
    client: Client, root: ua.NodeId, depth: int, time_limit: float, report: Progress
) -> tuple[Browsed, int]:
    """Every variable under `root` to `depth` levels (1: its children); and the request count."""
    found = Browsed({}, {root})
    frontier: list[tuple[ua.NodeId, tuple[str, ...]]] = [(root, ())]
    requests = 0
    skip_standard = root == ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
    for level in range(1, depth + 1):
        if not frontier:
            break
        next_frontier: list[tuple[ua.NodeId, tuple[str, ...]]] = []
        for start in range(0, len(frontier), BROWSE_BATCH):
            batch = frontier[start : start + BROWSE_BATCH]
            report(f"browsing level {level}", start, len(frontier))
            refs, n = await _browse_batch(client, [node for node, _ in batch], time_limit)
            requests += n
            for (_, path), children in zip(batch, refs, strict=True):
                for ref in children:
                    node = ref.NodeId
                    if node in found.nodes or (skip_standard and node.NamespaceIndex == 0):
                        continue
                    found.nodes.add(node)
                    child_path = (*path, ref.BrowseName.Name or node.to_string())
                    if ref.NodeClass == ua.NodeClass.Variable:
                        found.variables[node] = child_path
                    next_frontier.append((node, child_path))
        frontier = next_frontier
    return found, requests


async def _browse_batch(
    client: Client, nodes: Sequence[ua.NodeId], time_limit: float
) -> tuple[list[list[ua.ReferenceDescription]], int]:
    params = ua.BrowseParameters()
    params.RequestedMaxReferencesPerNode = 0
    for node in nodes:
        desc = ua.BrowseDescription()
        desc.NodeId = node
        desc.BrowseDirection = ua.BrowseDirection.Forward
        desc.ReferenceTypeId = ua.NodeId(ua.Int32(ObjectIds.HierarchicalReferences))
        desc.IncludeSubtypes = True
        desc.NodeClassMask = ua.NodeClass.Object | ua.NodeClass.Variable
        desc.ResultMask = ua.BrowseResultMask.All
        params.NodesToBrowse.append(desc)
    async with asyncio.timeout(time_limit):
        results = await client.uaclient.browse(params)
    requests = 1
    out: list[list[ua.ReferenceDescription]] = []
    for result in results:
        refs = [r for r in result.References if r.ReferenceTypeId != _HAS_PROPERTY]
        point = result.ContinuationPoint
        while point:
            more = ua.BrowseNextParameters()
            more.ContinuationPoints = [point]
            async with asyncio.timeout(time_limit):
                (next_result,) = await client.uaclient.browse_next(more)
            requests += 1
            refs.extend(r for r in next_result.References if r.ReferenceTypeId != _HAS_PROPERTY)
            point = next_result.ContinuationPoint
        out.append(refs)
    return out, requests


_HAS_PROPERTY = ua.NodeId(ua.Int32(ObjectIds.HasProperty))
_ATTRIBUTES = (
    AttributeIds.DataType,
    AttributeIds.AccessLevel,
    AttributeIds.ValueRank,
    AttributeIds.ArrayDimensions,
)


async def describe(
    client: Client, browsed: Browsed, nodes_per_read: int, time_limit: float, report: Progress
) -> tuple[list[Variable], int]:
    """Data type, access level and array shape of every variable found; and the read count."""
    items = list(browsed.variables.items())
    out: list[Variable] = []
    requests = 0
    for start in range(0, len(items), nodes_per_read):
        batch = items[start : start + nodes_per_read]
        report("reading data types", start, len(items))
        params = ua.ReadParameters()
        for node, _ in batch:
            for attribute in _ATTRIBUTES:
                rv = ua.ReadValueId()
                rv.NodeId = node
                rv.AttributeId = attribute
                params.NodesToRead.append(rv)
        async with asyncio.timeout(time_limit):
            values = await client.uaclient.read(params)
        requests += 1
        for i, (node, path) in enumerate(batch):
            got = [_value(dv) for dv in values[4 * i : 4 * i + 4]]
            out.append(variable_from(node.to_string(), path, *got))
    report("done", len(items), len(items))
    return out, requests


def _value(dv: ua.DataValue) -> object:
    good = dv.StatusCode is None or dv.StatusCode.is_good()
    return dv.Value.Value if good and dv.Value is not None else None


def variable_from(
    node_id: str,
    path: tuple[str, ...],
    data_type: object,
    access_level: object,
    value_rank: object,
    dimensions: object,
) -> Variable:
    """A `Variable` from the four attribute values read (None where the server gave none)."""
    type_id: int | None = None
    type_name = ""
    if isinstance(data_type, ua.NodeId):
        if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int):
            type_id = data_type.Identifier
            type_name = ObjectIdNames.get(type_id, data_type.to_string())
        else:
            type_name = data_type.to_string()
    level = access_level if isinstance(access_level, int) else 0
    rank = value_rank if isinstance(value_rank, int) else -1
    length: int | None = None
    if rank == 1 and isinstance(dimensions, list) and len(dimensions) == 1:
        length = dimensions[0] if isinstance(dimensions[0], int) and dimensions[0] > 0 else None
    return Variable(
        node_id=node_id,
        path=path,
        data_type=type_name,
        data_type_id=type_id,
        readable=bool(level & ua.AccessLevel.CurrentRead.mask),
        writable=bool(level & ua.AccessLevel.CurrentWrite.mask),
        array_length=length,
        # 0 and up are arrays; -1 scalar; -2 (any) and -3 (scalar or array) are taken as scalars,
        # since many servers declare scalars so: an array there reads bad, and says why.
        array=rank >= 0,
    )


def why_left_out(v: Variable) -> str | None:
    """Why a variable cannot be a tag, or None when it can."""
    if not v.readable:
        return "not readable"
    if v.data_type_id not in _TYPES:
        return f"type {v.data_type or 'unknown'}"
    if v.array and v.array_length is None:
        return "array of unknown length"
    return None


def tag_name(path: Sequence[str]) -> str:
    """A lineside tag name from a browse path: parts joined by `_`, other characters `_`."""
    parts = [_NAME_CHARS.sub("_", p).strip("_") for p in path]
    return "_".join(p for p in parts if p) or "tag"


def tag_rows(variables: Sequence[Variable]) -> tuple[list[dict[str, str]], Counter[str]]:
    """Rows of a tags_file for the variables that can be tags; and why the others are not."""
    rows: list[dict[str, str]] = []
    left_out: Counter[str] = Counter()
    used: set[str] = set()
    for v in variables:
        why = why_left_out(v)
        if why is not None:
            left_out[why] += 1
            continue
        name = base = tag_name(v.path)
        n = 2
        while name in used:  # two paths that sanitise alike (a.b and a_b) stay two tags
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        shape = f"[{v.array_length}]" if v.array_length is not None else ""
        rows.append(
            {
                "name": name,
                "node_id": v.node_id,
                "type": _TYPES.get(v.data_type_id) or "" if v.data_type_id is not None else "",
                "array_length": str(v.array_length) if v.array_length is not None else "",
                "description": f"{v.browse_path} ({v.data_type}{shape}, {v.access})",
            }
        )
    return rows, left_out


def by_machine(variables: Sequence[Variable]) -> dict[str, list[Variable]]:
    """The variables grouped by the folder right below the root (a server's machine folders:
    `press1/count` goes with `press1`); variables at the root itself group under ""."""
    groups: dict[str, list[Variable]] = {}
    for v in variables:
        groups.setdefault(v.path[0] if len(v.path) > 1 else "", []).append(v)
    return groups


def machine_path(out: Path, machine: str) -> Path:
    """Where one machine's tag list goes: `tags.csv` -> `tags_press1.csv`."""
    return out.with_name(f"{out.stem}_{tag_name([machine or 'root'])}{out.suffix}")


def to_csv(rows: Sequence[dict[str, str]]) -> str:
    """Rows as a tags_file CSV."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_toml(rows: Sequence[dict[str, str]], heading: str) -> str:
    """Rows as `[[sources.tags]]` tables, to paste after an OPC UA `[[sources]]` table."""
    lines = [f"# {line}" for line in heading.splitlines()]
    for row in rows:
        lines.append("")
        lines.append("[[sources.tags]]")
        for key in CSV_COLUMNS:
            value = row.get(key, "")
            if not value:
                continue
            lines.append(f"{key} = {value}" if key == "array_length" else f"{key} = {_q(value)}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's for these characters)."""
    out = text.replace("\\", "\\\\").replace('"', '\\"')
    out = "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in out)
    return f'"{out}"'


def summary(result: Discovery, rows: int, left_out: Counter[str]) -> str:
    """One line: how much was found, written and left out (and why)."""
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(left_out.items()))
    tail = f"; left out: {why}" if why else ""
    secured = f" ({result.security})" if result.security != "None" else ""
    return (
        f"{result.endpoint}{secured}: {len(result.variables)} variables under {result.root} "
        f"(depth {result.depth}, {result.nodes_browsed} nodes, {result.requests} requests); "
        f"{rows} tags{tail}"
    )

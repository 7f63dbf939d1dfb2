"""OPC UA nodes as the source reads them: which agent rows each fills, its group, and
whether its DataType and ValueRank let it give readings at all (see source.py, "Types")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from asyncua import ua

from connectors.opcua.config import Mode, OpcUaTag

# Built-in DataTypes (namespace 0) with no float64 reading: Guid, ByteString, XmlElement,
# NodeId, ExpandedNodeId, StatusCode, QualifiedName, LocalizedText, Structure, DataValue,
# DiagnosticInfo; and String (12).
NOT_NUMERIC = frozenset({12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 25})
TYPE_NAMES = {12: "String", 14: "Guid", 15: "ByteString", 21: "LocalizedText", 22: "Structure"}
SCALAR = -1  # ValueRank
# Built-in numeric DataTypes (namespace 0): name, the lineside type that is the node's own, and
# the range of its values (None: not an integer type).
NUMERIC: dict[int, tuple[str, str, tuple[int, int] | None]] = {
    1: ("Boolean", "bool", (0, 1)),
    2: ("SByte", "int16", (-(2**7), 2**7 - 1)),
    3: ("Byte", "uint16", (0, 2**8 - 1)),
    4: ("Int16", "int16", (-(2**15), 2**15 - 1)),
    5: ("UInt16", "uint16", (0, 2**16 - 1)),
    6: ("Int32", "int32", (-(2**31), 2**31 - 1)),
    7: ("UInt32", "uint32", (0, 2**32 - 1)),
    8: ("Int64", "int64", (-(2**63), 2**63 - 1)),
    9: ("UInt64", "uint64", (0, 2**64 - 1)),
    10: ("Float", "float32", None),
    11: ("Double", "float64", None),
    13: ("DateTime", "float64", None),
    290: ("Duration", "float64", None),  # a Double
    294: ("UtcTime", "float64", None),  # a DateTime
}
INT_RANGE = {name: bounds for _, name, bounds in NUMERIC.values() if bounds is not None}


@dataclass(slots=True)
class Node:
    """One node read or monitored, and the rows (agent tags) its value fills."""

    tag: OpcUaTag
    node_id: ua.NodeId
    handle: int  # the monitored item's client handle: index in the source's node list
    group: str
    first_row: int
    rows: int  # 1, or the declared array length
    excluded: str = ""  # why it is neither read nor monitored this session ("" if it is)
    # `nsu=<uri>;...`: the namespace URI, looked up in the server's NamespaceArray at every
    # connect (a restarted server may number its namespaces differently); "" for `ns=<index>`.
    namespace_uri: str = ""
    unresolved: str = ""  # why the URI has no index on the server this session ("" if it has)


@dataclass(slots=True)
class Group:
    name: str
    mode: Mode
    interval: float
    nodes: list[Node]
    row_ids: npt.NDArray[np.int32]  # the group's rows, node by node (first_row order)
    reads: list[tuple[ua.ReadParameters, list[Node]]] = field(default_factory=list)


def why_excluded(node: Node, data_type: ua.DataValue, rank: ua.DataValue) -> tuple[str, str]:
    """(error kind, why) when the node cannot give readings, else ("", "")."""
    for dv in (data_type, rank):
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            return "bad_node", f"cannot be read: {dv.StatusCode.name}"
    if node.tag.type == "string":
        return "unsupported_type", "unsupported type string: a reading is a float64"
    type_id = data_type.Value.Value if data_type.Value is not None else None
    if isinstance(type_id, ua.NodeId) and type_id.NamespaceIndex == 0:
        ident = type_id.Identifier
        if isinstance(ident, int) and ident in NOT_NUMERIC:
            name = TYPE_NAMES.get(ident, f"i={ident}")
            return "unsupported_type", f"unsupported type {name}: a reading is a float64"
    if node.tag.type is not None and isinstance(type_id, ua.NodeId):
        refused = type_refusal(node.tag.type, type_id)
        if refused:
            return "type_mismatch", refused
    value_rank = rank.Value.Value if rank.Value is not None else SCALAR
    declared = node.tag.array_length is not None
    if isinstance(value_rank, int):
        if declared and value_rank == SCALAR:
            return "array_mismatch", "declared array_length but the node is a scalar"
        if not declared and (value_rank == 0 or value_rank >= 1):
            return "array_mismatch", "an array node: declare array_length to read it as tags"
    return "", ""


# -- poll groups -----------------------------------------------------------------------


def parse_node_id(text: str) -> tuple[ua.NodeId, str]:
    """A configured node id and its namespace URI: `nsu=<uri>;s=...` gives the URI (its index
    is the server's to say, see `_resolve`), `ns=<index>;...` and `i=...` give ""."""
    parsed = ua.NodeId.from_string(text)
    uri = getattr(parsed, "NamespaceUri", None)
    if isinstance(parsed, ua.ExpandedNodeId) and uri:
        return with_namespace(parsed, 0), str(uri)
    return parsed, ""


def with_namespace(node_id: ua.NodeId, index: int) -> ua.NodeId:
    """The plain NodeId of `node_id` (Expanded or not) in namespace `index`."""
    return ua.NodeId(node_id.Identifier, ua.Int16(index), node_id.NodeIdType)


def type_refusal(declared: str, data_type: ua.NodeId) -> str:
    """Why a tag declared `declared` cannot take the values of a node of `data_type`, or "".

    The declared type is what sinks announce (a Sparkplug metric's datatype, say), so it must
    hold every value the node can have: an integer type the node's whole range (an Int16 node
    fits int32, a UInt16 node does not fit int16), bool only a Boolean node, float32 any integer
    or Float node but not a Double; float64 holds them all. Unknown and non-standard DataTypes
    (enumerations, namespaces other than 0) are not checked.
    """
    ident = data_type.Identifier
    if data_type.NamespaceIndex != 0 or not isinstance(ident, int) or ident not in NUMERIC:
        return ""
    name, own, bounds = NUMERIC[ident]
    if declared == "float64" or declared == own:
        return ""
    if declared == "float32":
        fits = bounds is not None
    elif declared == "bool":
        fits = False
    else:
        lo, hi = INT_RANGE[declared]
        fits = bounds is not None and lo <= bounds[0] and bounds[1] <= hi
    if fits:
        return ""
    return (
        f'the node is {name}, which type = "{declared}" cannot hold: '
        f'declare type = "{own}" or leave type out'
    )

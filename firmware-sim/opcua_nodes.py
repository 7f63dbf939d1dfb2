"""The simulated plant's OPC UA address space: a folder per machine, a variable per profile tag.

Node ids follow the profile rule `ns=<index>;s=<machine>.<tag>` (the folder is
`ns=<index>;s=<machine>`), data types follow `opcua_type(tag)`, values are engineering units
(`coerce` checks them against the type). `write_changed` writes only nodes whose value or status
changed, so subscriptions see real changes only. The server itself (`opcua_server.py`) owns
when these run.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Protocol

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes

from firmware_sim.profile import Profile, ProfileTag, opcua_type

Value = float | int | bool | str

# UNECE is the unit namespace OPC UA Part 8 names; -1 says "no UNECE code", the display name
# carries the profile's unit text. Good enough for a simulator, and what generic clients show.
_EU_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

_INT_RANGE = {
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_F32 = struct.Struct("<f")


class ServedMachine(Protocol):
    """What the server needs of a machine model."""

    @property
    def name(self) -> str: ...

    @property
    def profile(self) -> Profile: ...

    def values(self) -> Mapping[str, Value]: ...


def coerce(type_name: str, value: object) -> bool | int | float | str:
    """`value` as the Python value asyncua encodes for `type_name`, or ValueError/TypeError.

    Checked here because asyncua packs values only when a client reads them: an out-of-range
    integer would fail inside the server's response path instead of at the source.
    """
    if type_name == "String":
        if not isinstance(value, str):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return value
    if type_name == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"expected a boolean, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if type_name in ("Float", "Double"):
        f = float(value)
        if type_name == "Float":
            if math.isfinite(f) and abs(f) > _FLOAT32_MAX:
                raise ValueError(f"{f} does not fit a 32-bit float")
            # Round to what the wire carries, so change detection works at served precision
            # and the server holds exactly the value a client reads.
            f = _F32.unpack(_F32.pack(f))[0]
        return f
    lo, hi = _INT_RANGE[type_name]
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not an integer")
    n = int(value)
    if not lo <= n <= hi:
        raise ValueError(f"{n} is outside {type_name} [{lo}, {hi}]")
    return n


def _same(a: tuple[object, ua.StatusCode], b: tuple[object, ua.StatusCode]) -> bool:
    """Whether a node would serve the same thing; NaN counts as equal to NaN (no rewrite churn).

    Values of one node always have its one coerced Python type, so True == 1 cannot hide a change.
    """
    if a[1] != b[1]:
        return False
    x, y = a[0], b[0]
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


_ZERO: dict[str, bool | int | float | str] = {
    "String": "",
    "Boolean": False,
    "Float": 0.0,
    "Double": 0.0,
}


def _zero(type_name: str) -> bool | int | float | str:
    return _ZERO.get(type_name, 0)


def string_node_id(identifier: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(ns))


def status_code(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


class SharedDataValue(ua.DataValue):
    """A DataValue nobody mutates once written, so asyncua's monitored items need no copy of it.

    Each monitored item deep-copies every value written to its node (asyncua 2.1,
    `MonitoredItemValues.set_current_datavalue`), in case the writer changes the object later:
    about 40 µs for a Double with two timestamps, most of what a change costs the server. The
    bulk path builds a fresh value per write and keeps no reference to it, so sharing is safe.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> SharedDataValue:
        return self


class ServedNode:
    """One served variable and the last (value, status) pair written to it."""

    __slots__ = ("last", "node_id", "tag", "type_name", "variant")

    def __init__(self, tag: ProfileTag, node_id: ua.NodeId) -> None:
        self.tag = tag
        self.type_name = opcua_type(tag)
        self.variant: ua.VariantType = getattr(ua.VariantType, self.type_name)
        self.node_id = node_id
        self.last: tuple[object, ua.StatusCode] | None = None


async def build(
    server: Server, machines: Mapping[str, ServedMachine], ns: int
) -> dict[str, list[ServedNode]]:
    """Add each machine's folder and tag variables (zero values) in namespace `ns`."""
    objects = server.nodes.objects
    built: dict[str, list[ServedNode]] = {}
    for name, machine in machines.items():
        folder = await objects.add_folder(string_node_id(name, ns), ua.QualifiedName(name, ns))
        nodes = []
        for tag in machine.profile.tags:
            node = ServedNode(tag, string_node_id(f"{name}.{tag.name}", ns))
            var = await folder.add_variable(
                node.node_id,
                ua.QualifiedName(tag.name, ns),
                ua.Variant(_zero(node.type_name), node.variant),
                varianttype=node.variant,
            )
            await _describe(var, tag, ns)
            nodes.append(node)
        built[name] = nodes
    return built


async def _describe(var: Node, tag: ProfileTag, ns: int) -> None:
    if tag.description:
        text = ua.LocalizedText(tag.description)
        await var.write_attribute(AttributeIds.Description, ua.DataValue(ua.Variant(text)))
    if tag.unit:
        eu = ua.EUInformation(
            NamespaceUri=_EU_NAMESPACE,
            UnitId=-1,
            DisplayName=ua.LocalizedText(tag.unit),
            Description=ua.LocalizedText(tag.unit),
        )
        await var.add_property(ns, "EngineeringUnits", eu)


async def write_changed(
    server: Server, nodes: Sequence[ServedNode], values: Mapping[str, Value], now: ua.DateTime
) -> int:
    """Write `values` (engineering units by tag name) to the `nodes` whose value changed.

    A tag whose value is missing or does not fit its OPC UA type is served with a Bad status
    (and, per Part 4, a null value) rather than a made-up number. Returns the nodes written.
    """
    written = 0
    for node in nodes:
        raw = values.get(node.tag.name)
        status = status_code(StatusCodes.Good)
        value: object = None
        if raw is None:
            status = status_code(StatusCodes.BadNoData)
        else:
            try:
                value = coerce(node.type_name, raw)
            except TypeError:
                status = status_code(StatusCodes.BadTypeMismatch)
            except ValueError:
                status = status_code(StatusCodes.BadOutOfRange)
        if node.last is not None and _same(node.last, (value, status)):
            continue
        node.last = (value, status)
        variant = ua.Variant(value, node.variant) if status.is_good() else ua.Variant()
        await server.write_attribute_value(
            node.node_id,
            ua.DataValue(variant, status, SourceTimestamp=now, ServerTimestamp=now),
        )
        written += 1
    return written

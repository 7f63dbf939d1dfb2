"""Machine profiles: the register map and OPC UA node map of each machine kind, as data.

A profile is `profiles/<kind>.toml`. Each `[[tags]]` entry uses the same keys as a Modbus tag in
a lineside config (name, address, type, order, scale, offset, unit, length, description), so
`lineside init` copies them into a starter config unchanged: the simulator and the agent read
one truth. Addresses here use the 0-based table form only (`hr:12`, `ir:0`, `co:3`, `di:1`,
`hr:5.3` for bit 3 of a register).

OPC UA: every tag is a variable under the machine's folder with node id
`ns=<index>;s=<machine>.<tag>`; its data type follows `opcua_type()`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

from firmware_sim.image import Table

KINDS = ("press", "mill", "loom")

REGISTER_WIDTH = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}

_OPCUA_TYPE = {
    "bool": "Boolean",
    "int16": "Int16",
    "uint16": "UInt16",
    "int32": "Int32",
    "uint32": "UInt32",
    "int64": "Int64",
    "uint64": "UInt64",
    "float32": "Float",
    "float64": "Double",
    "string": "String",
}


@dataclass(frozen=True, slots=True)
class ProfileTag:
    name: str
    address: str
    type: str
    table: Table
    index: int
    bit: int | None = None
    order: str = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    length: int = 0  # characters, strings only
    description: str = ""

    @property
    def width(self) -> int:
        """Registers (or bits) the tag occupies."""
        if self.table.is_bits or self.bit is not None:
            return 1
        if self.type == "string":
            return (self.length + 1) // 2
        return REGISTER_WIDTH[self.type]


def opcua_type(tag: ProfileTag) -> str:
    """The OPC UA data type that serves `tag`: scaled integers become Double engineering values."""
    if tag.type not in ("bool", "string", "float32", "float64") and (
        tag.scale != 1.0 or tag.offset != 0.0
    ):
        return "Double"
    return _OPCUA_TYPE[tag.type]


@dataclass(frozen=True, slots=True)
class Profile:
    kind: str
    description: str
    tags: tuple[ProfileTag, ...]

    def tag(self, name: str) -> ProfileTag:
        for t in self.tags:
            if t.name == name:
                return t
        raise KeyError(f"{self.kind} has no tag {name!r}")

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags)


def parse_table_address(text: str) -> tuple[Table, int, int | None]:
    """`hr:12` → (holding registers, 12, None); `hr:5.3` → bit 3 of holding register 5."""
    prefix, _, rest = text.partition(":")
    table = Table(prefix)
    index_text, dot, bit_text = rest.partition(".")
    bit = int(bit_text) if dot else None
    return table, int(index_text), bit


def profile_from_toml(text: str) -> Profile:
    doc = tomllib.loads(text)
    tags = []
    for entry in doc["tags"]:
        table, index, bit = parse_table_address(entry["address"])
        tags.append(
            ProfileTag(
                name=entry["name"],
                address=entry["address"],
                type=entry.get("type", "bool" if table.is_bits else "uint16"),
                table=table,
                index=index,
                bit=bit,
                order=entry.get("order", "ABCD"),
                scale=float(entry.get("scale", 1.0)),
                offset=float(entry.get("offset", 0.0)),
                unit=entry.get("unit", ""),
                length=int(entry.get("length", 0)),
                description=entry.get("description", ""),
            )
        )
    return Profile(kind=doc["kind"], description=doc.get("description", ""), tags=tuple(tags))


def profile_text(kind: str) -> str:
    """The TOML source of a profile, as shipped with the package."""
    if kind not in KINDS:
        raise KeyError(f"unknown machine kind {kind!r}; known: {', '.join(KINDS)}")
    return resources.files("firmware_sim").joinpath("profiles", f"{kind}.toml").read_text("utf-8")


@cache
def load_profile(kind: str) -> Profile:
    return profile_from_toml(profile_text(kind))

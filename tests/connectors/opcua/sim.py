"""Test helpers: the simulated OPC UA server with a node of every data type, and sources on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua

from agent.clock import SystemClock
from agent.model import ReadingBatch
from agent.tags import Tag, TagTable
from connectors.opcua import certs
from connectors.opcua.config import OpcUaSourceConfig
from connectors.opcua.source import OpcUaSource
from firmware_sim.opcua_nodes import Value
from firmware_sim.opcua_server import SimOpcUaServer
from firmware_sim.profile import Profile, profile_from_toml

# One tag of every type a profile can serve; a test that needs more appends its own [[tags]].
PROFILE_TOML = """
kind = "press"
description = "every profile type once"

[[tags]]
name = "flag"
address = "co:0"

[[tags]]
name = "i16"
address = "hr:0"
type = "int16"

[[tags]]
name = "u16"
address = "hr:1"
type = "uint16"

[[tags]]
name = "i32"
address = "hr:2"
type = "int32"

[[tags]]
name = "u32"
address = "hr:4"
type = "uint32"

[[tags]]
name = "i64"
address = "hr:6"
type = "int64"

[[tags]]
name = "u64"
address = "hr:10"
type = "uint64"

[[tags]]
name = "f32"
address = "hr:14"
type = "float32"
unit = "kW"
description = "Motor power"

[[tags]]
name = "f64"
address = "hr:16"
type = "float64"

[[tags]]
name = "text"
address = "hr:21"
type = "string"
length = 8
"""
PROFILE = profile_from_toml(PROFILE_TOML)

VALUES: dict[str, Value] = {
    "flag": True,
    "i16": -32768,
    "u16": 65535,
    "i32": -(2**31),
    "u32": 2**32 - 1,
    "i64": -(2**63),
    "u64": 2**64 - 1,
    "f32": 1.5,
    "f64": 1e300,
    "text": "DIE-7",
}
WHEN = datetime(2024, 5, 6, 7, 8, 9, 250_000, tzinfo=UTC)

# Nodes the profiles cannot produce, added with `add_variable`: name → variant.
EXTRA: dict[str, ua.Variant] = {
    "sbyte": ua.Variant(-5, ua.VariantType.SByte),
    "byte": ua.Variant(200, ua.VariantType.Byte),
    "when": ua.Variant(WHEN, ua.VariantType.DateTime),
    "arr": ua.Variant([1.0, 2.0, 3.0], ua.VariantType.Double),
    "ints": ua.Variant([4, 5], ua.VariantType.Int32),
    "level": ua.Variant(0.0, ua.VariantType.Double),
}

# What a good reading of each tag is (float64), and the tags that must read bad.
EXPECTED: dict[str, float] = {
    "flag": 1.0,
    "i16": -32768.0,
    "u16": 65535.0,
    "i32": float(-(2**31)),
    "u32": float(2**32 - 1),
    "i64": float(-(2**63)),
    "u64": float(2**64 - 1),
    "f32": 1.5,
    "f64": 1e300,
    "sbyte": -5.0,
    "byte": 200.0,
    "when": WHEN.timestamp(),
    "arr[0]": 1.0,
    "arr[1]": 2.0,
    "arr[2]": 3.0,
    "level": 0.0,
}
BAD = ("text", "ints", "missing")  # String; an undeclared array; a node that does not exist


@dataclass
class TableMachine:
    """A machine whose values are whatever the test puts in its table."""

    name: str
    profile: Profile
    table: dict[str, Value] = field(default_factory=dict)

    def values(self) -> Mapping[str, Value]:
        return self.table


@dataclass(frozen=True)
class Pki:
    """A client certificate whose key is encrypted, and a file holding the key's passphrase;
    `dir` has room for the server's certificates too."""

    dir: Path
    cert: Path
    key: Path  # encrypted with the passphrase
    passphrase_file: Path


def make_pki(root: Path, application_uri: str, passphrase: str) -> Pki:
    made = certs.create(root / "client", application_uri, passphrase=passphrase)
    passphrase_file = root / "key-passphrase"
    passphrase_file.write_text(passphrase + "\n")  # a file as an editor saves it
    return Pki(root, made.certificate, made.private_key, passphrase_file)


async def start_server(**kwargs: Any) -> SimOpcUaServer:
    server = SimOpcUaServer([TableMachine("m1", PROFILE, dict(VALUES))], **kwargs)
    await server.start()
    for name, variant in EXTRA.items():
        await server.add_variable("m1", name, variant)
    return server


def tag_entries(ns: int) -> list[dict[str, Any]]:
    tags: list[dict[str, Any]] = [
        {"name": n, "node_id": f"ns={ns};s=m1.{n}"} for n in [*VALUES, *EXTRA] if n != "arr"
    ]
    tags.append({"name": "arr", "node_id": f"ns={ns};s=m1.arr", "array_length": 3})
    tags.append({"name": "missing", "node_id": f"ns={ns};s=m1.nope"})
    return tags


def make_config(endpoint: str, tags: list[dict[str, Any]], **extra: Any) -> OpcUaSourceConfig:
    return OpcUaSourceConfig.model_validate(
        {
            "type": "opcua",
            "name": "plc",
            "endpoint": endpoint,
            "machine": "m1",
            "tags": tags,
            **extra,
        }
    )


def make_source(config: OpcUaSourceConfig) -> tuple[OpcUaSource, TagTable]:
    infos = [
        Tag(
            id=i,
            path=f"s/a/l/m1/{t.name}",
            machine="m1",
            name=t.name,
            source=config.name,
            unit="",
            deadband_abs=0.0,
            deadband_pct=0.0,
        )
        for i, t in enumerate(config.tags_of("m1"))
    ]
    table = TagTable(infos)
    return OpcUaSource(config, table, SystemClock()), table


def by_name(table: TagTable, batches: list[ReadingBatch]) -> dict[str, tuple[float, int, int]]:
    """Latest (value, quality, ts_ns) per tag name over the batches."""
    out: dict[str, tuple[float, int, int]] = {}
    for batch in batches:
        for tag_id, value, quality, ts in zip(
            batch.tag_ids, batch.values, batch.quality, batch.timestamps(), strict=True
        ):
            out[table.tags[int(tag_id)].name] = (float(value), int(quality), int(ts))
    return out

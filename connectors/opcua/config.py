"""Config model of an OPC UA source: endpoint, security, and the nodes to read as tags.

No protocol library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, field_validator, model_validator

from agent.config import STRICT, ConfigPath, Credentials, DeadbandField, Loc, Name, key_error
from agent.duration import PositiveDuration
from agent.model import DataType as TagType

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]

# ns=<index>;<i|s|g|b>=<id>, the namespace part optional (namespace 0).
_NODE_ID = re.compile(r"(ns=\d+;|nsu=[^;]+;)?[isgb]=.+")


class OpcUaTag(BaseModel):
    model_config = STRICT

    name: Name
    node_id: str
    type: TagType | None = None  # None: take the server's data type
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    deadband: DeadbandField | None = None
    description: str = ""

    @field_validator("node_id")
    @classmethod
    def _node_id_form(cls, value: str) -> str:
        if not _NODE_ID.fullmatch(value):
            raise ValueError(
                f'expected a node id like "ns=2;s=press1.state" or "i=2258", got {value!r}'
            )
        return value

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must not be 0 (every value would read 0)")
        return value


class OpcUaSourceConfig(Credentials):
    type: Literal["opcua"]
    name: Name
    endpoint: str
    security_policy: SecurityPolicy = "None"
    security_mode: SecurityMode = "None"
    certificate: ConfigPath | None = None
    private_key: ConfigPath | None = None
    server_certificate: ConfigPath | None = None
    machine: Name
    mode: Literal["subscribe", "poll"] = "subscribe"
    interval: PositiveDuration = 1.0
    timeout: PositiveDuration = 5.0
    tags_file: Path | None = None  # read by the loader into `tags`
    tags: tuple[OpcUaTag, ...] = ()

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not re.fullmatch(r"opc\.tcp://[^/:\s]+(:\d+)?(/.*)?", value):
            raise ValueError(f'expected an endpoint like "opc.tcp://host:4840", got {value!r}')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        secure_policy = self.security_policy != "None"
        secure_mode = self.security_mode != "None"
        if secure_policy and not secure_mode:
            raise key_error(
                "security_mode",
                f"security_policy {self.security_policy} needs security_mode Sign or "
                "SignAndEncrypt",
            )
        if secure_mode and not secure_policy:
            raise key_error(
                "security_policy",
                f"security_mode {self.security_mode} needs a security_policy other than None",
            )
        if secure_policy and (self.certificate is None or self.private_key is None):
            raise key_error(
                "certificate", "a secure connection needs a certificate and a private_key"
            )
        if not self.tags and self.tags_file is None:
            raise key_error("tags", "no tags: add [[sources.tags]] entries or a tags_file")
        return self

    def unit_ids(self) -> tuple[int, ...]:
        return ()

    def machines(self) -> tuple[str, ...]:
        return (self.machine,)

    def tags_of(self, machine: str) -> tuple[OpcUaTag, ...]:
        return self.tags if machine == self.machine else ()

    def poll_intervals(self) -> tuple[float, ...]:
        return (self.interval,)

    def machine_refs(self) -> Iterator[tuple[Loc, str]]:
        yield ("machine",), self.machine

    def tag_places(self) -> Iterator[tuple[Loc, str, str]]:
        for i, tag in enumerate(self.tags):
            yield ("tags", i), self.machine, tag.name

"""Config model of an OPC UA source: endpoint, security, and the nodes to read as tags.

Tags are grouped by (mode, interval): each tag may override the source's `mode` ("subscribe":
monitored items published every `interval`; "poll": a batched Read every `interval`). A tag's
`deadband` is also sent to the server as the monitored item's data-change filter (absolute, or
percent of the node's EURange where the server supports it). A tag with `array_length = n`
reads an array node and becomes the n tags `name[0]` .. `name[n-1]` (see `element_names`).

No protocol library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from agent.config import STRICT, ConfigPath, Credentials, DeadbandField, Loc, Name, key_error
from agent.duration import Duration, PositiveDuration
from agent.model import DataType as TagType

SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
SecurityMode = Literal["None", "Sign", "SignAndEncrypt"]
Mode = Literal["subscribe", "poll"]

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
    mode: Mode | None = None  # None: the source's mode
    interval: PositiveDuration | None = None  # None: the source's interval
    # Declared arrays only: element i becomes the tag `name[i]`; an undeclared array reads bad.
    array_length: Annotated[int, Field(ge=1, le=65_536)] | None = None

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
    server_certificate: ConfigPath | None = None  # set: the only server certificate accepted
    # Folder of trusted server certificates (DER or PEM), next to the config file by default.
    trust_dir: Annotated[ConfigPath, Field(validate_default=True)] = Path("pki/trusted")
    # An unknown server certificate is then accepted once and written to trust_dir (pinned).
    trust_on_first_use: bool = False
    # Passphrase of an encrypted private key: the name of an environment variable, or a file.
    private_key_password_env: str | None = None
    private_key_password_file: ConfigPath | None = None
    # The client's application URI; None: the URI in the certificate's subjectAltName.
    application_uri: str | None = None
    machine: Name
    mode: Mode = "subscribe"
    interval: PositiveDuration = 1.0  # publishing interval (subscribe) or poll interval
    # How often the server samples a monitored item; None: the tag's interval.
    sampling_interval: Duration | None = None
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 1  # values a monitored item buffers
    timestamp: Literal["source", "server"] = "source"  # which one is the reading's time
    timeout: PositiveDuration = 5.0  # each connect attempt and each request
    session_timeout: PositiveDuration = 30.0  # how long a lost session outlives us on the server
    # Caps on top of what the server advertises (OperationLimits.MaxNodesPerRead,
    # ServerCapabilities.MaxMonitoredItemsPerSubscription); None: the server's, or 1000 items.
    max_nodes_per_read: Annotated[int, Field(ge=1)] | None = None
    max_items_per_subscription: Annotated[int, Field(ge=1)] | None = None
    tags_file: Path | None = None  # read by the loader into `tags`
    tags: tuple[OpcUaTag, ...] = ()

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if re.match(r"[a-z.]+://[^/@]*@", value):
            # Never quote it back: the part before "@" is a user name and likely a password.
            raise ValueError(
                "an endpoint must not hold a user name or password: set username and "
                "password_env (or password_file)"
            )
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
        if self.private_key_password_env is not None and self.private_key_password_file is not None:
            raise key_error(
                "private_key_password_file",
                "use either private_key_password_env or private_key_password_file, not both",
            )
        if not self.tags and self.tags_file is None:
            raise key_error("tags", "no tags: add [[sources.tags]] entries or a tags_file")
        return self

    def unit_ids(self) -> tuple[int, ...]:
        return ()

    def machines(self) -> tuple[str, ...]:
        return (self.machine,)

    def tags_of(self, machine: str) -> tuple[OpcUaTag, ...]:
        """The agent's tags: one per scalar tag, one per element of a declared array."""
        if machine != self.machine:
            return ()
        out: list[OpcUaTag] = []
        for tag in self.tags:
            if tag.array_length is None:
                out.append(tag)
            else:
                # Element names carry brackets, which a configured name may not: built, not parsed.
                out.extend(
                    tag.model_copy(update={"name": n, "array_length": None})
                    for n in element_names(tag)
                )
        return tuple(out)

    def mode_of(self, tag: OpcUaTag) -> Mode:
        return tag.mode or self.mode

    def interval_of(self, tag: OpcUaTag) -> float:
        return tag.interval if tag.interval is not None else self.interval

    def poll_intervals(self) -> tuple[float, ...]:
        return tuple(sorted({self.interval_of(t) for t in self.tags} or {self.interval}))

    def poll_groups(self) -> tuple[tuple[float, int], ...]:
        readings = Counter(self.interval_of(t) for t in self.tags_of(self.machine))
        return tuple(sorted(readings.items()))

    def machine_refs(self) -> Iterator[tuple[Loc, str]]:
        yield ("machine",), self.machine

    def tag_places(self) -> Iterator[tuple[Loc, str, str]]:
        for i, tag in enumerate(self.tags):
            yield ("tags", i), self.machine, tag.name


def element_names(tag: OpcUaTag) -> tuple[str, ...]:
    """The agent tag names of a tag: itself, or `name[0]` .. `name[n-1]` for a declared array."""
    if tag.array_length is None:
        return (tag.name,)
    return tuple(f"{tag.name}[{i}]" for i in range(tag.array_length))

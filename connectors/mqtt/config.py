"""Config model of the MQTT sink (Unified Namespace topics), and the broker keys Sparkplug shares.

No MQTT client library is imported here: `lineside validate` must stay light.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, field_validator, model_validator

from agent.config import STRICT, ConfigPath, Credentials, Name, key_error
from agent.duration import Duration, PositiveDuration


class Tls(BaseModel):
    """TLS towards the broker; without `ca` the system's trust store is used."""

    model_config = STRICT

    ca: ConfigPath | None = None
    cert: ConfigPath | None = None  # client certificate, for brokers that want one
    key: ConfigPath | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _cert_and_key(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise key_error("key" if self.key is None else "cert", "give both cert and key")
        return self


class Broker(Credentials):
    """Where an MQTT broker is and how to log in."""

    name: Name
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    tls: Tls | None = None
    client_id: str | None = None

    @property
    def endpoint(self) -> str:
        scheme = "mqtts" if self.tls is not None else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"


class MqttSinkConfig(Broker):
    type: Literal["mqtt"]
    topic_prefix: str = "lineside"  # topics: <prefix>/<site>/<area>/<line>/<machine>/...
    qos: Literal[0, 1] = 1
    retain_last: bool = False  # retain the last value of each tag for late subscribers
    # Telemetry as one columnar message per machine and send (topic .../telemetry/_batch):
    # "auto" for a backlog (a send holding historical records or at least batch_min_records),
    # "always", or "never" (one message per record and machine, as live data goes).
    batch: Literal["auto", "always", "never"] = "auto"
    batch_min_records: Annotated[int, Field(ge=1)] = 100
    # The value column of a batch message: JSON numbers, or base64 of the little-endian
    # float32 (when no value loses precision; else float64) or float64 column (README.md).
    value_encoding: Literal["json", "f32le-base64", "f64le-base64"] = "json"
    # The fleet view (README.md, "Fleet view"): a retained status message on
    # <prefix>/<site>/_agent/<agent_id>/status this often, on a connection of its own whose
    # Will marks the agent offline; "0s" turns it off.
    status_interval: Duration = 5.0
    # Seconds between pings on an idle connection; the broker gives up on a silent client
    # after 1.5 times this, and then publishes its Will (the status turns offline).
    keepalive: PositiveDuration = 30.0

    @field_validator("keepalive")
    @classmethod
    def _whole_seconds(cls, value: float) -> float:
        if value < 1 or value != int(value) or value > 65535:
            raise ValueError("the MQTT keepalive is whole seconds, from 1s to 65535s")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
            raise ValueError(
                f"a topic prefix has no wildcards (+ #) and no leading or trailing '/', "
                f"got {value!r}"
            )
        return value

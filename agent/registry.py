"""Which connector types exist: type name → config model and runtime class, as import paths.

Adding a connector is a folder under `connectors/` plus one line here. Both halves are import
paths loaded on demand, so reading a config imports the (protocol-free) config models only and
never pymodbus, asyncua or an MQTT client. A connector whose library comes with an extra names it:
without the extra installed, its runtime class raises `MissingExtra` (one line: what to install).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from types import MappingProxyType

from pydantic import BaseModel

from agent.extras import needs


@dataclass(frozen=True, slots=True)
class Connector:
    """Import paths (`module:attribute`) of a connector's config model and runtime class, and
    the extra its runtime's library comes with (None: the core has it), under what name."""

    config_model: str
    runtime: str
    extra: str | None = None
    feature: str = ""


SOURCES: Mapping[str, Connector] = MappingProxyType(
    {
        "modbus_tcp": Connector(
            "connectors.modbus.config:ModbusTcpSourceConfig",
            runtime="connectors.modbus.tcp_source:ModbusTcpSource",
        ),
        "modbus_rtu": Connector(
            "connectors.modbus.config:ModbusRtuSourceConfig",
            runtime="connectors.modbus.rtu_source:ModbusRtuSource",
        ),
        "mc": Connector(
            "connectors.mc.config:McSourceConfig", runtime="connectors.mc.source:McSource"
        ),
        "opcua": Connector(
            "connectors.opcua.config:OpcUaSourceConfig",
            runtime="connectors.opcua.source:OpcUaSource",
            extra="opcua",
            feature="OPC UA",
        ),
        "s7": Connector(
            "connectors.s7.config:S7SourceConfig",
            runtime="connectors.s7.source:S7Source",
            extra="s7",
            feature="Siemens S7",
        ),
    }
)

SINKS: Mapping[str, Connector] = MappingProxyType(
    {
        "mqtt": Connector(
            "connectors.mqtt.config:MqttSinkConfig", runtime="connectors.mqtt.sink:MqttSink"
        ),
        "sparkplug": Connector(
            "connectors.sparkplug.config:SparkplugSinkConfig",
            runtime="connectors.sparkplug.sink:SparkplugSink",
        ),
        "http": Connector(
            "connectors.http.config:HttpSinkConfig", runtime="connectors.http.sink:HttpSink"
        ),
    }
)


def _load(path: str) -> object:
    module, _, attribute = path.partition(":")
    return getattr(import_module(module), attribute)


def _find(type_name: str) -> tuple[str, Connector]:
    if type_name in SOURCES:
        return "source", SOURCES[type_name]
    if type_name in SINKS:
        return "sink", SINKS[type_name]
    known = ", ".join(sorted([*SOURCES, *SINKS]))
    raise KeyError(f"unknown connector type {type_name!r} (known: {known})")


def config_model(type_name: str) -> type[BaseModel]:
    """The pydantic model that validates a `[[sources]]` or `[[sinks]]` entry of this type."""
    model = _load(_find(type_name)[1].config_model)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise TypeError(f"{_find(type_name)[1].config_model} is not a pydantic model")
    return model


def runtime_class(type_name: str) -> type:
    """The class that runs a source or sink of this type (imports its protocol library)."""
    connector = _find(type_name)[1]
    if connector.extra is None:
        runtime = _load(connector.runtime)
    else:
        with needs(connector.feature, connector.extra):
            runtime = _load(connector.runtime)
    if not isinstance(runtime, type):
        raise TypeError(f"{connector.runtime} is not a class")
    return runtime

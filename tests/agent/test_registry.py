"""The connector registry: every type names a real config model; runtimes load on demand."""

import pytest
from pydantic import BaseModel

from agent import registry


@pytest.mark.parametrize("type_name", [*registry.SOURCES, *registry.SINKS])
def test_every_config_model_imports_and_matches_its_type(type_name: str) -> None:
    model = registry.config_model(type_name)
    assert issubclass(model, BaseModel)
    # The `type` field is the discriminator: its one allowed value is the registry key.
    assert model.model_fields["type"].annotation.__args__ == (type_name,)  # type: ignore[union-attr]
    assert model.model_config.get("extra") == "forbid"
    assert model.model_config.get("frozen") is True


def test_source_and_sink_names_do_not_collide() -> None:
    assert not set(registry.SOURCES) & set(registry.SINKS)


@pytest.mark.parametrize("type_name", [*registry.SOURCES, *registry.SINKS])
def test_every_runtime_imports_as_a_class(type_name: str) -> None:
    runtime = registry.runtime_class(type_name)
    assert isinstance(runtime, type)
    assert runtime.__module__.startswith("connectors.")


def test_unknown_type() -> None:
    with pytest.raises(KeyError) as caught:
        registry.config_model("kafka")
    assert caught.value.args[0] == (
        "unknown connector type 'kafka' (known: http, mc, modbus_rtu, modbus_tcp, mqtt, "
        "opcua, s7, sparkplug)"
    )
    with pytest.raises(KeyError):
        registry.runtime_class("kafka")


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        registry.SOURCES["x"] = registry.Connector("a:b")  # type: ignore[index, call-arg]

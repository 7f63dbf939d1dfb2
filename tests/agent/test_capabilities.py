"""What a connector can do is declared on protocols (`agent/source.py`, `agent/sink.py`): the
agent asks those, never a connector's type name or its config's attributes."""

from agent.sink import HasBackground, IndependentStreams, SendsAhead
from agent.source import PlansReads, WritesToPlc, WriteTarget
from connectors.http.sink import HttpSink
from connectors.mc.source import McSource
from connectors.modbus.config import ModbusRtuSourceConfig, ModbusTcpSourceConfig
from connectors.modbus.tcp_source import ModbusTcpSource
from connectors.mqtt.sink import MqttSink
from connectors.opcua.source import OpcUaSource
from connectors.s7.source import S7Source
from connectors.sparkplug.sink import SparkplugSink

UNITS = [
    {"unit_id": 3, "machine": "press1", "tags": [{"name": "a", "address": "hr:0"}]},
    {"unit_id": 4, "machine": "press2", "tags": [{"name": "a", "address": "hr:0"}]},
]


def test_a_modbus_tcp_source_says_where_a_machines_verdicts_are_written() -> None:
    tcp = ModbusTcpSourceConfig.model_validate(
        {"name": "plc", "type": "modbus_tcp", "host": "10.0.0.5", "port": 5020, "units": UNITS}
    )
    assert isinstance(tcp, WritesToPlc)
    assert tcp.write_target("press2") == WriteTarget("10.0.0.5", 5020, 4)
    assert tcp.write_target("mill1") is None
    rtu = ModbusRtuSourceConfig.model_validate(
        {"name": "bus", "type": "modbus_rtu", "port": "/dev/null", "units": UNITS}
    )
    assert not isinstance(rtu, WritesToPlc)  # the agent writes over TCP only


def test_sinks_and_sources_declare_their_capabilities() -> None:
    assert issubclass(ModbusTcpSource, PlansReads)
    assert not issubclass(OpcUaSource, PlansReads)
    assert issubclass(McSource, PlansReads)  # `lineside plan` shows its requests per unit
    assert not issubclass(S7Source, PlansReads)  # multi-reads per CPU: `plan` has its own rows
    assert MqttSink.concurrent_sends == 2 and isinstance(MqttSink.__new__(MqttSink), SendsAhead)
    assert isinstance(HttpSink.__new__(HttpSink), IndependentStreams)
    assert isinstance(MqttSink.__new__(MqttSink), HasBackground)
    assert not isinstance(SparkplugSink.__new__(SparkplugSink), SendsAhead | IndependentStreams)

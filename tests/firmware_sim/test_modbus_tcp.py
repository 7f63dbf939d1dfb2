"""The Modbus TCP server on a real socket, with pymodbus's client as the independent peer."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage, Table
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer

pytestmark = pytest.mark.timeout(20)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _image(base: int) -> RegisterImage:
    image = RegisterImage(size=200)
    for i in range(200):
        image.set_registers(Table.HOLDING_REGISTERS, i, (base + i).to_bytes(2, "big"))
        image.set_registers(Table.INPUT_REGISTERS, i, (base + 500 + i).to_bytes(2, "big"))
        image.set_bit(Table.COILS, i, i % 3 == 0)
        image.set_bit(Table.DISCRETE_INPUTS, i, i % 2 == 1)
    return image


@pytest.fixture
async def server() -> AsyncIterator[ModbusTcpServer]:
    units = {1: Unit(_image(1000), Faults(clock=_Clock())), 2: Unit(_image(3000))}
    srv = ModbusTcpServer(units)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client(server: ModbusTcpServer) -> AsyncIterator[AsyncModbusTcpClient]:
    cl = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.3, retries=0)
    assert await cl.connect()
    yield cl
    cl.close()


def _adu(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


async def _raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """True if the server closed the connection (EOF or reset) within the timeout."""
    try:
        return await asyncio.wait_for(reader.read(1), 1.0) == b""
    except ConnectionResetError:
        return True


async def test_reads_of_each_table_match_the_image(client: AsyncModbusTcpClient) -> None:
    rr = await client.read_holding_registers(10, count=3, device_id=1)
    assert rr.registers == [1010, 1011, 1012]
    rr = await client.read_holding_registers(10, count=3, device_id=2)
    assert rr.registers == [3010, 3011, 3012]
    rr = await client.read_input_registers(0, count=2, device_id=1)
    assert rr.registers == [1500, 1501]
    rr = await client.read_coils(0, count=7, device_id=1)
    assert rr.bits[:7] == [True, False, False, True, False, False, True]
    rr = await client.read_discrete_inputs(0, count=4, device_id=1)
    assert rr.bits[:4] == [False, True, False, True]
    rr = await client.read_holding_registers(75, count=125, device_id=1)
    assert rr.registers == list(range(1075, 1200))


async def test_writes_land_in_the_image(
    server: ModbusTcpServer, client: AsyncModbusTcpClient
) -> None:
    image = server.units[1].image
    assert not (await client.write_register(4, 0xBEEF, device_id=1)).isError()
    assert image.registers(Table.HOLDING_REGISTERS, 4, 1) == b"\xbe\xef"
    assert not (await client.write_registers(20, [1, 2, 3], device_id=1)).isError()
    assert image.registers(Table.HOLDING_REGISTERS, 20, 3) == bytes.fromhex("000100020003")
    assert not (await client.write_coil(1, True, device_id=1)).isError()
    assert image.coils[1] == 1
    assert not (await client.write_coils(10, [True, False, True], device_id=1)).isError()
    assert list(image.coils[10:13]) == [1, 0, 1]
    assert server.units[2].image.coils[1] == 0  # the other unit is untouched


async def test_exceptions_reach_the_client(
    server: ModbusTcpServer, client: AsyncModbusTcpClient
) -> None:
    rr = await client.read_holding_registers(199, count=2, device_id=1)
    assert rr.isError() and rr.exception_code == 2
    rr = await client.read_holding_registers(0, count=1, device_id=9)  # no such unit
    assert rr.isError() and rr.exception_code == 0x0B
    # pymodbus refuses to send 126 registers itself, so that request goes out raw
    reader, writer = await _raw(server.port)
    writer.write(_adu(3, 1, bytes.fromhex("03 0000 007E")))
    assert await asyncio.wait_for(reader.readexactly(9), 1.0) == _adu(3, 1, b"\x83\x03")
    writer.close()
    assert server.stats.exceptions == 3


async def test_pipelined_requests_are_answered_in_order(server: ModbusTcpServer) -> None:
    reader, writer = await _raw(server.port)
    requests = [_adu(7 + i, 1, bytes.fromhex(f"03 00{i:02X} 0001")) for i in range(5)]
    writer.write(b"".join(requests))
    for i in range(5):
        answer = await asyncio.wait_for(reader.readexactly(11), 1.0)
        assert answer == _adu(7 + i, 1, bytes.fromhex("03 02") + (1000 + i).to_bytes(2, "big"))
    writer.close()


async def test_a_request_split_across_writes(server: ModbusTcpServer) -> None:
    reader, writer = await _raw(server.port)
    request = _adu(42, 2, bytes.fromhex("03 0001 0002"))
    writer.write(request[:4])
    await writer.drain()
    await asyncio.sleep(0.02)  # let the first part arrive alone: the server must wait
    writer.write(request[4:] + request[:9])  # the rest, plus the start of the next
    await writer.drain()
    answer = await asyncio.wait_for(reader.readexactly(13), 1.0)
    assert answer == _adu(42, 2, bytes.fromhex("03 04 0BB9 0BBA"))
    writer.write(request[9:])
    assert await asyncio.wait_for(reader.readexactly(13), 1.0) == answer
    writer.close()


@pytest.mark.parametrize(
    "garbage",
    [
        bytes.fromhex("0001 0001 0006 01 03 0000 0001"),  # protocol id 1
        bytes.fromhex("0001 0000 0000 01"),  # length 0
        bytes.fromhex("0001 0000 0001 01"),  # length 1: a unit id and no function code
        bytes.fromhex("0001 0000 00FF 01") + bytes(254),  # length 255
        b"GET / HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_request_closes_only_that_connection(
    server: ModbusTcpServer, client: AsyncModbusTcpClient, garbage: bytes
) -> None:
    reader, writer = await _raw(server.port)
    writer.write(garbage)
    assert await _closed(reader)
    assert server.stats.malformed == 1
    rr = await client.read_holding_registers(0, count=1, device_id=1)
    assert rr.registers == [1000]
    writer.close()


async def test_refuse_closes_new_connections(server: ModbusTcpServer) -> None:
    for unit in server.units.values():
        unit.faults.set("refuse")
    reader, writer = await _raw(server.port)
    assert await _closed(reader)
    writer.close()
    cl = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.3, retries=0)
    await cl.connect()
    with pytest.raises(ModbusException):
        await cl.read_holding_registers(0, count=1, device_id=1)
    cl.close()
    assert server.stats.refused >= 2
    for unit in server.units.values():
        unit.faults.clear()
    reader, writer = await _raw(server.port)
    writer.write(_adu(1, 1, bytes.fromhex("03 0000 0001")))
    assert await asyncio.wait_for(reader.readexactly(11), 1.0)
    writer.close()


async def test_drop_closes_the_connection_on_a_request(
    server: ModbusTcpServer, client: AsyncModbusTcpClient
) -> None:
    server.units[1].faults.set("drop")
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=1, device_id=1)
    assert server.stats.faults == 1
    reader, writer = await _raw(server.port)
    writer.write(
        _adu(1, 2, bytes.fromhex("03 0000 0001")) + _adu(2, 1, bytes.fromhex("03 0000 0001"))
    )
    # the answer for unit 2 goes out, then the request for unit 1 closes the connection
    assert (await asyncio.wait_for(reader.readexactly(11), 1.0))[-2:] == b"\x0b\xb8"
    assert await _closed(reader)
    writer.close()


async def test_slow_makes_the_client_time_out_then_answers_in_order(
    server: ModbusTcpServer, client: AsyncModbusTcpClient
) -> None:
    server.units[1].faults.set("slow", delay="500ms")
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=1, device_id=1)
    # On a raw socket the slow answer does arrive, and the next request waits behind it.
    server.units[1].faults.set("slow", delay="100ms")
    reader, writer = await _raw(server.port)
    writer.write(
        _adu(1, 1, bytes.fromhex("03 0000 0001")) + _adu(2, 2, bytes.fromhex("03 0000 0001"))
    )
    first = await asyncio.wait_for(reader.readexactly(11), 1.0)
    second = await asyncio.wait_for(reader.readexactly(11), 1.0)
    assert first[:2] == b"\x00\x01" and second[:2] == b"\x00\x02"
    writer.close()


async def test_exception_fault(server: ModbusTcpServer, client: AsyncModbusTcpClient) -> None:
    server.units[1].faults.apply({"mode": "exception", "code": 6})
    rr = await client.read_holding_registers(0, count=1, device_id=1)
    assert rr.isError() and rr.exception_code == 6
    rr = await client.read_holding_registers(0, count=1, device_id=2)
    assert rr.registers == [3000]  # faults are per unit


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_malformed_fault_is_an_error_for_the_client(
    server: ModbusTcpServer, seed: int
) -> None:
    server.units[2].faults.apply({"mode": "malformed", "seed": seed})
    cl = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.3, retries=0)
    await cl.connect()
    try:
        rr = await cl.read_holding_registers(0, count=1, device_id=2)
    except ModbusException:
        pass
    else:
        assert rr.isError()
    finally:
        cl.close()


async def test_malformed_fault_on_the_wire(server: ModbusTcpServer) -> None:
    server.units[2].faults.set("malformed")
    reader, writer = await _raw(server.port)
    good = _adu(5, 2, bytes.fromhex("03 02 0BB8"))
    writer.write(_adu(5, 2, bytes.fromhex("03 0000 0001")))
    answer = await asyncio.wait_for(reader.read(100), 1.0)
    assert answer and answer != good
    writer.close()


async def test_truncated_sends_part_then_nothing(
    server: ModbusTcpServer, client: AsyncModbusTcpClient
) -> None:
    server.units[1].faults.set("truncated")
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=10, device_id=1)
    reader, writer = await _raw(server.port)
    writer.write(_adu(9, 1, bytes.fromhex("03 0000 000A")))
    part = await asyncio.wait_for(reader.read(100), 1.0)
    assert 0 < len(part) < 29
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(100), 0.2)
    writer.close()


async def test_reboot_drops_connections_then_comes_back(
    server: ModbusTcpServer, client: AsyncModbusTcpClient
) -> None:
    unit = server.units[1]
    clock = unit.faults._clock
    assert isinstance(clock, _Clock)
    assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [1000]
    resets: list[int] = []
    unit.faults.add_reboot_listener(lambda: resets.append(1))  # what the plant would do
    reader, writer = await _raw(server.port)  # a connection that never addressed unit 1
    unit.faults.set("reboot", down_time="5s")
    assert resets == [1]
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=1, device_id=1)
    # During the down time, requests for the unit close the connection; unit 2 still answers.
    writer.write(_adu(1, 2, bytes.fromhex("03 0000 0001")))
    assert (await asyncio.wait_for(reader.readexactly(11), 1.0))[-2:] == b"\x0b\xb8"
    writer.write(_adu(2, 1, bytes.fromhex("03 0000 0001")))
    assert await _closed(reader)
    writer.close()
    clock.t += 5.0
    cl = AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.3, retries=0)
    assert await cl.connect()
    assert (await cl.read_holding_registers(0, count=1, device_id=1)).registers == [1000]
    cl.close()


async def test_single_unit_server_refuses_during_reboot() -> None:
    clock = _Clock()
    srv = ModbusTcpServer({1: Unit(_image(0), Faults(clock=clock))})
    port = await srv.start()
    try:
        reader, writer = await _raw(port)
        srv.units[1].faults.set("reboot", down_time="1s")
        assert await _closed(reader)  # dropped by the reboot, without sending anything
        writer.close()
        reader, writer = await _raw(port)
        assert await _closed(reader)  # refused while down
        writer.close()
        clock.t += 1.0
        reader, writer = await _raw(port)
        writer.write(_adu(1, 1, bytes.fromhex("03 0000 0001")))
        assert await asyncio.wait_for(reader.readexactly(11), 1.0)
        writer.close()
        assert srv.stats.refused == 1
    finally:
        await srv.stop()


async def test_stop_closes_connections_and_listener() -> None:
    srv = ModbusTcpServer({1: Unit(_image(0))})
    port = await srv.start()
    reader, writer = await _raw(port)
    await srv.stop()
    assert await _closed(reader)
    writer.close()
    with pytest.raises(OSError):
        await _raw(port)


def test_unit_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="unit id"):
        ModbusTcpServer({256: Unit(_image(0))})

"""The Modbus RTU server on a real pty pair: pymodbus's serial client and raw frames."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator, Iterator

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ModbusException

from firmware_sim.image import RegisterImage, Table
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_rtu import ModbusRtuServer, silent_interval, with_crc

pytestmark = pytest.mark.timeout(20)


def _image(base: int) -> RegisterImage:
    image = RegisterImage(size=100)
    for i in range(100):
        image.set_registers(Table.HOLDING_REGISTERS, i, (base + i).to_bytes(2, "big"))
        image.set_registers(Table.INPUT_REGISTERS, i, (base + 500 + i).to_bytes(2, "big"))
        image.set_bit(Table.COILS, i, i % 2 == 0)
    return image


@pytest.fixture
async def server() -> AsyncIterator[ModbusRtuServer]:
    srv = ModbusRtuServer({1: Unit(_image(100)), 2: Unit(_image(200)), 17: Unit(_image(1700))})
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def client(server: ModbusRtuServer) -> AsyncIterator[AsyncModbusSerialClient]:
    cl = AsyncModbusSerialClient(server.path, baudrate=19200, timeout=0.3, retries=0)
    assert await cl.connect()
    yield cl
    cl.close()


@pytest.fixture
def bus(server: ModbusRtuServer) -> Iterator[int]:
    """The slave side opened raw, as a master that writes hand-made frames."""
    fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    yield fd
    os.close(fd)


async def _read(fd: int, n: int, wait: float = 0.5) -> bytes:
    """Up to `n` bytes from `fd`, or what arrived within `wait` seconds."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    done = loop.create_future()

    def on_readable() -> None:
        try:
            got.extend(os.read(fd, n - len(got)))
        except BlockingIOError:
            return
        if len(got) >= n and not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await asyncio.wait_for(done, wait)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)
    return bytes(got)


def test_silent_interval() -> None:
    assert silent_interval(9600) == pytest.approx(0.00401, abs=1e-5)
    assert silent_interval(19200) == pytest.approx(0.002005, abs=1e-6)
    assert silent_interval(115200) == 0.00175
    with pytest.raises(ValueError):
        silent_interval(0)


def test_unit_ids_are_checked() -> None:
    for bad in (0, 248):
        with pytest.raises(ValueError, match=r"1\.\.247"):
            ModbusRtuServer({bad: Unit(_image(0))})


async def test_several_units_on_one_bus(client: AsyncModbusSerialClient) -> None:
    for unit_id, base in ((1, 100), (2, 200), (17, 1700)):
        rr = await client.read_holding_registers(3, count=4, device_id=unit_id)
        assert rr.registers == [base + 3, base + 4, base + 5, base + 6]
    rr = await client.read_input_registers(0, count=2, device_id=2)
    assert rr.registers == [700, 701]
    rr = await client.read_coils(0, count=3, device_id=17)
    assert rr.bits[:3] == [True, False, True]


async def test_writes_and_exceptions(
    server: ModbusRtuServer, client: AsyncModbusSerialClient
) -> None:
    assert not (await client.write_registers(10, [7, 8], device_id=2)).isError()
    assert server.units[2].image.registers(Table.HOLDING_REGISTERS, 10, 2) == bytes.fromhex(
        "00070008"
    )
    assert server.units[1].image.registers(Table.HOLDING_REGISTERS, 10, 1) == b"\x00\x6e"
    rr = await client.read_holding_registers(99, count=2, device_id=1)
    assert rr.isError() and rr.exception_code == 2
    assert server.stats.exceptions == 1


async def test_raw_frame_is_answered_with_crc(server: ModbusRtuServer, bus: int) -> None:
    os.write(bus, with_crc(bytes.fromhex("11 03 0000 0002")))
    assert await _read(bus, 9) == with_crc(bytes.fromhex("11 03 04 06A4 06A5"))


async def test_bad_crc_is_ignored(server: ModbusRtuServer, bus: int) -> None:
    frame = bytearray(with_crc(bytes.fromhex("01 03 0000 0001")))
    frame[-1] ^= 0x01
    os.write(bus, bytes(frame))
    assert await _read(bus, 7, wait=0.2) == b""
    assert server.stats.bad_crc == 1
    os.write(bus, with_crc(bytes.fromhex("01 03 0000 0001")))
    assert await _read(bus, 7) == with_crc(bytes.fromhex("01 03 02 0064"))


async def test_broadcast_write_is_applied_and_not_answered(
    server: ModbusRtuServer, bus: int
) -> None:
    os.write(bus, with_crc(bytes.fromhex("00 06 0005 ABCD")))
    assert await _read(bus, 8, wait=0.2) == b""
    for unit in server.units.values():
        assert unit.image.registers(Table.HOLDING_REGISTERS, 5, 1) == b"\xab\xcd"
    # a broadcast read is not a thing: ignored, nothing changes
    os.write(bus, with_crc(bytes.fromhex("00 03 0000 0001")))
    assert await _read(bus, 7, wait=0.2) == b""
    assert server.stats.broadcasts == 1


async def test_unknown_unit_gets_no_answer(server: ModbusRtuServer, bus: int) -> None:
    os.write(bus, with_crc(bytes.fromhex("05 03 0000 0001")))
    assert await _read(bus, 7, wait=0.2) == b""
    assert server.stats.unanswered == 1


async def test_silence_discards_a_partial_frame(server: ModbusRtuServer, bus: int) -> None:
    frame = with_crc(bytes.fromhex("02 03 0000 0001"))
    os.write(bus, frame[:4])
    await asyncio.sleep(0.05)  # far longer than t3.5 (2 ms): the partial frame is dropped
    os.write(bus, frame[4:])
    assert await _read(bus, 7, wait=0.2) == b""
    assert server.stats.discarded >= 1
    os.write(bus, frame)
    assert await _read(bus, 7) == with_crc(bytes.fromhex("02 03 02 00C8"))


async def test_unknown_function_ends_at_silence_and_is_an_exception(
    server: ModbusRtuServer, bus: int
) -> None:
    os.write(bus, with_crc(bytes.fromhex("01 2B 0E 01 00")))
    assert await _read(bus, 5) == with_crc(bytes.fromhex("01 AB 01"))


async def test_answer_waits_for_the_silent_interval() -> None:
    srv = ModbusRtuServer({1: Unit(_image(0))}, baudrate=1200)  # t3.5 = 32 ms
    path = await srv.start()
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    try:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        os.write(fd, with_crc(bytes.fromhex("01 03 0000 0001")))
        assert len(await _read(fd, 7)) == 7
        assert loop.time() - sent >= srv.t35
    finally:
        os.close(fd)
        await srv.stop()


async def test_faults_per_unit(server: ModbusRtuServer, client: AsyncModbusSerialClient) -> None:
    faults = server.units[1].faults
    faults.set("exception", code=4)
    rr = await client.read_holding_registers(0, count=1, device_id=1)
    assert rr.isError() and rr.exception_code == 4
    assert (await client.read_holding_registers(0, count=1, device_id=2)).registers == [200]
    for mode in ("drop", "refuse", "truncated"):
        faults.set(mode)
        with pytest.raises(ModbusException):
            await client.read_holding_registers(0, count=1, device_id=1)
    faults.set("slow", delay="1s")
    with pytest.raises(ModbusException):
        await client.read_holding_registers(0, count=1, device_id=1)
    faults.clear()


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_malformed_answers(server: ModbusRtuServer, bus: int, seed: int) -> None:
    server.units[1].faults.apply({"mode": "malformed", "seed": seed})
    os.write(bus, with_crc(bytes.fromhex("01 03 0000 0001")))
    answer = await _read(bus, 7)
    assert len(answer) == 7 and answer != with_crc(bytes.fromhex("01 03 02 0064"))


async def test_slow_answer_arrives_late(server: ModbusRtuServer, bus: int) -> None:
    server.units[2].faults.set("slow", delay="150ms")
    os.write(bus, with_crc(bytes.fromhex("02 03 0000 0001")))
    assert await _read(bus, 7, wait=0.1) == b""
    assert await _read(bus, 7, wait=0.5) == with_crc(bytes.fromhex("02 03 02 00C8"))

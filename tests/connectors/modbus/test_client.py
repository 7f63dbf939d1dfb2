"""The lean Modbus TCP client on real sockets: the simulator's server, pymodbus's server as an
independent peer, and a raw socket server that answers exactly the bytes a test chooses."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer as PymodbusTcpServer

from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from connectors.modbus.client import ModbusTcpClient
from connectors.modbus.pdu import exception_message
from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage, Table
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer

pytestmark = pytest.mark.timeout(20)

LIMIT = 0.3  # seconds: every read here has a short hard limit


def _image(base: int) -> RegisterImage:
    image = RegisterImage(size=300)
    for i in range(300):
        image.set_registers(Table.HOLDING_REGISTERS, i, (base + i).to_bytes(2, "big"))
        image.set_registers(Table.INPUT_REGISTERS, i, (base + 500 + i).to_bytes(2, "big"))
        image.set_bit(Table.COILS, i, i % 3 == 0)
        image.set_bit(Table.DISCRETE_INPUTS, i, i % 2 == 1)
    return image


def _words(payload: bytes) -> list[int]:
    return [int.from_bytes(payload[i : i + 2], "big") for i in range(0, len(payload), 2)]


def _bits(payload: bytes, count: int) -> list[bool]:
    return [bool(payload[i // 8] >> (i % 8) & 1) for i in range(count)]


@pytest.fixture
async def sim() -> AsyncIterator[ModbusTcpServer]:
    units = {1: Unit(_image(1000), Faults()), 2: Unit(_image(3000), Faults())}
    server = ModbusTcpServer(units)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(sim: ModbusTcpServer) -> AsyncIterator[ModbusTcpClient]:
    cl = ModbusTcpClient("127.0.0.1", sim.port, max_in_flight=4, connect_timeout=1.0)
    await cl.connect()
    yield cl
    cl.close()


async def test_reads_every_table(client: ModbusTcpClient) -> None:
    assert _words(await client.read(1, 3, 10, 3, LIMIT)) == [1010, 1011, 1012]
    assert _words(await client.read(2, 3, 10, 3, LIMIT)) == [3010, 3011, 3012]
    assert _words(await client.read(1, 4, 0, 2, LIMIT)) == [1500, 1501]
    assert _bits(await client.read(1, 1, 0, 7, LIMIT), 7) == [i % 3 == 0 for i in range(7)]
    assert _bits(await client.read(1, 2, 5, 11, LIMIT), 11) == [i % 2 == 1 for i in range(5, 16)]
    assert _words(await client.read(1, 3, 75, 125, LIMIT)) == list(range(1075, 1200))
    assert len(await client.read(1, 1, 0, 2000 - 1800, LIMIT)) == 25


async def test_pipelined_reads_match_their_requests(
    sim: ModbusTcpServer, client: ModbusTcpClient
) -> None:
    starts = list(range(0, 200, 7))
    answers = await asyncio.gather(*(client.read(1 + s % 2, 3, s, 5, 2.0) for s in starts))
    for start, payload in zip(starts, answers, strict=True):
        base = 1000 if start % 2 == 0 else 3000
        assert _words(payload) == [base + start + i for i in range(5)]
    assert client.bytes_out == 12 * len(starts)
    assert client.bytes_in == sum(9 + 10 for _ in starts)


async def test_requests_beyond_max_in_flight_wait_their_turn(sim: ModbusTcpServer) -> None:
    # With one slot, ten concurrent reads still all succeed, one after the other.
    client = ModbusTcpClient("127.0.0.1", sim.port, max_in_flight=1)
    await client.connect()
    answers = await asyncio.gather(*(client.read(1, 3, i, 1, 2.0) for i in range(10)))
    assert [_words(a)[0] for a in answers] == list(range(1000, 1010))
    client.close()


async def test_exception_response_is_a_device_error_with_its_name(
    sim: ModbusTcpServer, client: ModbusTcpClient
) -> None:
    with pytest.raises(DeviceError, match="illegal data address") as caught:
        await client.read(1, 3, 299, 2, LIMIT)
    assert caught.value.code == 2
    with pytest.raises(DeviceError, match="gateway target device") as caught:
        await client.read(9, 3, 0, 1, LIMIT)  # no such unit behind the gateway
    assert caught.value.code == 0x0B
    sim.units[1].faults.set("exception", code=6)
    with pytest.raises(DeviceError, match="server device busy") as caught:
        await client.read(1, 4, 0, 1, LIMIT)
    assert caught.value.code == 6
    sim.units[1].faults.clear()
    assert _words(await client.read(1, 3, 0, 1, LIMIT)) == [1000]  # the connection is fine


def test_exception_names_follow_the_standard() -> None:
    assert exception_message(3, 0x0A) == ("exception 0A (gateway path unavailable) to function 03")
    assert "unknown exception code" in exception_message(3, 0x42)


async def test_slow_answer_times_out_within_the_limit_then_is_dropped(
    sim: ModbusTcpServer, client: ModbusTcpClient
) -> None:
    sim.units[1].faults.set("slow", delay="1.5s")
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match=r"within 0\.15s"):
        await client.read(1, 3, 0, 1, 0.15)
    assert time.monotonic() - started < 1.0  # gave up long before the answer came
    sim.units[1].faults.clear()
    # The late answer arrives before this one; it is recognised by its transaction id.
    assert _words(await client.read(1, 3, 1, 1, 5.0)) == [1001]
    assert client.connected


async def test_malformed_answers_raise_protocol_error_and_close(sim: ModbusTcpServer) -> None:
    for kind in range(3):  # bad protocol id, bad length, bad function code
        # The simulator draws the kind of garbage from its seeded RNG: pick a seed that gives it.
        seed = next(s for s in range(100) if random.Random(s).randrange(3) == kind)
        sim.units[1].faults.apply({"mode": "malformed", "seed": seed})
        client = ModbusTcpClient("127.0.0.1", sim.port, max_in_flight=2)
        await client.connect()
        with pytest.raises(ProtocolError, match="malformed answer"):
            await client.read(1, 3, 0, 4, LIMIT)
        assert not client.connected
        with pytest.raises(ConnectError, match="after a malformed answer"):
            await client.read(1, 3, 0, 4, LIMIT)
        sim.units[1].faults.clear()
        await client.connect()  # reconnecting gives a clean stream again
        assert _words(await client.read(1, 3, 0, 1, LIMIT)) == [1000]
        client.close()


async def test_truncated_answer_times_out_and_closes(
    sim: ModbusTcpServer, client: ModbusTcpClient
) -> None:
    sim.units[1].faults.set("truncated")
    with pytest.raises(RequestTimeout):
        await client.read(1, 3, 0, 10, LIMIT)
    assert not client.connected  # half a frame is left: the stream cannot be framed


async def test_refused_and_dropped_connections(sim: ModbusTcpServer) -> None:
    for faults in (sim.units[1].faults, sim.units[2].faults):
        faults.set("refuse")
    client = ModbusTcpClient("127.0.0.1", sim.port)
    await client.connect()  # accepted, then closed at once by the server
    with pytest.raises(ConnectError):
        await client.read(1, 3, 0, 1, LIMIT)
    for faults in (sim.units[1].faults, sim.units[2].faults):
        faults.clear()
    sim.units[1].faults.set("drop")
    client = ModbusTcpClient("127.0.0.1", sim.port, max_in_flight=3)
    await client.connect()
    results = await asyncio.gather(
        *(client.read(1, 3, i, 1, LIMIT) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectError) for r in results)


async def test_nobody_listening_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        await ModbusTcpClient("127.0.0.1", port).connect()
    with pytest.raises(ConnectError, match="not connected"):
        await ModbusTcpClient("127.0.0.1", port).read(1, 3, 0, 1, LIMIT)


async def test_bad_arguments_are_refused_before_sending(client: ModbusTcpClient) -> None:
    for args in [(1, 5, 0, 1), (1, 3, 0, 126), (1, 1, 0, 2001), (1, 3, 65535, 2), (256, 3, 0, 1)]:
        with pytest.raises(ValueError):
            await client.read(*args, LIMIT)
    with pytest.raises(ValueError):
        ModbusTcpClient("h", 1, max_in_flight=0)


# -- a raw server that answers what the test says ------------------------------------------

Answer = Callable[[int, int, bytes], bytes]  # (tid, unit, request pdu) -> bytes to send


@contextlib.asynccontextmanager
async def _raw_server(answer: Answer) -> AsyncIterator[int]:
    """Serve `answer` on a free port; on exit, wait until every connection has ended."""
    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                writer.write(answer(tid, unit, pdu))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        # The client has closed its end by now: each handler sees EOF and returns.
        await asyncio.wait_for(asyncio.gather(*handlers), 2.0)


def _adu(tid: int, unit: int, pdu: bytes, protocol: int = 0, extra_len: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1 + extra_len, unit) + pdu


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (lambda t, u, p: _adu(t + 1, u, b"\x03\x02\x00\x07"), "unexpected transaction id"),
        (lambda t, u, p: _adu(t, u + 1, b"\x03\x02\x00\x07"), "answer from unit"),
        (lambda t, u, p: _adu(t, u, b"\x04\x02\x00\x07"), "function code 4"),
        (lambda t, u, p: _adu(t, u, b"\x03\x04\x00\x07\x00\x08"), "length 7 does not fit"),
        (lambda t, u, p: _adu(t, u, b"\x03\x02\x00"), "length 4 does not fit"),
        (lambda t, u, p: _adu(t, u, b"\x03\x03\x00\x07"), "byte count 3"),
        (lambda t, u, p: _adu(t, u, b"\x83\x02\x00"), "length 4 does not fit"),
        (lambda t, u, p: _adu(t, u, b"\x03\x02\x00\x07", protocol=1), "protocol id 1"),
        (lambda t, u, p: _adu(t, u, b"\x03", extra_len=-1), "length 1 does not fit"),
        (lambda t, u, p: _adu(t, u, b"\x03\x02\x00\x07", extra_len=200), "length 205 does not fit"),
    ],
)
@pytest.mark.parametrize("way", ["read", "send"])
async def test_malformed_answers_from_a_raw_server(answer: Answer, problem: str, way: str) -> None:
    # `send` is the poll loop's way (its frames kept per request, its answers checked first).
    async with _raw_server(answer) as port:
        client = ModbusTcpClient("127.0.0.1", port)
        await client.connect()
        with pytest.raises(ProtocolError, match=problem):
            if way == "read":
                await client.read(1, 3, 0, 1, LIMIT)
            else:
                await client.send([(1, 3, 0, 1)])[0]
        assert not client.connected


async def test_answers_split_and_batched_across_segments() -> None:
    # The raw server answers every request in two writes: framing must not care.
    def answer(tid: int, unit: int, pdu: bytes) -> bytes:
        start = int.from_bytes(pdu[1:3], "big")
        return _adu(tid, unit, b"\x03\x02" + start.to_bytes(2, "big"))

    async with _raw_server(answer) as port:
        client = ModbusTcpClient("127.0.0.1", port, max_in_flight=8)
        await client.connect()
        got = await asyncio.gather(*(client.read(1, 3, i, 1, 2.0) for i in range(40)))
        assert [_words(g)[0] for g in got] == list(range(40))
        client.close()


# -- pymodbus's server as the independent peer ---------------------------------------------


async def _with_pymodbus_server(body: Callable[[int], Awaitable[None]]) -> None:
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [i % 3 == 0 for i in range(300)]),  # type: ignore[no-untyped-call]
        di=ModbusSequentialDataBlock(1, [i % 2 == 1 for i in range(300)]),  # type: ignore[no-untyped-call]
        hr=ModbusSequentialDataBlock(1, [1000 + i for i in range(300)]),  # type: ignore[no-untyped-call]
        ir=ModbusSequentialDataBlock(1, [1500 + i for i in range(300)]),  # type: ignore[no-untyped-call]
    )
    context = ModbusServerContext(devices={1: device}, single=False)
    server = PymodbusTcpServer(context, address=("127.0.0.1", 0))
    task = asyncio.create_task(server.serve_forever())
    try:
        for _ in range(200):
            transport = getattr(server, "transport", None)
            if transport is not None and transport.sockets:
                break
            await asyncio.sleep(0.01)  # pymodbus offers no "listening" event to wait on
        port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        await body(port)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()


async def test_against_pymodbus_server_fc01_to_fc04() -> None:
    async def body(port: int) -> None:
        client = ModbusTcpClient("127.0.0.1", port, max_in_flight=4)
        await client.connect()
        # pymodbus's sequential blocks start at 1 for PDU address 0 (its convention).
        assert _words(await client.read(1, 3, 10, 3, 1.0)) == [1010, 1011, 1012]
        assert _words(await client.read(1, 4, 10, 3, 1.0)) == [1510, 1511, 1512]
        assert _bits(await client.read(1, 1, 0, 10, 1.0), 10) == [i % 3 == 0 for i in range(10)]
        assert _bits(await client.read(1, 2, 3, 13, 1.0), 13) == [i % 2 == 1 for i in range(3, 16)]
        with pytest.raises(DeviceError) as caught:
            await client.read(1, 3, 299, 5, 1.0)
        assert caught.value.code == 2
        big = _words(await client.read(1, 3, 0, 125, 1.0))
        assert big == [1000 + i for i in range(125)]
        client.close()

    await _with_pymodbus_server(body)


def test_runs_on_uvloop() -> None:
    async def main() -> list[int]:
        server = ModbusTcpServer({1: Unit(_image(1000), Faults())})
        await server.start()
        client = ModbusTcpClient("127.0.0.1", server.port, max_in_flight=2)
        await client.connect()
        got = await asyncio.gather(*(client.read(1, 3, i, 1, 1.0) for i in range(4)))
        with pytest.raises(RequestTimeout):
            server.units[1].faults.set("slow", delay="0.3s")
            await client.read(1, 3, 0, 1, 0.05)
        client.close()
        await server.stop()
        return [_words(g)[0] for g in got]

    assert uvloop.run(main()) == [1000, 1001, 1002, 1003]


async def test_send_writes_a_wave_and_answers_in_order(client: ModbusTcpClient) -> None:
    futures = client.send([(1, 3, 0, 2), (2, 3, 5, 1), (1, 4, 10, 1), (2, 1, 0, 3)])
    answers = [await f for f in futures]
    assert _words(answers[0]) == [1000, 1001]
    assert _words(answers[1]) == [3005]
    assert _words(answers[2]) == [1510]
    assert _bits(answers[3], 3) == [True, False, False]


async def test_send_refuses_more_than_max_in_flight(client: ModbusTcpClient) -> None:
    with pytest.raises(ValueError):
        client.send([(1, 3, i, 1) for i in range(5)])  # max_in_flight is 4


async def test_expire_fails_only_the_unanswered(sim: ModbusTcpServer) -> None:
    cl = ModbusTcpClient("127.0.0.1", sim.port, max_in_flight=2, connect_timeout=1.0)
    await cl.connect()
    try:
        sim.units[2].faults.set("slow", delay=0.5)
        fast, slow = cl.send([(1, 3, 0, 1), (2, 3, 0, 1)])
        assert _words(await fast) == [1000]
        cl.expire([fast, slow], 0.05)
        with pytest.raises(RequestTimeout):
            await slow
        sim.units[2].faults.clear()
    finally:
        cl.close()


async def test_abandon_cancels_the_futures(client: ModbusTcpClient, sim: ModbusTcpServer) -> None:
    sim.units[1].faults.set("slow", delay=0.3)
    (future,) = client.send([(1, 3, 0, 1)])
    client.abandon([future])
    with pytest.raises(asyncio.CancelledError):
        await future


async def test_a_deadline_behind_a_cancelled_one_still_expires(
    client: ModbusTcpClient, sim: ModbusTcpServer
) -> None:
    """An answered wave's cancelled deadline does not keep a later wave from expiring."""
    try:
        (first,) = client.send([(1, 3, 0, 1)])
        answered = client.expire_later([first], 0.05)
        assert _words(await first) == [1000]
        answered.cancel()
        sim.units[2].faults.set("slow", delay=2.0)
        (second,) = client.send([(2, 3, 0, 1)])
        client.expire_later([second], 0.2)
        with pytest.raises(RequestTimeout):
            await second
    finally:
        sim.units[2].faults.clear()


async def test_a_shorter_deadline_set_later_expires_first(
    client: ModbusTcpClient, sim: ModbusTcpServer
) -> None:
    """A deadline due before one set earlier (another time limit) keeps its own time."""
    try:
        sim.units[2].faults.set("slow", delay=5.0)
        patient, hasty = client.send([(2, 3, 0, 1), (2, 3, 1, 1)])
        client.expire_later([patient], 10.0)
        client.expire_later([hasty], 0.05)
        with pytest.raises(RequestTimeout):
            await hasty
        assert not patient.done()
    finally:
        sim.units[2].faults.clear()

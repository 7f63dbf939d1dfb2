"""Any bytes at all: the framing raises only FrameError, the simulator only closes the
connection, and the client never resolves a request with data of the wrong size."""

from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import ConnectorError
from connectors.mc.client import McClient
from connectors.mc.frame import Code, FrameError, FrameType, Framing, Point
from firmware_sim.image import RegisterImage
from firmware_sim.mc_server import DeviceMemory, _Codec, _Malformed, _parse, _Reject, answer

FRAMINGS = [Framing(code=c, frame=f) for c in Code for f in FrameType]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FRAMINGS), st.binary(max_size=64))
def test_framing_refuses_garbage_with_frame_error_only(framing: Framing, data: bytes) -> None:
    with contextlib.suppress(FrameError):
        framing.body_length(data.ljust(framing.header_size, b"\0"))
    with contextlib.suppress(FrameError):
        framing.parse_body(0, data, words=len(data) // 8)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([b"", b"\x50\x00", b"5000", b"\x54\x00", b"5400"]))
def test_the_simulator_answers_or_closes_whatever_it_is_sent(data: bytes, head: bytes) -> None:
    memory = DeviceMemory(RegisterImage(size=64))
    buf = bytearray(head + data)
    try:
        parsed = _parse(buf)
    except _Malformed:
        return
    if parsed is None:
        return
    request, _ = parsed
    codec = _Codec(request.body, request.ascii, request.subcommand in (2, 3))
    with contextlib.suppress(_Reject):
        answer(memory, request.command, request.subcommand, codec)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_the_client_never_takes_garbage_for_data(garbage: bytes) -> None:
    async def main() -> None:
        received = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1 << 16)
            writer.write(garbage)
            await writer.drain()
            received.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        framing = Framing()
        client = McClient("127.0.0.1", server.sockets[0].getsockname()[1], framing)
        await client.connect()
        [future] = client.send([(framing.batch_read(Point("D", 0), 2), 4, "D0", None)])
        await received.wait()
        await asyncio.sleep(0.01)
        client.expire([future], 0.01)
        try:
            data = await future
        except ConnectorError:
            pass
        else:  # only a well-framed answer of exactly 4 data bytes with end code 0
            assert len(data) == 4
            assert garbage[:2] == b"\xd0\x00" and garbage[9:11] == b"\0\0"
        client.close()
        server.close()

    asyncio.run(main())

"""A rogue S7 "CPU" (a small asyncio server in this file) that answers the connection setup
properly and then misbehaves on reads: garbage, wrong lengths, other jobs' answers, error codes,
a frame cut off by a close, silence. Never a wrong value stored as good; a silent CPU costs its
own source one timeout and does not hold up another CPU polled at the same time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from snap7.server import Server

from agent.errors import ConnectError
from agent.model import Quality
from agent.tags import TagTable

from .conftest import s7_config, s7_source

pytestmark = pytest.mark.timeout(30)

Answer = Callable[[bytes], bytes | None]  # read job -> S7 PDU to send (None: stay silent)


def tpkt(payload: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, len(payload) + 4) + payload


def data_frame(pdu: bytes) -> bytes:
    return tpkt(b"\x02\xf0\x80" + pdu)


def ack(job: bytes, params: bytes, data: bytes = b"", error: int = 0) -> bytes:
    seq = job[4:6]
    return (
        b"\x32\x03\x00\x00"
        + seq
        + struct.pack(">HHH", len(params), len(data), error)
        + params
        + data
    )


def good_word(job: bytes) -> bytes:
    """A correct answer for a one-item read of 2 bytes: the value 0x0102."""
    return ack(job, bytes([0x04, 1]), struct.pack(">BBH", 0xFF, 0x04, 16) + b"\x01\x02")


class RogueCpu:
    """Accepts COTP and Setup Communication, then answers reads with `answer`; `cut` sends
    half of the answer's frame and closes."""

    def __init__(self, answer: Answer, cut: bool = False, refuse_iso: bool = False) -> None:
        self.answer = answer
        self.cut = cut
        self.refuse_iso = refuse_iso
        self.reads = 0
        self.called_tsap = b""  # from the connection request: which CPU was asked for

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(4)
                body = await reader.readexactly(struct.unpack(">H", head[2:])[0] - 4)
                if body[1] == 0xE0:  # connection request
                    at = 7
                    while at + 2 <= len(body):
                        if body[at] == 0xC2:
                            self.called_tsap = body[at + 2 : at + 2 + body[at + 1]]
                        at += 2 + body[at + 1]
                    if self.refuse_iso:  # a disconnect request: wrong rack/slot
                        writer.write(tpkt(b"\x06\x80\x00\x01\x00\x01\x00"))
                    else:
                        writer.write(tpkt(b"\x06\xd0\x00\x01\x00\x01\x00\xc0\x01\x0a"))
                    await writer.drain()
                    continue
                job = body[3:]
                if job[10] == 0xF0:  # setup communication: grant 240
                    writer.write(data_frame(ack(job, struct.pack(">BBHHH", 0xF0, 0, 1, 1, 240))))
                elif job[10] == 0x04:
                    self.reads += 1
                    pdu = self.answer(job)
                    if pdu is None:
                        continue
                    frame = data_frame(pdu)
                    if self.cut:
                        writer.write(frame[: len(frame) // 2])
                        await writer.drain()
                        writer.close()
                        return
                    writer.write(frame)
                await writer.drain()


@contextlib.asynccontextmanager
async def rogue(cpu: RogueCpu) -> AsyncIterator[int]:
    server = await asyncio.start_server(cpu.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


ROGUES: dict[str, tuple[Answer, bool]] = {
    "garbage": (lambda job: b"\x99" * 30, False),
    "not an answer": (lambda job: b"\x32\x01" + good_word(job)[2:], False),
    "length of 4 for 2": (
        lambda job: ack(job, bytes([0x04, 1]), struct.pack(">BBH", 0xFF, 0x04, 32) + b"\0\1\2\3"),
        False,
    ),
    "lengths that lie": (lambda job: good_word(job)[:-1], False),
    "two items for one": (
        lambda job: ack(job, bytes([0x04, 2]), struct.pack(">BBH", 0xFF, 4, 16) + b"\1\2" * 2),
        False,
    ),
    "answer to another job": (
        lambda job: good_word(job[:4] + struct.pack(">H", (job[4] << 8 | job[5]) ^ 0xFF) + job[6:]),
        False,
    ),
    "closes mid-frame": (good_word, True),
    "header error": (lambda job: ack(job, b"", error=0x8500), False),
    "item error": (lambda job: ack(job, bytes([0x04, 1]), b"\x0a\x00\x00\x00"), False),
}


@pytest.mark.parametrize("name", ROGUES, ids=list(ROGUES))
async def test_bad_answers_never_store_a_value_as_good(tmp_path: Path, name: str) -> None:
    answer, cut = ROGUES[name]
    cpu = RogueCpu(answer, cut=cut)
    async with rogue(cpu) as port:
        config = s7_config(tmp_path, port, {"word": "DB1.DBW0"}, state_check='"0s"')
        source = s7_source(config)
        await source.connect()
        try:
            try:
                batches = await source.poll(["1s"])
            except ConnectError:
                batches = source.bad_batches(["1s"], 0)
            (batch,) = batches
            assert batch.quality.tolist() == [Quality.BAD], name
            assert math.isnan(batch.values[0])
            # The connection cannot be trusted after a garbled answer: the next poll reconnects.
            if name not in ("header error", "item error"):
                with pytest.raises(ConnectError):
                    await source.poll(["1s"])
        finally:
            await source.close()
    # and a proper answer reads good: the rogue itself is not the problem
    async with rogue(RogueCpu(good_word)) as port:
        source = s7_source(s7_config(tmp_path, port, {"word": "DB1.DBW0"}, state_check='"0s"'))
        await source.connect()
        try:
            (batch,) = await source.poll(["1s"])
        finally:
            await source.close()
        assert batch.quality.tolist() == [Quality.GOOD] and batch.values.tolist() == [258.0]


async def test_a_silent_cpu_costs_one_timeout_and_holds_up_no_other_cpu(
    tmp_path: Path, snap7_server: tuple[Server, int]
) -> None:
    silent = RogueCpu(lambda job: None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with rogue(silent) as port:
        config = s7_config(tmp_path / "a", port, {"word": "DB1.DBW0"}, state_check='"0s"')
        source = s7_source(config)
        other = s7_source(s7_config(tmp_path / "b", snap7_server[1], {"speed": "DB1.DBD0:REAL"}))
        await source.connect()
        await other.connect()
        try:
            waiting = asyncio.create_task(source.poll(["1s"]))
            # the other CPU is polled again and again while the silent one's read is pending
            for _ in range(3):
                (batch,) = await other.poll(["1s"])
                assert batch.quality.tolist() == [Quality.GOOD]
            assert not waiting.done()
            (batch,) = await waiting
        finally:
            await source.close()
            await other.close()
    assert batch.quality.tolist() == [Quality.BAD]
    assert {r for r in source.reasons.by_tag().values()} == {"timeout after 1s"}
    assert source.statistics().timeouts == 1


async def test_wrong_rack_or_slot_says_what_to_check(tmp_path: Path) -> None:
    async with rogue(RogueCpu(good_word, refuse_iso=True)) as port:
        source = s7_source(s7_config(tmp_path, port, {"word": "DB1.DBW0"}, rack="0", slot="3"))
        with pytest.raises(ConnectError) as caught:
            await source.connect()
    message = str(caught.value)
    assert message.startswith(
        f"127.0.0.1:{port}: the CPU refused the ISO connection to rack 0 slot 3"
    )
    assert message.endswith(
        "check rack 0 slot 3 (S7-300: rack 0 slot 2; S7-1200/1500: rack 0 slot 1; S7-400: the "
        "CPU's slot in the hardware configuration), or the TSAPs"
    )


async def test_tags_of_one_tag_table_are_unique_per_source(tmp_path: Path) -> None:
    # the config fixture's tag table gives the rogue tests' tags ids of their own
    config = s7_config(tmp_path, 1, {"a": "DB1.DBW0", "b": "DB1.DBW2"})
    assert [t.name for t in TagTable.from_config(config)] == ["a", "b"]


@pytest.mark.parametrize(
    ("settings", "called"),
    [
        ({"rack": "0", "slot": "2"}, b"\x01\x02"),  # an S7-300: PG connection, rack 0 slot 2
        ({"rack": "1", "slot": "3"}, b"\x01\x23"),
        ({"local_tsap": '"10.00"', "remote_tsap": '"03.01"'}, b"\x03\x01"),
    ],
)
async def test_rack_slot_and_tsaps_reach_the_connection_request(
    tmp_path: Path, settings: dict[str, str], called: bytes
) -> None:
    cpu = RogueCpu(good_word)
    async with rogue(cpu) as port:
        config = s7_config(tmp_path, port, {"word": "DB1.DBW0"}, state_check='"0s"', **settings)
        source = s7_source(config)
        await source.connect()
        try:
            (batch,) = await source.poll(["1s"])
        finally:
            await source.close()
    assert cpu.called_tsap == called
    assert batch.values.tolist() == [258.0]

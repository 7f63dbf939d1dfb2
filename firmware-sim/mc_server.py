"""An asyncio MC protocol (MELSEC SLMP) server for the simulated plant: one machine per port.

It answers 3E and 4E frames, in binary or ASCII (told apart per request by the subheader),
with Q-style (subcommands 0000/0001) and iQ-R-style (0002/0003) device fields:

- 0401 batch read, in word units (a bit device packs 16 points a word, the first in bit 0)
  and in bit units (binary: two points a byte, the first in the high nibble; ASCII: a "0" or
  "1" per point);
- 0403 random read of words and double words;
- 0101 read CPU model name (`CPU_MODEL_NAME`).

Its parsing is its own, not the agent's (`connectors/mc/frame.py`): requests in, responses out,
written from the protocol's frame layout, so that the tests that read it with pymcprotocol
check the layout against an implementation nobody here wrote, and the agent's client against
this one (docs/decisions/0002-mc-simulator-framing.md).

Device memory is the machine's Modbus register image, so the plant's values are the same over
both protocols: D is the holding registers, W the input registers, M the coils and X the
discrete inputs (one number per Modbus address). Every other device of the protocol (R, ZR,
SM, SD, Y, B, L, F) is a zeroed memory of its own. A number past the image is end code C056;
an unknown device or command C059; a request whose length disagrees with its points C058.

The unit's faults (`faults.py`) act as on Modbus TCP: `refuse` and a reboot close new
connections, `drop` closes the connection at a request, `slow` answers late, `exception`
answers with end code `code`, `malformed` sends a wrong subheader, length or route,
`truncated` sends half an answer and then nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from firmware_sim.faults import FaultMode, Faults
from firmware_sim.image import RegisterImage
from firmware_sim.modbus_pdu import Unit
from firmware_sim.serving import FrameConnection, FrameServer, ServingStats

# Binary device codes: name, code, bit device, numbered in hex (Q/iQ-R), image table.
_DEVICES: dict[int, tuple[str, bool, bool]] = {
    0x91: ("SM", True, False),
    0xA9: ("SD", False, False),
    0x9C: ("X", True, True),
    0x9D: ("Y", True, True),
    0x90: ("M", True, False),
    0x92: ("L", True, False),
    0x93: ("F", True, False),
    0xA0: ("B", True, True),
    0xA8: ("D", False, False),
    0xB4: ("W", False, True),
    0xAF: ("R", False, False),
    0xB0: ("ZR", False, False),
}
_BY_NAME = {name: code for code, (name, _, _) in _DEVICES.items()}

END_OUT_OF_RANGE = 0xC056
END_LENGTH = 0xC058
END_UNSUPPORTED = 0xC059
END_POINTS = 0xC051
MAX_WORDS = 960
MAX_BITS = 7168
MAX_RANDOM = 192
# What 0101 (read CPU model name) answers: the simulator plays a Q CPU; the code is its own.
CPU_MODEL_NAME = "Q03UDVCPU"
CPU_MODEL_CODE = 0x0366


class _Reject(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Malformed(Exception):
    """A request that cannot be framed: the connection is closed."""


@dataclass(slots=True)
class McStats(ServingStats):
    errors: int = 0  # answers with an error end code


class DeviceMemory:
    """Words and bits of every device, over one machine's register image."""

    def __init__(self, image: RegisterImage) -> None:
        self.image = image
        self._extra_words: dict[str, bytearray] = {}
        self._extra_bits: dict[str, bytearray] = {}

    def _words_be(self, name: str) -> bytearray:
        if name == "D":
            return self.image.holding
        if name == "W":
            return self.image.input
        return self._extra_words.setdefault(name, bytearray(2 * self.image.size))

    def _bits(self, name: str) -> bytearray:
        if name == "M":
            return self.image.coils
        if name == "X":
            return self.image.discrete
        return self._extra_bits.setdefault(name, bytearray(16 * self.image.size))

    def words(self, code: int, number: int, count: int) -> bytes:
        """`count` words from `number` as little-endian bytes (16 points a word on bits)."""
        name, bits, _ = _DEVICES[code]
        if bits:
            memory = self._bits(name)
            if number + 16 * count > len(memory):
                raise _Reject(END_OUT_OF_RANGE)
            points = np.frombuffer(memory, np.uint8, 16 * count, number) != 0
            return np.packbits(points.reshape(count, 16), axis=1, bitorder="little").tobytes()
        memory = self._words_be(name)
        if 2 * (number + count) > len(memory):
            raise _Reject(END_OUT_OF_RANGE)
        return np.frombuffer(memory, ">u2", count, 2 * number).astype("<u2").tobytes()

    def points(self, code: int, number: int, count: int) -> list[int]:
        """`count` bit points from `number` (0 or 1 each)."""
        name, bits, _ = _DEVICES[code]
        if not bits:
            raise _Reject(0xC05C)  # bit units on a word device
        memory = self._bits(name)
        if number + count > len(memory):
            raise _Reject(END_OUT_OF_RANGE)
        return [1 if b else 0 for b in memory[number : number + count]]


class _Codec:
    """Reads the fields of one request in its code (binary or ASCII) and writes the answer."""

    def __init__(self, body: bytes, ascii_: bool, iqr: bool) -> None:
        self.body = body
        self.ascii = ascii_
        self.iqr = iqr
        self.pos = 0

    def uint(self, size: int) -> int:
        if self.ascii:
            text = self.body[self.pos : self.pos + 2 * size]
            self.pos += 2 * size
            if len(text) != 2 * size:
                raise _Reject(END_LENGTH)
            try:
                return int(text, 16)
            except ValueError:
                raise _Reject(0xC050) from None
        raw = self.body[self.pos : self.pos + size]
        self.pos += size
        if len(raw) != size:
            raise _Reject(END_LENGTH)
        return int.from_bytes(raw, "little")

    def device(self) -> tuple[int, int]:
        """(device code, number)."""
        if self.ascii:
            width = 4 if self.iqr else 2
            name = self.body[self.pos : self.pos + width].decode("ascii", "replace").rstrip("*")
            self.pos += width
            digits = self.body[self.pos : self.pos + (8 if self.iqr else 6)]
            self.pos += 8 if self.iqr else 6
            code = _BY_NAME.get(name)
            if code is None:
                raise _Reject(END_UNSUPPORTED)
            try:
                # pymcprotocol and the FX5 write X/Y in their own base; the sim reads hex for
                # the hex-numbered devices and decimal for the rest.
                number = int(digits, 16 if _DEVICES[code][2] else 10)
            except ValueError:
                raise _Reject(0xC050) from None
            return code, number
        number = self.uint(4 if self.iqr else 3)
        code = self.uint(2 if self.iqr else 1)
        if code not in _DEVICES:
            raise _Reject(END_UNSUPPORTED)
        return code, number

    def done(self) -> None:
        if self.pos != len(self.body):
            raise _Reject(END_LENGTH)


def answer(memory: DeviceMemory, command: int, subcommand: int, codec: _Codec) -> bytes:
    """The data of a good answer (already in the request's code); _Reject for an error."""
    if subcommand not in (0, 1, 2, 3):
        raise _Reject(END_UNSUPPORTED)
    if command == 0x0101 and subcommand == 0:
        codec.done()
        name = CPU_MODEL_NAME.ljust(16).encode("ascii")
        if codec.ascii:
            return name + b"%04X" % CPU_MODEL_CODE
        return name + CPU_MODEL_CODE.to_bytes(2, "little")
    if command == 0x0401:
        code, number = codec.device()
        count = codec.uint(2)
        codec.done()
        if subcommand in (0, 2):
            if not 1 <= count <= MAX_WORDS:
                raise _Reject(END_POINTS)
            return _words_out(memory.words(code, number, count), codec.ascii)
        if not 1 <= count <= MAX_BITS:
            raise _Reject(0xC053)
        points = memory.points(code, number, count)
        if codec.ascii:
            return "".join(str(p) for p in points).encode()
        if count % 2:
            points.append(0)
        return bytes((points[i] << 4) | points[i + 1] for i in range(0, len(points), 2))
    if command == 0x0403 and subcommand in (0, 2):
        words = codec.uint(1)
        dwords = codec.uint(1)
        if not 1 <= words + dwords <= MAX_RANDOM:
            raise _Reject(END_POINTS)
        fields = [codec.device() for _ in range(words + dwords)]
        codec.done()
        out = b"".join(memory.words(c, n, 1) for c, n in fields[:words])
        out += b"".join(memory.words(c, n, 2) for c, n in fields[words:])
        if not codec.ascii:
            return out
        # A double word is one 8-digit value in ASCII, a word 4 digits.
        text = [f"{int.from_bytes(out[2 * i : 2 * i + 2], 'little'):04X}" for i in range(words)]
        base = 2 * words
        for i in range(dwords):
            value = int.from_bytes(out[base + 4 * i : base + 4 * i + 4], "little")
            text.append(f"{value:08X}")
        return "".join(text).encode()
    raise _Reject(END_UNSUPPORTED)


def _words_out(data: bytes, ascii_: bool) -> bytes:
    if not ascii_:
        return data
    values = np.frombuffer(data, "<u2")
    return "".join(f"{v:04X}" for v in values.tolist()).encode()


@dataclass(frozen=True, slots=True)
class _Request:
    ascii: bool
    e4: bool
    serial: bytes  # as received (binary 2 bytes, ASCII 4 characters)
    route: bytes  # as received
    command: int
    subcommand: int
    body: bytes


def _parse(buf: bytearray) -> tuple[_Request, int] | None:
    """One request from the head of `buf` and its size, None if incomplete; _Malformed."""
    if len(buf) < 2:
        return None
    if bytes(buf[:2]) in (b"\x50\x00", b"\x54\x00"):
        e4 = buf[0] == 0x54
        head = 6 if e4 else 2
        if len(buf) < head + 7:
            return None
        length = int.from_bytes(buf[head + 5 : head + 7], "little")
        if not 6 <= length <= 8192:
            raise _Malformed
        end = head + 7 + length
        if len(buf) < end:
            return None
        inner = bytes(buf[head + 7 : end])
        return (
            _Request(
                False,
                e4,
                bytes(buf[2:4]) if e4 else b"",
                bytes(buf[head : head + 5]),
                int.from_bytes(inner[2:4], "little"),
                int.from_bytes(inner[4:6], "little"),
                inner[6:],
            ),
            end,
        )
    if len(buf) < 4:
        return None
    if bytes(buf[:4]) not in (b"5000", b"5400"):
        raise _Malformed
    e4 = buf[:4] == b"5400"
    head = 12 if e4 else 4
    if len(buf) < head + 14:
        return None
    try:
        length = int(buf[head + 10 : head + 14], 16)
    except ValueError:
        raise _Malformed from None
    if not 12 <= length <= 16384:
        raise _Malformed
    end = head + 14 + length
    if len(buf) < end:
        return None
    inner = bytes(buf[head + 14 : end])
    try:
        command, subcommand = int(inner[4:8], 16), int(inner[8:12], 16)
    except ValueError:
        raise _Malformed from None
    return (
        _Request(
            True,
            e4,
            bytes(buf[4:8]) if e4 else b"",
            bytes(buf[head : head + 10]),
            command,
            subcommand,
            inner[12:],
        ),
        end,
    )


def response(request: _Request, end_code: int, data: bytes = b"") -> bytes:
    """The answer frame to `request` (error information added for an error end code)."""
    if end_code:
        if request.ascii:
            data = request.route + b"%04X%04X" % (request.command, request.subcommand)
        else:
            data = request.route + request.command.to_bytes(2, "little")
            data += request.subcommand.to_bytes(2, "little")
    if request.ascii:
        sub = b"D400" + request.serial + b"0000" if request.e4 else b"D000"
        tail = b"%04X" % end_code + data
        return sub + request.route + b"%04X" % len(tail) + tail
    sub = b"\xd4\x00" + request.serial + b"\x00\x00" if request.e4 else b"\xd0\x00"
    tail = end_code.to_bytes(2, "little") + data
    return sub + request.route + len(tail).to_bytes(2, "little") + tail


def garble(frame: bytes, kind: int, ascii_: bool) -> bytes:
    """An answer a client must reject: 0 bad subheader, 1 bad length, 2 another PC number."""
    out = bytearray(frame)
    e4 = out[:4] == b"D400" if ascii_ else out[0] == 0xD4
    route = (12 if e4 else 4) if ascii_ else (6 if e4 else 2)
    if kind == 0:
        out[0:2] = b"99" if ascii_ else b"\x99\x99"
    elif kind == 1:
        at = route + (10 if ascii_ else 5)
        if ascii_:
            out[at : at + 4] = b"%04X" % ((int(out[at : at + 4], 16) + 7) & 0xFFFF)
        else:
            wrong = (int.from_bytes(out[at : at + 2], "little") + 7) & 0xFFFF
            out[at : at + 2] = wrong.to_bytes(2, "little")
    else:
        at = route + (2 if ascii_ else 1)
        out[at] = (
            ord("1")
            if ascii_ and out[at] != ord("1")
            else (out[at] ^ 1 if not ascii_ else ord("2"))
        )
    return bytes(out)


class _Connection(FrameConnection["McServer"]):
    """One client connection: answers whole MC requests, applies faults."""

    def _process(self) -> None:
        transport = self._transport
        assert transport is not None
        server = self._server
        out: list[bytes] = []
        while True:
            try:
                parsed = _parse(self._buf)
            except _Malformed:
                server.stats.malformed += 1
                self._finish(out)
                return
            if parsed is None:
                break
            request, size = parsed
            del self._buf[:size]
            server.stats.requests += 1
            frame = self._answer(request)
            faults = server.unit.faults
            action = faults.action() if faults.mode is not FaultMode.NONE else FaultMode.NONE
            if action is FaultMode.NONE:
                out.append(frame)
                continue
            faulty = partial(_faulty, action, faults, request, frame)
            if not self._fault(action, faults, out, faulty):
                return
        if out:
            transport.write(b"".join(out))

    def _answer(self, request: _Request) -> bytes:
        codec = _Codec(request.body, request.ascii, request.subcommand in (2, 3))
        try:
            data = answer(self._server.memory, request.command, request.subcommand, codec)
        except _Reject as exc:
            self._server.stats.errors += 1
            return response(request, exc.code)
        return response(request, 0, data)


def _faulty(action: FaultMode, faults: Faults, request: _Request, frame: bytes) -> bytes:
    """The answer `frame` to `request` as fault `action` makes it."""
    if action is FaultMode.EXCEPTION:
        return response(request, faults.code)
    if action is FaultMode.MALFORMED:
        return garble(frame, faults.choice(3), request.ascii)
    return frame


class McServer(FrameServer):
    """Serve one machine's `Unit` (image and faults) over the MC protocol on one port."""

    stats: McStats

    def __init__(self, unit: Unit) -> None:
        super().__init__({0: unit}, McStats())  # one unit: a reboot closes every connection
        self.unit = unit
        self.memory = DeviceMemory(unit.image)

    def _connection(self) -> _Connection:
        return _Connection(self)

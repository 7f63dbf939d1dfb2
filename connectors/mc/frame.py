"""MELSEC communication (MC) protocol framing: bytes in, frames out, no I/O.

Requests this module builds and responses it parses, in the four layouts a PLC's open MC
port may be set to (binary or ASCII code, 3E or 4E frame):

    3E binary request   50 00 | net | pc | io (2, LE) | station | length (2, LE) | timer (2, LE)
                        | command (2, LE) | subcommand (2, LE) | request data
    3E binary response  D0 00 | net | pc | io | station | length | end code (2, LE) | data
    4E                  subheader 54 00 / D4 00, then a serial number (2, LE) and 00 00,
                        then the 3E layout from the network number on
    ASCII               the same fields as upper-case hex text, most significant digit first
                        ("5000", "00", "FF", "03FF", "00", "0018", "0010", "0401", "0000", ...)

`length` counts the bytes (ASCII: characters) after itself: the monitoring timer and the
request data, or the end code and the response data. The monitoring timer is in units of
250 ms (0: wait forever). An error response's data is the end code's error information
(network, pc, io, station, command, subcommand: 9 bytes, 18 characters).

Commands used: 0401 batch read in word units (subcommand 0000; 0002 on iQ-R, which widens
device numbers to 4 bytes and device codes to 2) and 0403 random read (word and double-word
points, subcommands 0000 / 0002). A bit device read in word units packs 16 points into a word,
the first point in bit 0. Every word travels little-endian in binary, as 4 hex digits in ASCII;
`parse_response` gives the data of both codes as little-endian bytes, so the codec sees one
layout. A double word is its low word first.

Device numbers: decimal for most devices; hexadecimal for X, Y, B, W, SB, SW, DX, DY on Q and
iQ-R; on the FX5 (iQ-F) X and Y are octal. In binary the number travels as an integer, in
ASCII as digits in the device's own base.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

CPU_MODEL = 0x0101
BATCH_READ = 0x0401
RANDOM_READ = 0x0403
MAX_BATCH_WORDS = 960  # words per 0401 in word units (3E and 4E)
MAX_RANDOM_POINTS = 192  # word + double-word points per 0403


class Series(StrEnum):
    FX5 = "fx5"  # iQ-F: X/Y numbered in octal
    Q = "q"  # Q and L: X/Y in hex
    IQR = "iqr"  # iQ-R: X/Y in hex, 4-byte device numbers and 2-byte codes (subcommand 0002)


class Code(StrEnum):
    BINARY = "binary"
    ASCII = "ascii"


class FrameType(StrEnum):
    E3 = "3e"
    E4 = "4e"


class FrameError(ValueError):
    """A response that cannot be the answer to what was asked (malformed)."""


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    code: int  # binary device code
    bits: bool  # a bit device (M, X, ...): read in word units, 16 points a word
    hex_numbered: bool  # numbered in hex on Q/iQ-R

    def base(self, series: Series) -> int:
        """The base its numbers are written in on `series` (8, 10 or 16)."""
        if self.name in ("X", "Y") and series is Series.FX5:
            return 8
        return 16 if self.hex_numbered else 10

    def ascii_code(self, series: Series) -> str:
        """Its code in ASCII frames: "D*", "SM" (Q, FX5) or "D***", "SM**" (iQ-R)."""
        return self.name.ljust(4 if series is Series.IQR else 2, "*")


DEVICES: dict[str, Device] = {
    d.name: d
    for d in (
        Device("SM", 0x91, True, False),
        Device("SD", 0xA9, False, False),
        Device("X", 0x9C, True, True),
        Device("Y", 0x9D, True, True),
        Device("M", 0x90, True, False),
        Device("L", 0x92, True, False),
        Device("F", 0x93, True, False),
        Device("B", 0xA0, True, True),
        Device("D", 0xA8, False, False),
        Device("W", 0xB4, False, True),
        Device("R", 0xAF, False, False),
        Device("ZR", 0xB0, False, False),
    )
}

# End codes a PLC or its Ethernet module answers with, by name (MELSEC communication protocol
# reference, "error codes"); the message of a DeviceError names the code and this text.
END_CODES: dict[int, str] = {
    0x0055: "online change disabled (enable writes during RUN)",
    0x4030: "device not supported by this CPU",
    0x4031: "device number out of range",
    0x4040: "request cannot be executed on the module",
    0x4080: "request data error",
    0xC050: "ASCII data that cannot be converted to binary",
    0xC051: "too many points for one word read",
    0xC052: "too many points for one word read",
    0xC053: "too many points for one bit read",
    0xC054: "too many points for one bit read",
    0xC056: "read past the last device number",
    0xC058: "request length does not match the data",
    0xC059: "command or subcommand not supported",
    0xC05B: "the CPU cannot read or write this device",
    0xC05C: "request content error (a bit read of a word device?)",
    0xC05F: "request not executable on this CPU",
    0xC060: "request content error",
    0xC061: "request length does not match the number of points",
    0xC06F: "request in binary to an ASCII port, or the other way round",
    0xC0D8: "too many blocks",
    0xCEE0: "device busy (another request in progress)",
    0xCEE1: "request too long",
    0xCEE2: "response too long",
}

# Codes that mean "ask again" rather than "this will never work".
BUSY_CODES = frozenset({0xCEE0})


def end_code_reason(code: int) -> str:
    """The bad-quality reason for end code `code`: "read past the last device number (C056)"."""
    return f"{END_CODES.get(code, 'error end code')} ({code:04X})"


@dataclass(frozen=True, slots=True)
class Route:
    """Whom a request is for: network, PC (station) number, module I/O and module station."""

    network: int = 0
    pc: int = 0xFF
    module_io: int = 0x03FF
    station: int = 0


@dataclass(frozen=True, slots=True)
class Point:
    """One device address on the wire: device and integer number."""

    device: str
    number: int


@dataclass(frozen=True, slots=True)
class Response:
    serial: int  # 4E serial number; 0 on 3E
    end_code: int
    data: bytes  # little-endian words, in both codes (empty on an error)


class Framing:
    """Builds requests and parses responses for one port's settings."""

    __slots__ = ("_route_bin", "code", "frame", "header_size", "route", "series", "timer")

    def __init__(
        self,
        *,
        series: Series = Series.Q,
        code: Code = Code.BINARY,
        frame: FrameType = FrameType.E3,
        route: Route = Route(),
        timer: int = 4,
    ) -> None:
        if not 0 <= timer <= 0xFFFF:
            raise ValueError(f"monitoring timer must be 0..65535 (x 250 ms), not {timer}")
        self.series = Series(series)
        self.code = Code(code)
        self.frame = FrameType(frame)
        self.route = route
        self.timer = timer
        self._route_bin = struct.pack(
            "<BBHB", route.network, route.pc, route.module_io, route.station
        )
        prefix = 6 if self.frame is FrameType.E4 else 2  # subheader (+ serial and 0000)
        self.header_size = (prefix + 7) * (2 if self.code is Code.ASCII else 1)

    @property
    def subcommand(self) -> int:
        return 0x0002 if self.series is Series.IQR else 0x0000

    @property
    def pipelined(self) -> bool:
        """Whether answers carry the request's serial number (4E), so late ones are known."""
        return self.frame is FrameType.E4

    # -- requests --------------------------------------------------------------------------

    def batch_read(self, point: Point, words: int) -> bytes:
        """A 0401 read of `words` words from `point` (a bit device: 16 points a word)."""
        if not 1 <= words <= MAX_BATCH_WORDS:
            raise ValueError(f"a batch read takes 1..{MAX_BATCH_WORDS} words, not {words}")
        body = self._device(point) + self._uint(words, 2)
        return self._request(BATCH_READ, body)

    def random_read(self, words: Sequence[Point], dwords: Sequence[Point]) -> bytes:
        """A 0403 read of single words and double words, each at its own address."""
        if not 1 <= len(words) + len(dwords) <= MAX_RANDOM_POINTS:
            raise ValueError(f"a random read takes 1..{MAX_RANDOM_POINTS} points")
        body = self._uint(len(words), 1) + self._uint(len(dwords), 1)
        body += b"".join(self._device(p) for p in (*words, *dwords))
        return self._request(RANDOM_READ, body)

    def cpu_model(self) -> bytes:
        """A 0101 "read CPU model name" request (binary code only: see `parse_cpu_model`)."""
        if self.code is Code.ASCII:
            raise ValueError("the CPU model is read over a binary port")
        return self._request_sub(CPU_MODEL, 0, b"")

    def with_serial(self, request: bytes, serial: int) -> bytes:
        """`request` with its 4E serial number set (3E requests have none)."""
        if self.frame is FrameType.E3:
            return request
        if self.code is Code.BINARY:
            return request[:2] + serial.to_bytes(2, "little") + request[4:]
        return request[:4] + b"%04X" % serial + request[8:]

    def _request(self, command: int, body: bytes) -> bytes:
        return self._request_sub(command, self.subcommand, body)

    def _request_sub(self, command: int, subcommand: int, body: bytes) -> bytes:
        ascii_ = self.code is Code.ASCII
        tail = self._uint(self.timer, 2) + self._uint(command, 2)
        tail += self._uint(subcommand, 2) + body
        if ascii_:
            head = b"5400" + b"00000000" if self.frame is FrameType.E4 else b"5000"
            route = b"%02X%02X%04X%02X" % (
                self.route.network,
                self.route.pc,
                self.route.module_io,
                self.route.station,
            )
            return head + route + b"%04X" % len(tail) + tail
        head = b"\x54\x00\x00\x00\x00\x00" if self.frame is FrameType.E4 else b"\x50\x00"
        return head + self._route_bin + len(tail).to_bytes(2, "little") + tail

    def _uint(self, value: int, size: int) -> bytes:
        if self.code is Code.ASCII:
            return b"%0*X" % (2 * size, value)
        return value.to_bytes(size, "little")

    def _device(self, point: Point) -> bytes:
        device = DEVICES[point.device]
        iqr = self.series is Series.IQR
        if self.code is Code.BINARY:
            if iqr:
                return point.number.to_bytes(4, "little") + device.code.to_bytes(2, "little")
            return point.number.to_bytes(3, "little") + bytes((device.code,))
        digits = _digits(point.number, device.base(self.series)).rjust(8 if iqr else 6, "0")
        return (device.ascii_code(self.series) + digits).encode("ascii")

    # -- responses -------------------------------------------------------------------------

    def body_length(self, header: bytes | bytearray | memoryview) -> tuple[int, int]:
        """(serial, bytes after the header) from the first `header_size` bytes of a response.

        Raises FrameError for a subheader or route that is not an answer to this port's requests.
        """
        if self.code is Code.ASCII:
            return self._ascii_header(bytes(header[: self.header_size]))
        sub = 0xD4 if self.frame is FrameType.E4 else 0xD0
        if header[0] != sub or header[1] != 0:
            raise FrameError(f"subheader {bytes(header[:2]).hex()} is not {sub:02x}00")
        serial = 0
        at = 2
        if self.frame is FrameType.E4:
            serial = int.from_bytes(header[2:4], "little")
            at = 6
        if bytes(header[at : at + 5]) != self._route_bin:
            raise FrameError("answer from another network, station or module")
        return serial, int.from_bytes(header[at + 5 : at + 7], "little")

    def _ascii_header(self, header: bytes) -> tuple[int, int]:
        sub = b"D400" if self.frame is FrameType.E4 else b"D000"
        if header[:4] != sub:
            raise FrameError(f"subheader {header[:4]!r} is not {sub!r}")
        serial = 0
        at = 4
        try:
            if self.frame is FrameType.E4:
                serial = int(header[4:8], 16)
                at = 12
            shifted = tuple(int(header[at + i : at + j], 16) for i, j in ((0, 2), (2, 4), (4, 8)))
            length = int(header[at + 10 : at + 14], 16)
            station = int(header[at + 8 : at + 10], 16)
        except ValueError:
            raise FrameError("header is not hex text") from None
        r = self.route
        if shifted != (r.network, r.pc, r.module_io) or station != r.station:
            raise FrameError("answer from another network, station or module")
        return serial, length

    def parse_body(
        self, serial: int, body: bytes | bytearray | memoryview, words: int | None = None
    ) -> Response:
        """The end code and data of a response body (everything after the length field).

        `words` is how many single words come before the double words of a random read
        (None: all single words); only ASCII needs it, where a double word is 8 digits.
        """
        if self.code is Code.BINARY:
            if len(body) < 2:
                raise FrameError(f"response of {len(body)} bytes has no end code")
            end_code = int.from_bytes(body[:2], "little")
            return Response(serial, end_code, bytes(body[2:]) if end_code == 0 else b"")
        text = bytes(body)
        if len(text) < 4:
            raise FrameError(f"response of {len(text)} characters has no end code")
        try:
            end_code = int(text[:4], 16)
            if end_code != 0:
                return Response(serial, end_code, b"")
            return Response(serial, 0, _ascii_data(text[4:], words))
        except (ValueError, UnicodeDecodeError):
            raise FrameError("data is not hex text") from None

    def body_sizes(self, data_bytes: int) -> tuple[int, ...]:
        """Body lengths that may answer a request of `data_bytes` data bytes: the good answer,
        an error with its 9-byte information, and a bare end code."""
        scale = 2 if self.code is Code.ASCII else 1
        return (scale * (2 + data_bytes), scale * 11, scale * 2)


CPU_MODEL_BYTES = 18  # the model name (16 ASCII characters, space padded) and its code


def parse_cpu_model(data: bytes) -> tuple[str, int]:
    """(model name, model code) from the data of a 0101 answer."""
    if len(data) != CPU_MODEL_BYTES:
        raise FrameError(f"a CPU model answer has {CPU_MODEL_BYTES} data bytes, not {len(data)}")
    name = data[:16].decode("ascii", "replace").strip(" \0")
    return name, int.from_bytes(data[16:18], "little")


def _digits(number: int, base: int) -> str:
    if base == 16:
        return f"{number:X}"
    if base == 8:
        return f"{number:o}"
    return str(number)


def _ascii_data(text: bytes, words: int | None) -> bytes:
    """Hex text of words (4 digits) then double words (8 digits) as little-endian bytes."""
    split = len(text) if words is None else 4 * words
    if split % 4 or (len(text) - split) % 8 or not text.isalnum():
        raise FrameError(f"{len(text)} data characters do not make whole words")
    single = bytes.fromhex(text[:split].decode("ascii"))
    double = bytes.fromhex(text[split:].decode("ascii"))
    out = bytearray(single)
    out[0::2], out[1::2] = single[1::2], single[0::2]
    for i in range(0, len(double), 4):
        out += double[i : i + 4][::-1]
    return bytes(out)

"""One ISO-on-TCP connection to an S7 CPU, on python-snap7's asyncio transport.

python-snap7 (`snap7.async_client.AsyncISOTCPConnection`) does TPKT and COTP: the TCP
connect, the connection request with the TSAPs (rack and slot are a TSAP) and the data
transfer frames. This module adds what the agent needs on top: Setup Communication with the
PDU size asked for, one job at a time under a deadline, the sequence number checked, the
CPU's RUN/STOP read from its SZL, and every failure turned into the agent's errors with a
message that says what to change on the PLC side.

A timeout or a garbled answer closes the connection: a late or half answer would otherwise
be taken for the next job's. The source's next poll then raises `ConnectError` and the link
loop reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from enum import StrEnum

from snap7.async_client import AsyncISOTCPConnection
from snap7.error import S7ConnectionError, S7Error, S7TimeoutError

from agent.duration import format_duration
from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from connectors.s7.codec import parse_setup, sequence, setup_frame

USERDATA = 0x07
SZL_CPU_STATE = 0x0424

# python-snap7 logs every connect and disconnect at INFO; the link loop already says once when
# a link is lost or restored, so only snap7's warnings and errors are let through.
logging.getLogger("snap7").setLevel(logging.WARNING)


class CpuState(StrEnum):
    RUN = "run"
    STOP = "stop"
    STARTUP = "startup"
    UNKNOWN = "unknown"  # the CPU does not say (an emulator, an S7-200 SMART)


def connect_advice(rack_slot: str) -> str:
    return (
        f"check {rack_slot} (S7-300: rack 0 slot 2; S7-1200/1500: rack 0 slot 1; "
        "S7-400: the CPU's slot in the hardware configuration), or the TSAPs"
    )


def connect_failure(where: str, exc: S7ConnectionError, rack_slot: str) -> str:
    """What to check when snap7's connect failed: the TCP connect, or the ISO handshake."""
    cause = exc.__context__
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"{where} refused the connection: is this the CPU's (or its CP's) address, "
            "with port 102 open on the way?"
        )
    if isinstance(cause, OSError):
        return f"{where}: cannot connect: {cause.strerror or cause}"
    return (
        f"{where}: the CPU refused the ISO connection to {rack_slot} ({exc}): "
        f"{connect_advice(rack_slot)}"
    )


class S7Link:
    """A connection to one CPU: `open`, then `exchange` jobs one at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        local_tsap: int,
        remote_tsap: int,
        pdu_size: int,
        timeout: float,
        rack_slot: str,
    ) -> None:
        self.host = host
        self.port = port
        self.local_tsap = local_tsap
        self.remote_tsap = remote_tsap
        self.pdu_asked = pdu_size
        self.pdu_size = pdu_size  # the CPU's grant, after `open`
        self.timeout = timeout
        self.rack_slot = rack_slot
        self.bytes_in = 0
        self.bytes_out = 0
        self.closed_reason = "not connected"
        self._conn: AsyncISOTCPConnection | None = None
        self._seq = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def open(self) -> None:
        """Connect, agree the PDU size; `ConnectError` says what to check when it fails."""
        where = f"{self.host}:{self.port}"
        conn = AsyncISOTCPConnection(
            self.host, self.port, local_tsap=self.local_tsap, remote_tsap=self.remote_tsap
        )
        try:
            async with asyncio.timeout(self.timeout):
                await conn.connect(timeout=self.timeout)
        except TimeoutError:
            await conn.disconnect()
            raise ConnectError(
                f"{where}: no answer within {format_duration(self.timeout)}"
            ) from None
        except S7TimeoutError:
            raise ConnectError(
                f"{where}: no answer within {format_duration(self.timeout)}"
            ) from None
        except S7ConnectionError as exc:
            raise ConnectError(connect_failure(where, exc, self.rack_slot)) from None
        conn.timeout = self.timeout
        self._conn = conn
        self.closed_reason = ""
        try:
            granted = parse_setup(
                await self.exchange(setup_frame(self._next_seq(), self.pdu_asked))
            )
        except DeviceError as exc:
            await self.close(str(exc))
            raise ConnectError(f"{where}: {exc}") from None
        except (ProtocolError, RequestTimeout) as exc:
            await self.close(str(exc))
            raise ConnectError(f"{where}: Setup Communication failed: {exc}") from None
        self.pdu_size = min(granted, self.pdu_asked)

    async def exchange(self, pdu: bytes) -> bytes:
        """Send one job and return its answer's S7 PDU.

        Raises RequestTimeout (the connection is closed: a late answer must not be taken for
        the next job's), ProtocolError for an answer to another job, ConnectError when the
        connection is gone.
        """
        conn = self._conn
        if conn is None or not conn.connected:
            raise ConnectError(f"{self.host}:{self.port}: {self.closed_reason or 'not connected'}")
        try:
            async with asyncio.timeout(self.timeout):
                await conn.send_data(pdu)
                self.bytes_out += len(pdu) + 7  # TPKT and COTP
                answer = bytes(await conn.receive_data())
        except (TimeoutError, S7TimeoutError):
            reason = f"timeout after {format_duration(self.timeout)}"
            await self.close(reason)
            raise RequestTimeout(reason) from None
        except S7ConnectionError as exc:
            reason = f"connection lost: {exc}"
            await self.close(reason)
            raise ConnectError(f"{self.host}:{self.port}: {reason}") from None
        except S7Error as exc:  # anything else the transport says is a garbled frame
            await self.close(f"malformed answer: {exc}")
            raise ProtocolError(str(exc)) from None
        self.bytes_in += len(answer) + 7
        sent = struct.unpack_from(">H", pdu, 4)[0]
        if sequence(answer) != sent:
            await self.close("malformed answer: answer to another job")
            raise ProtocolError(f"answer to job {sequence(answer)}, job {sent} was sent")
        return answer

    async def cpu_state(self) -> CpuState:
        """RUN or STOP from SZL 0x0424 (the current mode); UNKNOWN where it is not served."""
        seq = self._next_seq()
        params = bytes([0x00, 0x01, 0x12, 0x04, 0x11, 0x44, 0x01, 0x00])
        data = struct.pack(">BBHHH", 0xFF, 0x09, 4, SZL_CPU_STATE, 0)
        job = struct.pack(">BBHHHH", 0x32, USERDATA, 0, seq, len(params), len(data))
        answer = await self.exchange(job + params + data)
        return parse_cpu_state(answer)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    def next_seq(self) -> int:
        return self._next_seq()

    async def close(self, reason: str = "closed") -> None:
        conn, self._conn = self._conn, None
        self.closed_reason = reason
        if conn is not None:
            await conn.disconnect()


def parse_cpu_state(answer: bytes) -> CpuState:
    """The mode in an SZL 0x0424 answer (a userdata PDU); UNKNOWN if it carries none."""
    if len(answer) < 10 or answer[1] != USERDATA:
        raise ProtocolError("malformed answer to an SZL read")
    param_length, data_length = struct.unpack_from(">HH", answer, 6)
    at = 10 + param_length
    data = answer[at : at + data_length]
    # return code, transport size, length, SZL id, index, record length, record count, record
    if len(data) < 16 or data[0] != 0xFF:
        return CpuState.UNKNOWN
    mode = data[12 + 3] & 0x0F  # the record's 4th byte: the current mode in its low nibble
    if mode in (0x08, 0x09):
        return CpuState.RUN
    if mode in (0x01, 0x02, 0x03, 0x04):
        return CpuState.STOP
    if mode in (0x05, 0x06, 0x07):
        return CpuState.STARTUP
    return CpuState.UNKNOWN

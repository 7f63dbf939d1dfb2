"""Writing a verdict back to the PLC: one coil or holding register over Modbus TCP.

lineside is read-only towards PLCs except for addresses on the config's `write_allow` list; the
check is made here, at the moment of writing, not only when the config is loaded, so no code
path can write elsewhere. Function 05 (write single coil, FF00 = on) or 06 (write single
register) in an MBAP frame, built by connectors/modbus/pdu.py and framing.py; the answer echoes
the request.

Every attempt is audited here too, for the same reason: `write` does not raise for a write that
was refused or failed, it returns the `EventKind.AUDIT` event saying who wrote what where and
how it went, so a caller cannot write without getting the record to store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any, Literal, Protocol

from agent.errors import ConnectError, DeviceError, LinesideError, ProtocolError, RequestTimeout
from agent.model import Event, EventKind
from connectors.modbus.address import ModbusAddress, Table
from connectors.modbus.framing import MBAP, MBAP_SIZE, mbap_frame
from connectors.modbus.pdu import (
    MalformedPdu,
    exception_in,
    write_single_coil,
    write_single_register,
)
from vision.adapters import VERDICT_CODES

WriteResult = Literal["ok", "refused", "failed"]


class WriteBack(Protocol):
    """What the inspection pipeline writes its verdicts through (`ModbusWriteBack` here)."""

    async def write(
        self, verdict: str, *, inspection: str, verdict_ts_ns: int, ts_ns: int
    ) -> Event:
        """Write the verdict; the `EventKind.AUDIT` event of the attempt, whatever its result."""
        ...


class WriteRefused(LinesideError):
    """A write to an address that is not on the write_allow list."""


def verdict_value(address: ModbusAddress, verdict: str) -> int:
    """What a verdict writes: a coil is set for NotOK (reject); a register gets the code."""
    if address.table is Table.COILS:
        return 1 if verdict == "NotOK" else 0
    return VERDICT_CODES[verdict]


def write_request(tid: int, unit_id: int, address: ModbusAddress, value: int) -> bytes:
    if address.table is Table.COILS:
        return mbap_frame(tid, unit_id, write_single_coil(address.offset, bool(value)))
    if address.table is Table.HOLDING_REGISTERS and address.bit is None:
        return mbap_frame(tid, unit_id, write_single_register(address.offset, value))
    raise ValueError(f"{address} cannot be written (coils and holding registers only)")


def audit_event(
    ts_ns: int,
    *,
    inspection: str,
    machine: str,
    address: ModbusAddress,
    verdict: str,
    verdict_ts_ns: int,
    value: int,
    result: WriteResult,
    error: str | None = None,
) -> Event:
    """The audit record of one write to a PLC: who (`who` names the kind of writer, the key of
    that name says which one), what (machine, address, value, and the verdict behind it) and
    how it went (`result`, with `error` unless ok). `ts_ns` is when the write was attempted;
    `verdict_ts_ns` finds the verdict's own event."""
    data: dict[str, Any] = {
        "who": "inspection",
        "inspection": inspection,
        "machine": machine,
        "address": str(address),
        "target": f"{machine}:{address}",
        "value": value,
        "verdict": verdict,
        "verdict_ts_ns": verdict_ts_ns,
        "result": result,
    }
    if error is not None:
        data["error"] = error
    return Event(EventKind.AUDIT, ts_ns, machine, data)


class ModbusWriteBack:
    """Writes verdicts of one machine to one address; keeps its connection between writes."""

    def __init__(
        self,
        machine: str,
        address: ModbusAddress,
        *,
        host: str,
        port: int,
        unit_id: int,
        allow: Collection[str],
        timeout: float = 1.0,
    ) -> None:
        self.machine = machine
        self.address = address
        self.target = f"{machine}:{address}"
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.allow = frozenset(allow)
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._tid = 0
        self._lock = asyncio.Lock()

    async def write(
        self, verdict: str, *, inspection: str, verdict_ts_ns: int, ts_ns: int
    ) -> Event:
        """Write the verdict's value for `inspection`; the audit event of the attempt, made at
        `ts_ns`. A refused write or a failed one (timeout, connection, device exception) is
        not raised: its audit says `refused` or `failed` and why."""
        value = verdict_value(self.address, verdict)
        result: WriteResult = "ok"
        error: str | None = None
        try:
            await self._write(value)
        except WriteRefused as exc:
            result, error = "refused", str(exc)
        except LinesideError as exc:
            result, error = "failed", str(exc)
        return audit_event(
            ts_ns,
            inspection=inspection,
            machine=self.machine,
            address=self.address,
            verdict=verdict,
            verdict_ts_ns=verdict_ts_ns,
            value=value,
            result=result,
            error=error,
        )

    async def _write(self, value: int) -> None:
        """Raises WriteRefused or a ConnectorError."""
        if self.target not in self.allow:
            raise WriteRefused(f"write to {self.target} refused: not on the write_allow list")
        async with self._lock:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the exchange finishes, and the agent's stop would hang.
                async with asyncio.timeout(self.timeout):
                    await self._exchange(value)
            except TimeoutError:
                await self.close()
                raise RequestTimeout(
                    f"write to {self.target}: no answer in {self.timeout}s"
                ) from None
            except OSError as exc:
                await self.close()
                raise ConnectError(f"write to {self.target}: {exc.strerror or exc}") from None

    async def _exchange(self, value: int) -> None:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        self._tid = (self._tid + 1) & 0xFFFF
        request = write_request(self._tid, self.unit_id, self.address, value)
        writer.write(request)
        await writer.drain()
        try:
            header = await reader.readexactly(MBAP_SIZE)
            tid, protocol, length, _unit = MBAP.unpack(header)
            body = await reader.readexactly(length - 1)
        except asyncio.IncompleteReadError:
            await self.close()
            raise ConnectError(f"write to {self.target}: connection closed") from None
        try:
            refused = exception_in(body, request[MBAP_SIZE])
        except MalformedPdu:
            refused = None  # not an echo either: refused below
        if refused is not None:
            raise DeviceError(f"write to {self.target}: {refused.message}", refused.code)
        if tid != self._tid or protocol != 0 or header + body != request:
            await self.close()
            raise ProtocolError(f"write to {self.target}: the answer does not echo the request")

    async def close(self) -> None:
        if self._streams is not None:
            _, writer = self._streams
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

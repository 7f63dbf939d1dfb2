"""The Modbus RTU source: one serial bus, its units polled in turn (see source.py)."""

from __future__ import annotations

from collections.abc import Sequence

from agent.errors import ConnectError
from agent.model import ReadingBatch
from connectors.modbus.config import (
    ModbusRtuSourceConfig,
)
from connectors.modbus.reads import ReadFailed, UnitBatch
from connectors.modbus.rtu import RtuLink
from connectors.modbus.source import ModbusSource


class ModbusRtuSource(ModbusSource[ModbusRtuSourceConfig]):
    """A Modbus RTU source: one serial bus, its units polled in turn."""

    _link: RtuLink | None = None

    async def connect(self) -> None:
        await self.close()
        config = self._config
        link = RtuLink(
            config.port,
            baudrate=config.baudrate,
            parity=config.parity,
            stopbits=config.stopbits,
            bytesize=config.bytesize,
            frame_pause=config.frame_pause,
        )
        self._stats.connects += 1
        await link.open()
        self._link = link

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()
            self._retire(link)

    def _wire(self) -> RtuLink | None:
        return self._link

    def _extras(self, now: float) -> dict[str, float]:
        extras = super()._extras(now)
        extras["stray_bytes"] = self._link.stray_bytes if self._link is not None else 0
        return extras

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        link = self._link
        if link is None or not link.is_open:
            raise ConnectError(f"{self.name}: {self._config.port} is not open")
        self._stats.polls += 1
        batches = self._begin(groups).batches
        by_unit: dict[int, list[UnitBatch]] = {}  # units in turn, each with all its due groups
        for batch in batches:
            by_unit.setdefault(batch.unit.unit_id, []).append(batch)
        try:
            for batch in (b for unit_batches in by_unit.values() for b in unit_batches):
                for read in batch.unit.reads:
                    if self._isolated(batch, self._clock.monotonic()):
                        self._skip(batch, read)
                        continue
                    try:
                        await self._read_or_split(link.read, batch, read)
                    except ReadFailed as failed:
                        self._fail(batch, read, failed)
        finally:
            self.reasons.report()
        now = self._clock.time_ns()
        return [b.batch(self.name, now) for b in batches]

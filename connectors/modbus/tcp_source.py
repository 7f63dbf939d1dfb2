"""The Modbus TCP source: one connection, any number of unit ids behind it (see source.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from agent.model import ReadingBatch
from connectors.modbus.client import ModbusTcpClient
from connectors.modbus.config import (
    ModbusTcpSourceConfig,
)
from connectors.modbus.reads import (
    GOOD,
    MALFORMED,
    RETRIED_CODES,
    PollBatches,
    Read,
    ReadFailed,
    UnitBatch,
    device_reason,
)
from connectors.modbus.source import ModbusSource


class ModbusTcpSource(ModbusSource[ModbusTcpSourceConfig]):
    """A Modbus TCP source: one connection, any number of unit ids behind it."""

    _client: ModbusTcpClient | None = None

    async def connect(self) -> None:
        await self.close()
        config = self._config
        client = ModbusTcpClient(
            config.host,
            config.port,
            max_in_flight=config.max_in_flight,
            connect_timeout=config.timeout,
        )
        self._stats.connects += 1
        await client.connect()
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
            self._retire(client)

    def _wire(self) -> ModbusTcpClient | None:
        return self._client

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        client = self._client
        if client is None or not client.connected:
            why = client.closed_reason if client is not None else "not connected"
            raise ConnectError(f"{self.name} ({self._config.endpoint}): {why}")
        self._stats.polls += 1
        polled = self._begin(groups)
        batches = polled.batches
        try:
            jobs = self._jobs(polled)
            if self._config.inter_request_delay > 0:
                await self._poll_spaced(client, jobs)
            else:
                await self._poll_pipelined(client, jobs)
        finally:
            self.reasons.report()
        now = self._clock.time_ns()
        return [b.batch(self.name, now) for b in batches]

    def _jobs(self, polled: PollBatches) -> Sequence[tuple[UnitBatch, Read]]:
        """The reads to send, in order; those of isolated units read bad unsent.

        A unit that failed recently goes last: behind a gateway that answers in order, its
        probe then cannot hold up the answers of the healthy units polled with it.
        """
        if all(b.state.until == -math.inf for b in polled.batches):  # no unit failed: usual
            return polled.jobs
        now = self._clock.monotonic()
        jobs: list[tuple[UnitBatch, Read]] = []
        suspects: list[tuple[UnitBatch, Read]] = []
        for batch in polled.batches:
            if self._isolated(batch, now):
                for read in batch.unit.reads:
                    self._skip(batch, read)
                continue
            into = suspects if batch.state.suspect else jobs
            into.extend((batch, read) for read in batch.unit.reads)
        return jobs + suspects

    def _abort(self, batch: UnitBatch, read: Read, client: ModbusTcpClient) -> None:
        """A read not sent or not answered because the connection closed under it."""
        batch.bad(read)
        self._stats.aborted += 1
        self.reasons.set(read.block, client.closed_reason)

    async def _poll_spaced(
        self, client: ModbusTcpClient, jobs: Sequence[tuple[UnitBatch, Read]]
    ) -> None:
        """One request at a time with a pause after each, so the pause means what it says."""
        delay = self._config.inter_request_delay
        closed_by_us = False  # the client closed the connection itself in this poll
        for batch, read in jobs:
            if closed_by_us:
                self._abort(batch, read, client)
                continue
            if self._isolated(batch, self._clock.monotonic()):
                self._skip(batch, read)  # isolated by an earlier read of this poll
                continue
            try:
                await self._read_or_split(client.read, batch, read)
            except ReadFailed as failed:
                self._fail(batch, read, failed)
                # A malformed answer, or a timeout that left half a frame, closes the
                # connection: the rest of the poll reads bad, the next poll reconnects.
                closed_by_us = not client.connected
            except ConnectError:
                if not closed_by_us:
                    batch.bad(read)
                    raise  # the link is gone: its error is every tag's reason (the link loop)
                self._abort(batch, read, client)
            await asyncio.sleep(delay)

    async def _poll_pipelined(
        self, client: ModbusTcpClient, jobs: Sequence[tuple[UnitBatch, Read]]
    ) -> None:
        """Send the reads in waves of `max_in_flight`, each in one write under one deadline.

        Per wave: one transport write, one timer, and the answers' futures awaited in order (an
        answer that came with an earlier one costs no wake-up). A read due for another attempt
        (a "busy" exception) joins the next wave; a read of a unit isolated in this poll (it
        timed out or garbled an answer) is not sent.
        """
        config = self._config
        stats = self._stats
        clock = self._clock
        width = config.max_in_flight
        # Attempts after the first, by id(read): a read is in one batch.
        retried: dict[int, int] = {}
        queue = list(jobs)  # in order; a wave is taken from its front
        closed_by_us = False  # the client closed the connection itself in this poll
        failures = stats.timeouts + stats.malformed  # what can isolate a unit
        while queue:
            wave, queue = queue[:width], queue[width:]
            if closed_by_us:
                for batch, read in wave:
                    self._abort(batch, read, client)
                continue
            if stats.timeouts + stats.malformed != failures:  # a unit may be isolated by now
                now = clock.monotonic()
                for batch, read in wave:
                    if self._isolated(batch, now):
                        self._skip(batch, read)
                wave = [(b, r) for b, r in wave if not self._isolated(b, now)]
                if not wave:
                    continue
            futures = client.send([r.frame for _, r in wave])  # ConnectError: the link is gone
            stats.requests += len(wave)
            sent = clock.monotonic()
            timer = client.expire_later(futures, config.timeout)
            retry: list[tuple[UnitBatch, Read]] = []
            gone: ConnectError | None = None
            arrived_s = sent
            arrived_ns = 0
            try:
                for (batch, read), future in zip(wave, futures, strict=True):
                    try:
                        if not future.done():
                            try:
                                await future
                            finally:
                                arrived_s = clock.monotonic()
                                arrived_ns = clock.time_ns()
                        payload = future.result()
                    except RequestTimeout:
                        stats.timeouts += 1
                        self._isolate(batch, read, self._timeout_reason)
                        closed_by_us |= not client.connected
                        continue
                    except DeviceError as exc:
                        stats.exceptions += 1
                        batch.state.answered()
                        if exc.code in RETRIED_CODES and self._may_retry(retried, read):
                            retry.append((batch, read))
                        elif parts := self._split(batch, read, exc.code):
                            retry.extend((batch, part) for part in parts)  # this poll still
                        else:
                            self._failed(batch, read, device_reason(exc))
                        continue
                    except ProtocolError:
                        stats.malformed += 1
                        self._isolate(batch, read, MALFORMED)
                        closed_by_us |= not client.connected
                        continue
                    except ConnectError as exc:
                        if closed_by_us:
                            self._abort(batch, read, client)
                        else:  # the link is gone: its error is every tag's reason
                            batch.bad(read)
                            gone = gone or exc
                        continue
                    stats.responses += 1
                    stats.record_latency(arrived_s - sent)
                    try:
                        batch.values[read.rows] = read.decoder.decode(payload)
                    except ValueError:  # the link checks sizes; this guards the codec's contract
                        stats.malformed += 1
                        self._isolate(batch, read, MALFORMED)
                        continue
                    if read.decoder.has_strings:  # text tags: their side channel (rare)
                        self._read_texts(read, payload, arrived_ns or clock.time_ns())
                    batch.quality[read.rows] = GOOD
                    batch.ts_ns = max(batch.ts_ns, arrived_ns or clock.time_ns())
                    self._good(read, batch.state)
            except BaseException:
                client.abandon(futures)  # cancelled: late answers must not look unexpected
                raise
            finally:
                timer.cancel()
            if gone is not None:
                for batch, read in retry:
                    batch.bad(read)
                raise gone
            queue = retry + queue  # retries first, in the next wave

    def _may_retry(self, retried: dict[int, int], read: Read) -> bool:
        """Whether `read` has an attempt left in this poll; if so, it is booked."""
        used = retried.get(id(read), 0)
        if used >= self._config.retries:
            return False
        retried[id(read)] = used + 1
        return True

"""Modbus TCP and RTU sources: the agent's acquisition path for Modbus PLCs.

Everything a poll needs is built once, at construction: for each unit and poll group the
unit's tags are planned into coalesced reads (`planner.plan_unit`) and each read gets its
`RequestDecoder`. A poll then only sends requests, decodes each answer with a few numpy
operations into a preallocated slice, and returns one `ReadingBatch` per unit and group.

On TCP a poll's requests go out in waves of `max_in_flight`: each wave is one socket write with
one deadline (`timeout`) for all of it, and the answers' futures are awaited in order, so a
poll costs no task and no timeout context per request. With `inter_request_delay` set the
requests go one at a time instead, each with its own deadline.

Poll groups: a unit's tags are polled at its `poll_interval`; a tag with its own `interval`
joins the group of that interval. Groups are named by their interval ("1s", "250ms") and
shared by every unit of the source.

Failures: a request that times out, gets an exception response or a malformed answer gives
its tags bad quality (NaN) and is counted by kind; `poll` raises `ConnectError` only when the
link itself is gone. On TCP a malformed answer closes the connection (the stream cannot be
trusted), and so does a timeout that leaves half an answer behind; the rest of that poll
reads bad, and the next poll raises `ConnectError` so the agent's loop reconnects.
`retries` re-sends a request after a timeout (TCP) or a "busy" / "acknowledge" exception
(codes 05, 06; both links); other exceptions are final.

RTU: units share one bus and are polled in turn. A unit that times out or garbles its answer
is isolated: its tags read bad without a request until its back-off expires (1 s doubling
to 60 s, reset by any answer), so a dead unit costs one timeout per back-off period and the
other units keep their rate. RTU does not retry timeouts: isolation takes their place.

String tags are not read: a reading is a float64. They are left out of the plan (and so of
every batch); `statistics()["string_tags"]` says how many were skipped.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.clock import Clock, SystemClock
from agent.duration import format_duration
from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from agent.histogram import Histogram
from agent.model import Quality, ReadingBatch
from agent.tags import TagTable
from connectors.modbus.client import ModbusTcpClient
from connectors.modbus.codec import RequestDecoder
from connectors.modbus.config import (
    ModbusRtuSourceConfig,
    ModbusTag,
    ModbusTcpSourceConfig,
    ModbusUnit,
)
from connectors.modbus.planner import PlanTag, ReadPlan, plan_unit, tag_width
from connectors.modbus.rtu import RtuLink

# Exception codes that mean "ask again later" (standards.md §7 item 26): retried, others not.
_RETRIED_CODES = frozenset({0x05, 0x06})
_LATENCY_SAMPLES = 1024  # recent read latencies kept for p50/p99
_GOOD = np.uint8(Quality.GOOD)
_BAD = np.uint8(Quality.BAD)

Reader = Callable[[int, int, int, int, float], Awaitable[bytes]]


def group_name(interval: float) -> str:
    return format_duration(interval)


def plan_tag(tag: ModbusTag, tag_id: int) -> PlanTag:
    table = tag.address.table
    length = tag.length or 0
    return PlanTag(
        tag_id=tag_id,
        table=table,
        offset=tag.address.offset,
        width=tag_width(table, tag.type, length),
        type=tag.type,
        order=tag.order,
        bit=tag.address.bit,
        length=length,
        scale=tag.scale,
        offset_value=tag.offset,
    )


@dataclass(frozen=True, slots=True)
class _Read:
    """One request of a unit-group and the rows of the batch its tags fill."""

    decoder: RequestDecoder
    rows: slice
    frame: tuple[int, int, int, int]  # (unit_id, function, start, count), as the link sends it

    @property
    def function(self) -> int:
        return self.decoder.request.function_code


@dataclass(frozen=True, slots=True)
class UnitGroup:
    """The reads of one unit for one poll group, planned once."""

    unit_id: int
    machine: str
    group: str
    plan: ReadPlan
    reads: tuple[_Read, ...]
    tag_ids: npt.NDArray[np.int32]


@dataclass(slots=True)
class _Batch:
    """One unit-group's readings while a poll fills them in."""

    unit: UnitGroup
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    ts_ns: int = 0

    def bad(self, read: _Read) -> None:
        self.values[read.rows] = math.nan
        self.quality[read.rows] = _BAD

    def batch(self, source: str, fallback_ns: int) -> ReadingBatch:
        return ReadingBatch(
            source=source,
            tag_ids=self.unit.tag_ids,
            values=self.values,
            quality=self.quality,
            ts_ns=np.array([self.ts_ns or fallback_ns], dtype=np.int64),
        )


@dataclass(slots=True)
class _Counters:
    polls: int = 0
    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    exceptions: int = 0
    malformed: int = 0
    aborted: int = 0  # reads not sent: link closed mid-poll, or the unit isolated
    connects: int = 0
    latency: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(_LATENCY_SAMPLES, dtype=np.float64)
    )
    latency_count: int = 0
    latency_last: float = math.nan
    # Every request since start, for /metrics (the ring above only keeps the recent ones).
    latency_histogram: Histogram = field(default_factory=Histogram)

    def record_latency(self, seconds: float) -> None:
        self.latency[self.latency_count % _LATENCY_SAMPLES] = seconds
        self.latency_count += 1
        self.latency_last = seconds
        self.latency_histogram.observe(seconds)

    def record_latencies(self, seconds: list[float]) -> None:
        """Several at once: one store into the ring (which they never wrap more than once)."""
        n = len(seconds)
        if n == 0:
            return
        self.latency_histogram.observe_many(seconds)
        if n > _LATENCY_SAMPLES:
            seconds = seconds[-_LATENCY_SAMPLES:]
            n = _LATENCY_SAMPLES
        at = self.latency_count % _LATENCY_SAMPLES
        head = min(n, _LATENCY_SAMPLES - at)
        self.latency[at : at + head] = seconds[:head]
        self.latency[: n - head] = seconds[head:]
        self.latency_count += len(seconds)
        self.latency_last = seconds[-1]


class _Failed(Exception):
    """A read failed for good (timeout, exception or malformed); already counted."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        super().__init__(str(cause))


class _ModbusSource:
    """What both sources share: plans, batches, counters and the retrying read."""

    def __init__(
        self,
        config: ModbusTcpSourceConfig | ModbusRtuSourceConfig,
        tags: TagTable,
        clock: Clock | None,
    ) -> None:
        self.name = config.name
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._stats = _Counters()
        self._string_tags = 0
        groups: dict[str, float] = {}
        plans: dict[str, list[UnitGroup]] = {}
        for unit in config.units:
            for name, interval, unit_tags in self._unit_groups(unit):
                groups[name] = interval
                ids = [tags.id_of(unit.machine, t.name) for t in unit_tags]
                plans.setdefault(name, []).append(self._plan(unit, name, unit_tags, ids))
        self._intervals = dict(sorted(groups.items(), key=lambda kv: kv[1]))
        self._plans = {name: tuple(units) for name, units in plans.items()}

    def _unit_groups(self, unit: ModbusUnit) -> Iterator[tuple[str, float, list[ModbusTag]]]:
        by_interval: dict[float, list[ModbusTag]] = {}
        for tag in unit.tags:
            if tag.type == "string":
                self._string_tags += 1
                continue
            interval = tag.interval if tag.interval is not None else unit.poll_interval
            by_interval.setdefault(interval, []).append(tag)
        for interval, group_tags in by_interval.items():
            yield group_name(interval), interval, group_tags

    def _plan(
        self, unit: ModbusUnit, group: str, unit_tags: Sequence[ModbusTag], ids: Sequence[int]
    ) -> UnitGroup:
        config = self._config
        plan = plan_unit(
            [plan_tag(t, i) for t, i in zip(unit_tags, ids, strict=True)],
            max_registers=config.max_registers_per_read,
            max_bits=config.max_bits_per_read,
            max_gap=config.max_gap,
        )
        reads: list[_Read] = []
        row = 0
        for request in plan.requests:
            decoder = RequestDecoder(request)
            n = decoder.tag_ids.shape[0]
            frame = (unit.unit_id, request.function_code, request.start, request.count)
            reads.append(_Read(decoder, slice(row, row + n), frame))
            row += n
        tag_ids = (
            np.concatenate([r.decoder.tag_ids for r in reads])
            if reads
            else np.zeros(0, dtype=np.int32)
        )
        return UnitGroup(unit.unit_id, unit.machine, group, plan, tuple(reads), tag_ids)

    # -- the Source protocol ---------------------------------------------------------------

    def poll_groups(self) -> Mapping[str, float]:
        return dict(self._intervals)

    def unit_groups(self, group: str) -> tuple[UnitGroup, ...]:
        """The planned reads of one poll group, unit by unit (for `lineside plan`)."""
        return self._plans[group]

    def bad_batches(self, groups: Sequence[str], ts_ns: int) -> list[ReadingBatch]:
        out = []
        for group in groups:
            for unit in self._plans[group]:
                n = unit.tag_ids.shape[0]
                out.append(
                    ReadingBatch(
                        source=self.name,
                        tag_ids=unit.tag_ids,
                        values=np.full(n, math.nan),
                        quality=np.full(n, _BAD, dtype=np.uint8),
                        ts_ns=np.array([ts_ns], dtype=np.int64),
                    )
                )
        return out

    def statistics(self) -> Mapping[str, float]:
        s = self._stats
        kept = s.latency[: min(s.latency_count, _LATENCY_SAMPLES)]
        p50, p99 = np.percentile(kept, [50, 99]) if kept.size else (math.nan, math.nan)
        return {
            "polls": s.polls,
            "requests": s.requests,
            "responses": s.responses,
            "timeouts": s.timeouts,
            "exceptions": s.exceptions,
            "malformed": s.malformed,
            "aborted": s.aborted,
            "bytes_in": self._bytes()[0],
            "bytes_out": self._bytes()[1],
            "latency_last_s": s.latency_last,
            "latency_p50_s": float(p50),
            "latency_p99_s": float(p99),
            "connects": s.connects,
            "reconnects": max(s.connects - 1, 0),
            "string_tags": self._string_tags,
            **s.latency_histogram.statistics("latency"),
        }

    # -- shared machinery ------------------------------------------------------------------

    def _bytes(self) -> tuple[int, int]:
        raise NotImplementedError

    def _new_batches(self, groups: Sequence[str]) -> list[_Batch]:
        batches = []
        for group in groups:
            for unit in self._plans[group]:
                n = unit.tag_ids.shape[0]
                batches.append(
                    _Batch(unit, np.empty(n, dtype=np.float64), np.empty(n, dtype=np.uint8))
                )
        return batches

    async def _read(self, reader: Reader, batch: _Batch, read: _Read, retry_timeouts: bool) -> None:
        """Read one request into its batch rows; `_Failed` (counted) if it failed for good.

        `ConnectError` passes through: the link is gone.
        """
        config = self._config
        request = read.decoder.request
        stats = self._stats
        clock = self._clock
        attempts = config.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            stats.requests += 1
            started = clock.monotonic()
            try:
                payload = await reader(
                    batch.unit.unit_id, read.function, request.start, request.count, config.timeout
                )
            except RequestTimeout as exc:
                stats.timeouts += 1
                if last or not retry_timeouts:
                    raise _Failed(exc) from None
                continue
            except DeviceError as exc:
                stats.exceptions += 1
                if last or exc.code not in _RETRIED_CODES:
                    raise _Failed(exc) from None
                continue
            except ProtocolError as exc:
                stats.malformed += 1
                raise _Failed(exc) from None
            arrived = clock.time_ns()
            stats.responses += 1
            stats.record_latency(clock.monotonic() - started)
            try:
                batch.values[read.rows] = read.decoder.decode(payload)
            except ValueError as exc:  # the links check sizes; this guards the codec's contract
                stats.malformed += 1
                raise _Failed(ProtocolError(str(exc))) from None
            batch.quality[read.rows] = _GOOD
            batch.ts_ns = max(batch.ts_ns, arrived)
            return


class ModbusTcpSource(_ModbusSource):
    """A Modbus TCP source: one connection, any number of unit ids behind it."""

    def __init__(
        self, config: ModbusTcpSourceConfig, tags: TagTable, clock: Clock | None = None
    ) -> None:
        super().__init__(config, tags, clock)
        self._tcp = config
        self._client: ModbusTcpClient | None = None
        self._old_bytes = (0, 0)  # bytes of closed connections

    async def connect(self) -> None:
        await self.close()
        config = self._tcp
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
            self._old_bytes = (
                self._old_bytes[0] + client.bytes_in,
                self._old_bytes[1] + client.bytes_out,
            )

    def _bytes(self) -> tuple[int, int]:
        bytes_in, bytes_out = self._old_bytes
        if self._client is not None:
            bytes_in += self._client.bytes_in
            bytes_out += self._client.bytes_out
        return bytes_in, bytes_out

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        client = self._client
        if client is None or not client.connected:
            why = client.closed_reason if client is not None else "not connected"
            raise ConnectError(f"{self.name} ({self._tcp.endpoint}): {why}")
        self._stats.polls += 1
        batches = self._new_batches(groups)
        jobs = [(b, r) for b in batches for r in b.unit.reads]
        if self._tcp.inter_request_delay > 0:
            await self._poll_spaced(client, jobs)
        else:
            await self._poll_pipelined(client, jobs)
        now = self._clock.time_ns()
        return [b.batch(self.name, now) for b in batches]

    async def _poll_spaced(self, client: ModbusTcpClient, jobs: list[tuple[_Batch, _Read]]) -> None:
        """One request at a time with a pause after each, so the pause means what it says."""
        delay = self._tcp.inter_request_delay
        closed_by_us = False  # the client closed the connection itself in this poll
        for batch, read in jobs:
            if closed_by_us:
                batch.bad(read)
                self._stats.aborted += 1
                continue
            try:
                await self._read(client.read, batch, read, retry_timeouts=True)
            except _Failed:
                batch.bad(read)
                # A malformed answer, or a timeout that left half a frame, closes the
                # connection: the rest of the poll reads bad, the next poll reconnects.
                closed_by_us = not client.connected
            except ConnectError:
                batch.bad(read)
                if not closed_by_us:
                    raise
                self._stats.aborted += 1
            await asyncio.sleep(delay)

    async def _poll_pipelined(
        self, client: ModbusTcpClient, jobs: list[tuple[_Batch, _Read]]
    ) -> None:
        """Send the reads in waves of `max_in_flight`, each in one write under one deadline.

        Per wave: one transport write, one timer, and the answers' futures awaited in order (an
        answer that came with an earlier one costs no wake-up). A read due for another attempt
        (a timeout, a "busy" exception) joins the next wave.
        """
        config = self._tcp
        stats = self._stats
        clock = self._clock
        loop = asyncio.get_running_loop()
        width = config.max_in_flight
        retried: dict[
            int, int
        ] = {}  # attempts after the first, by id(read): a read is in one batch
        queue = jobs[::-1]  # popped from the end: the next job last
        closed_by_us = False  # the client closed the connection itself in this poll
        latencies: list[float] = []
        while queue:
            wave = [queue.pop() for _ in range(min(width, len(queue)))]
            if closed_by_us:
                for batch, read in wave:
                    batch.bad(read)
                stats.aborted += len(wave)
                continue
            futures = client.send([r.frame for _, r in wave])  # ConnectError: the link is gone
            stats.requests += len(wave)
            sent = clock.monotonic()
            timer = loop.call_later(config.timeout, client.expire, futures, config.timeout)
            retry: list[tuple[_Batch, _Read]] = []
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
                        if client.connected and self._may_retry(retried, read):
                            retry.append((batch, read))
                        else:
                            batch.bad(read)
                            closed_by_us |= not client.connected
                        continue
                    except DeviceError as exc:
                        stats.exceptions += 1
                        if exc.code in _RETRIED_CODES and self._may_retry(retried, read):
                            retry.append((batch, read))
                        else:
                            batch.bad(read)
                        continue
                    except ProtocolError:
                        stats.malformed += 1
                        batch.bad(read)
                        closed_by_us |= not client.connected
                        continue
                    except ConnectError as exc:
                        batch.bad(read)
                        if closed_by_us:
                            stats.aborted += 1
                        elif gone is None:
                            gone = exc
                        continue
                    stats.responses += 1
                    latencies.append(arrived_s - sent)
                    try:
                        batch.values[read.rows] = read.decoder.decode(payload)
                    except ValueError:  # the link checks sizes; this guards the codec's contract
                        stats.malformed += 1
                        batch.bad(read)
                        continue
                    batch.quality[read.rows] = _GOOD
                    batch.ts_ns = max(batch.ts_ns, arrived_ns or clock.time_ns())
            except BaseException:
                client.abandon(futures)  # cancelled: late answers must not look unexpected
                raise
            finally:
                timer.cancel()
            if gone is not None:
                stats.record_latencies(latencies)
                for batch, read in retry:
                    batch.bad(read)
                raise gone
            queue.extend(reversed(retry))
        stats.record_latencies(latencies)

    def _may_retry(self, retried: dict[int, int], read: _Read) -> bool:
        """Whether `read` has an attempt left in this poll; if so, it is booked."""
        used = retried.get(id(read), 0)
        if used >= self._tcp.retries:
            return False
        retried[id(read)] = used + 1
        return True


@dataclass(slots=True)
class _UnitState:
    """Isolation of one RTU unit: skipped until `until` (monotonic) after a failure."""

    backoff: float
    until: float = -math.inf
    isolations: int = 0


class ModbusRtuSource(_ModbusSource):
    """A Modbus RTU source: one serial bus, its units polled in turn."""

    def __init__(
        self,
        config: ModbusRtuSourceConfig,
        tags: TagTable,
        clock: Clock | None = None,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        super().__init__(config, tags, clock)
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("back-off must satisfy 0 < backoff_initial <= backoff_max")
        self._rtu = config
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._units = {u.unit_id: _UnitState(backoff_initial) for u in config.units}
        self._link: RtuLink | None = None
        self._old_bytes = (0, 0)
        self._skipped = 0

    async def connect(self) -> None:
        await self.close()
        config = self._rtu
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
            self._old_bytes = (
                self._old_bytes[0] + link.bytes_in,
                self._old_bytes[1] + link.bytes_out,
            )

    def _bytes(self) -> tuple[int, int]:
        bytes_in, bytes_out = self._old_bytes
        if self._link is not None:
            bytes_in += self._link.bytes_in
            bytes_out += self._link.bytes_out
        return bytes_in, bytes_out

    def statistics(self) -> Mapping[str, float]:
        now = self._clock.monotonic()
        stats = dict(super().statistics())
        stats["isolated_units"] = sum(1 for s in self._units.values() if s.until > now)
        stats["isolations"] = sum(s.isolations for s in self._units.values())
        stats["skipped_requests"] = self._skipped
        stats["stray_bytes"] = self._link.stray_bytes if self._link is not None else 0
        return stats

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        link = self._link
        if link is None or not link.is_open:
            raise ConnectError(f"{self.name}: {self._rtu.port} is not open")
        self._stats.polls += 1
        batches = self._new_batches(groups)
        by_unit: dict[int, list[_Batch]] = {}
        for batch in batches:
            by_unit.setdefault(batch.unit.unit_id, []).append(batch)
        for unit_id, unit_batches in by_unit.items():
            await self._poll_unit(link, self._units[unit_id], unit_batches)
        now = self._clock.time_ns()
        return [b.batch(self.name, now) for b in batches]

    async def _poll_unit(self, link: RtuLink, state: _UnitState, batches: list[_Batch]) -> None:
        isolated = self._clock.monotonic() < state.until
        for batch in batches:
            for read in batch.unit.reads:
                if isolated:
                    batch.bad(read)
                    self._skipped += 1
                    continue
                try:
                    await self._read(link.read, batch, read, retry_timeouts=False)
                except _Failed as failed:
                    batch.bad(read)
                    if isinstance(failed.cause, RequestTimeout | ProtocolError):
                        # Silent or garbling: stop spending bus time on it for a while.
                        state.until = self._clock.monotonic() + state.backoff
                        state.backoff = min(state.backoff * 2, self._backoff_max)
                        state.isolations += 1
                        isolated = True
                    else:
                        state.backoff = self._backoff_initial  # it answered
                else:
                    state.backoff = self._backoff_initial
                    state.until = -math.inf

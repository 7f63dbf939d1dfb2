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
link itself is gone. Each request is a block of `reasons` (agent/reasons.py): its reason is
set after every attempt ("illegal data address (02)", "timeout after 1s", "malformed answer",
"" when good) and logged once per change. On TCP a malformed answer closes the connection
(the stream cannot be trusted), and so does a timeout that leaves half an answer behind; the
rest of that poll reads bad, and the next poll raises `ConnectError` so the agent's loop
reconnects. `retries` re-sends a request after a "busy" / "acknowledge" exception (codes 05,
06); other exceptions are final.

Isolation (both links): a unit that times out or garbles its answer is isolated: its other
requests in that poll and in later polls read bad, with the reason that isolated it, without
a request until its back-off expires (1 s doubling to 60 s, reset by any answer). So a silent
unit is bad within one timeout and then costs one timeout per back-off period, and the other
units on the same bus or gateway connection keep their rate. Timeouts are not retried:
isolation takes their place. On TCP the requests of a unit that failed recently go last in a
poll, so a gateway that serialises its requests does not make the healthy units wait for it.

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
from agent.reasons import Reasons
from agent.tags import TagTable
from connectors.modbus.client import ModbusTcpClient
from connectors.modbus.codec import RequestDecoder
from connectors.modbus.config import (
    ModbusRtuSourceConfig,
    ModbusTag,
    ModbusTcpSourceConfig,
    ModbusUnit,
)
from connectors.modbus.pdu import exception_reason
from connectors.modbus.planner import PlanTag, ReadPlan, plan_unit, tag_width
from connectors.modbus.rtu import RtuLink

# Exception codes that mean "ask again later" (standards.md §7 item 26): retried, others not.
_RETRIED_CODES = frozenset({0x05, 0x06})
_LATENCY_SAMPLES = 1024  # recent read latencies kept for p50/p99
_GOOD = np.uint8(Quality.GOOD)
_MALFORMED = "malformed answer"
_BAD = np.uint8(Quality.BAD)

Reader = Callable[[int, int, int, int, float], Awaitable[bytes]]


def _device_reason(exc: DeviceError) -> str:
    return exception_reason(exc.code) if exc.code is not None else str(exc)


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
    block: int  # its index in the source's `reasons`

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
class _UnitState:
    """Isolation of one unit: skipped until `until` (monotonic) after a failure."""

    backoff: float
    initial: float
    until: float = -math.inf
    isolations: int = 0
    reason: str = ""  # why it was isolated: its skipped requests read bad for this

    @property
    def suspect(self) -> bool:
        """It failed and has not answered since (isolated, or due for its probe)."""
        return self.backoff > self.initial

    def answered(self) -> None:
        if self.backoff != self.initial:
            self.backoff = self.initial
            self.until = -math.inf


@dataclass(slots=True)
class _Batch:
    """One unit-group's readings while a poll fills them in."""

    unit: UnitGroup
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint8]
    state: _UnitState
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
    aborted: int = 0  # reads not sent: the link closed mid-poll
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

    def __init__(self, cause: Exception, reason: str) -> None:
        self.cause = cause
        self.reason = reason
        super().__init__(str(cause))


class _ModbusSource:
    """What both sources share: plans, batches, counters and the retrying read."""

    def __init__(
        self,
        config: ModbusTcpSourceConfig | ModbusRtuSourceConfig,
        tags: TagTable,
        clock: Clock | None,
        backoff_initial: float,
        backoff_max: float,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("back-off must satisfy 0 < backoff_initial <= backoff_max")
        self.name = config.name
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._stats = _Counters()
        self._string_tags = 0
        self._backoff_max = backoff_max
        self._units = {
            u.unit_id: _UnitState(backoff_initial, backoff_initial) for u in config.units
        }
        self._skipped = 0  # requests not sent: their unit was isolated
        self.reasons = Reasons(config.name, clock=self._clock.monotonic)
        # Reasons in the words of this config, built once.
        self._timeout_reason = f"timeout after {format_duration(config.timeout)}"
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
            label = f"unit {unit.unit_id} {request.table}:{request.start}+{request.count}"
            block = self.reasons.add_block(decoder.tag_ids.tolist(), label)
            reads.append(_Read(decoder, slice(row, row + n), frame, block))
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
        now = self._clock.monotonic()
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
            "isolated_units": sum(1 for u in self._units.values() if u.until > now),
            "isolations": sum(u.isolations for u in self._units.values()),
            "skipped_requests": self._skipped,
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
                    _Batch(
                        unit,
                        np.empty(n, dtype=np.float64),
                        np.empty(n, dtype=np.uint8),
                        self._units[unit.unit_id],
                    )
                )
        return batches

    # -- isolation and reasons (both links) ------------------------------------------------

    def _isolated(self, batch: _Batch, now: float) -> bool:
        return now < batch.state.until

    def _skip(self, batch: _Batch, read: _Read) -> None:
        """A read of an isolated unit: bad for the reason that isolated it, not sent."""
        batch.bad(read)
        self._skipped += 1
        self.reasons.set(read.block, batch.state.reason)

    def _failed(self, batch: _Batch, read: _Read, reason: str) -> None:
        """A read that failed for good and does not say the unit is gone (an exception)."""
        batch.bad(read)
        self.reasons.set(read.block, reason)

    def _isolate(self, batch: _Batch, read: _Read, reason: str) -> None:
        """A read the unit left unanswered or garbled: silent or garbling, so stop spending
        link time on it until its back-off expires."""
        batch.bad(read)
        self.reasons.set(read.block, reason)
        state = batch.state
        if self._clock.monotonic() < state.until:
            return  # already isolated by another read of this poll
        state.until = self._clock.monotonic() + state.backoff
        state.backoff = min(state.backoff * 2, self._backoff_max)
        state.isolations += 1
        state.reason = reason

    def _good(self, read: _Read, state: _UnitState) -> None:
        # Called per answered read: two plain tests when nothing changed.
        if self.reasons.current[read.block]:
            self.reasons.set(read.block, "")
        if state.backoff != state.initial:
            state.answered()

    async def _read(self, reader: Reader, batch: _Batch, read: _Read) -> None:
        """Read one request into its batch rows; `_Failed` (counted) if it failed for good.

        Timeouts are not retried (isolation takes their place); "busy" exceptions are.
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
                raise _Failed(exc, self._timeout_reason) from None
            except DeviceError as exc:
                stats.exceptions += 1
                batch.state.answered()
                if last or exc.code not in _RETRIED_CODES:
                    raise _Failed(exc, _device_reason(exc)) from None
                continue
            except ProtocolError as exc:
                stats.malformed += 1
                raise _Failed(exc, _MALFORMED) from None
            arrived = clock.time_ns()
            stats.responses += 1
            stats.record_latency(clock.monotonic() - started)
            try:
                batch.values[read.rows] = read.decoder.decode(payload)
            except ValueError as exc:  # the links check sizes; this guards the codec's contract
                stats.malformed += 1
                raise _Failed(ProtocolError(str(exc)), _MALFORMED) from None
            batch.quality[read.rows] = _GOOD
            batch.ts_ns = max(batch.ts_ns, arrived)
            self._good(read, batch.state)
            return

    def _fail(self, batch: _Batch, read: _Read, failed: _Failed) -> None:
        """Book a read that failed for good: a timeout or garble isolates its unit."""
        if isinstance(failed.cause, RequestTimeout | ProtocolError):
            self._isolate(batch, read, failed.reason)
        else:
            self._failed(batch, read, failed.reason)


class ModbusTcpSource(_ModbusSource):
    """A Modbus TCP source: one connection, any number of unit ids behind it."""

    def __init__(
        self,
        config: ModbusTcpSourceConfig,
        tags: TagTable,
        clock: Clock | None = None,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        super().__init__(config, tags, clock, backoff_initial, backoff_max)
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
        try:
            jobs = self._jobs(batches)
            if self._tcp.inter_request_delay > 0:
                await self._poll_spaced(client, jobs)
            else:
                await self._poll_pipelined(client, jobs)
        finally:
            self.reasons.report()
        now = self._clock.time_ns()
        return [b.batch(self.name, now) for b in batches]

    def _jobs(self, batches: list[_Batch]) -> list[tuple[_Batch, _Read]]:
        """The reads to send, in order; those of isolated units read bad unsent.

        A unit that failed recently goes last: behind a gateway that answers in order, its
        probe then cannot hold up the answers of the healthy units polled with it.
        """
        if all(b.state.until == -math.inf for b in batches):  # no unit failed: the usual case
            return [(b, r) for b in batches for r in b.unit.reads]
        now = self._clock.monotonic()
        jobs: list[tuple[_Batch, _Read]] = []
        suspects: list[tuple[_Batch, _Read]] = []
        for batch in batches:
            if self._isolated(batch, now):
                for read in batch.unit.reads:
                    self._skip(batch, read)
                continue
            into = suspects if batch.state.suspect else jobs
            into.extend((batch, read) for read in batch.unit.reads)
        return jobs + suspects

    def _abort(self, batch: _Batch, read: _Read, client: ModbusTcpClient) -> None:
        """A read not sent or not answered because the connection closed under it."""
        batch.bad(read)
        self._stats.aborted += 1
        self.reasons.set(read.block, client.closed_reason)

    async def _poll_spaced(self, client: ModbusTcpClient, jobs: list[tuple[_Batch, _Read]]) -> None:
        """One request at a time with a pause after each, so the pause means what it says."""
        delay = self._tcp.inter_request_delay
        closed_by_us = False  # the client closed the connection itself in this poll
        for batch, read in jobs:
            if closed_by_us:
                self._abort(batch, read, client)
                continue
            if self._isolated(batch, self._clock.monotonic()):
                self._skip(batch, read)  # isolated by an earlier read of this poll
                continue
            try:
                await self._read(client.read, batch, read)
            except _Failed as failed:
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
        self, client: ModbusTcpClient, jobs: list[tuple[_Batch, _Read]]
    ) -> None:
        """Send the reads in waves of `max_in_flight`, each in one write under one deadline.

        Per wave: one transport write, one timer, and the answers' futures awaited in order (an
        answer that came with an earlier one costs no wake-up). A read due for another attempt
        (a "busy" exception) joins the next wave; a read of a unit isolated in this poll (it
        timed out or garbled an answer) is not sent.
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
        failures = stats.timeouts + stats.malformed  # what can isolate a unit
        while queue:
            wave = [queue.pop() for _ in range(min(width, len(queue)))]
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
                        self._isolate(batch, read, self._timeout_reason)
                        closed_by_us |= not client.connected
                        continue
                    except DeviceError as exc:
                        stats.exceptions += 1
                        batch.state.answered()
                        if exc.code in _RETRIED_CODES and self._may_retry(retried, read):
                            retry.append((batch, read))
                        else:
                            self._failed(batch, read, _device_reason(exc))
                        continue
                    except ProtocolError:
                        stats.malformed += 1
                        self._isolate(batch, read, _MALFORMED)
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
                    latencies.append(arrived_s - sent)
                    try:
                        batch.values[read.rows] = read.decoder.decode(payload)
                    except ValueError:  # the link checks sizes; this guards the codec's contract
                        stats.malformed += 1
                        self._isolate(batch, read, _MALFORMED)
                        continue
                    batch.quality[read.rows] = _GOOD
                    batch.ts_ns = max(batch.ts_ns, arrived_ns or clock.time_ns())
                    self._good(read, batch.state)
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
        super().__init__(config, tags, clock, backoff_initial, backoff_max)
        self._rtu = config
        self._link: RtuLink | None = None
        self._old_bytes = (0, 0)

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
        stats = dict(super().statistics())
        stats["stray_bytes"] = self._link.stray_bytes if self._link is not None else 0
        return stats

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        link = self._link
        if link is None or not link.is_open:
            raise ConnectError(f"{self.name}: {self._rtu.port} is not open")
        self._stats.polls += 1
        batches = self._new_batches(groups)
        by_unit: dict[int, list[_Batch]] = {}  # units in turn, each with all its due groups
        for batch in batches:
            by_unit.setdefault(batch.unit.unit_id, []).append(batch)
        try:
            for batch in (b for unit_batches in by_unit.values() for b in unit_batches):
                for read in batch.unit.reads:
                    if self._isolated(batch, self._clock.monotonic()):
                        self._skip(batch, read)
                        continue
                    try:
                        await self._read(link.read, batch, read)
                    except _Failed as failed:
                        self._fail(batch, read, failed)
        finally:
            self.reasons.report()
        now = self._clock.time_ns()
        return [b.batch(self.name, now) for b in batches]

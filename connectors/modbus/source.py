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

Holes in the map (both links): by default a TCP source reads through every gap one request
can span (`max_gap`), and a device may refuse such a read with exception 02 (illegal data
address) because it does not map the addresses between the tags. Then that read is split into
reads of its tags with no gap bridged, sent at once in the same poll, and the split is kept for
as long as the source runs (one warning names it); a part that is refused again reads bad.

Isolation (both links): a unit that times out or garbles its answer is isolated: its other
requests in that poll and in later polls read bad, with the reason that isolated it, without
a request until its back-off expires (1 s doubling to 60 s, reset by any answer). So a silent
unit is bad within one timeout and then costs one timeout per back-off period, and the other
units on the same bus or gateway connection keep their rate. Timeouts are not retried:
isolation takes their place. On TCP the requests of a unit that failed recently go last in a
poll, so a gateway that serialises its requests does not make the healthy units wait for it.

String tags are planned and read with the others but never enter a batch (a reading is a
float64): a request that holds one decodes its bytes into the source's `texts`
(agent/texts.py), and its reason covers them as it covers its numeric tags.
`statistics().extras["string_tags"]` says how many there are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np

from agent.clock import Clock, SystemClock
from agent.duration import format_duration
from agent.errors import DeviceError, ProtocolError, RequestTimeout
from agent.histogram import percentiles
from agent.model import ReadingBatch
from agent.reasons import Reasons
from agent.statistics import SourceStatistics
from agent.tags import TagTable
from agent.texts import Texts
from connectors.modbus.codec import RequestDecoder
from connectors.modbus.config import (
    ModbusRtuSourceConfig,
    ModbusTag,
    ModbusTcpSourceConfig,
    ModbusUnit,
)
from connectors.modbus.planner import (
    BITS_PER_REGISTER,
    ReadPlan,
    ReadRequest,
    plan_unit,
    split_request,
)
from connectors.modbus.reads import (
    BAD,
    GOOD,
    LATENCY_SAMPLES,
    MALFORMED,
    RETRIED_CODES,
    Counters,
    PollBatches,
    Read,
    Reader,
    ReadFailed,
    UnitBatch,
    UnitGroup,
    UnitState,
    device_reason,
    group_name,
    plan_tag,
)

log = logging.getLogger("lineside.source")

ILLEGAL_DATA_ADDRESS = 0x02


class Wire(Protocol):
    """What a source counts of its link: a TCP connection or a serial port."""

    bytes_in: int
    bytes_out: int


Config = TypeVar("Config", ModbusTcpSourceConfig, ModbusRtuSourceConfig)


class ModbusSource(Generic[Config]):
    """What both sources share: plans, batches, counters and the retrying read."""

    def __init__(
        self,
        config: Config,
        tags: TagTable,
        clock: Clock | None = None,
        *,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("back-off must satisfy 0 < backoff_initial <= backoff_max")
        self.name = config.name
        self._config: Config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._stats = Counters()
        self._string_tags = 0
        self._backoff_max = backoff_max
        self._units = {u.unit_id: UnitState(backoff_initial, backoff_initial) for u in config.units}
        self._skipped = 0  # requests not sent: their unit was isolated
        self._old_bytes = (0, 0)  # bytes of closed connections
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
        self._batches: dict[tuple[str, ...], PollBatches] = {}  # by the groups polled
        self.texts = Texts(self._text_ids())  # the strings of the text tags (agent/texts.py)

    def _text_ids(self) -> list[int]:
        out: list[int] = []
        for units in self._plans.values():
            for unit_group in units:
                for planned in unit_group.reads:
                    out += planned.decoder.string_tag_ids.tolist()
        return out

    def _unit_groups(self, unit: ModbusUnit) -> Iterator[tuple[str, float, list[ModbusTag]]]:
        by_interval: dict[float, list[ModbusTag]] = {}
        for tag in unit.tags:
            if tag.type == "string":
                self._string_tags += 1
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
            max_bit_gap=config.max_gap * BITS_PER_REGISTER,
        )
        reads: list[Read] = []
        row = 0
        for request in plan.requests:
            decoder: RequestDecoder = RequestDecoder(request)
            n = decoder.tag_ids.shape[0]
            # A request's reason covers its text tags too (agent/texts.py reads it).
            strings: list[int] = decoder.string_tag_ids.tolist()
            label = _label(unit.unit_id, request)
            block = self.reasons.add_block([*decoder.tag_ids.tolist(), *strings], label)
            reads.append(Read(decoder, slice(row, row + n), _frame(unit.unit_id, request), block))
            row += n
        tag_ids = (
            np.concatenate([r.decoder.tag_ids for r in reads])
            if reads
            else np.zeros(0, dtype=np.int32)
        )
        return UnitGroup(unit.unit_id, unit.machine, group, plan, tuple(reads), tag_ids)

    def _split(self, batch: UnitBatch, read: Read, code: int | None) -> tuple[Read, ...]:
        """The parts of a read that bridged unused addresses and was refused with exception 02,
        put in the plan in its place from now on; () when `read` is not such a read."""
        if code != ILLEGAL_DATA_ADDRESS:
            return ()
        request = read.decoder.request
        requests = split_request(request)
        if len(requests) == 1:
            return ()
        unit_id = batch.unit.unit_id
        decoders: list[RequestDecoder] = [RequestDecoder(r) for r in requests]
        ids = np.concatenate([d.tag_ids for d in decoders])
        if not np.array_equal(ids, read.decoder.tag_ids):  # the parts must fill its rows
            return ()
        labels = [_label(unit_id, r) for r in requests]
        # Each part's reason covers its text tags too, as the read's did.
        members: list[tuple[list[int], str]] = []
        for each, label in zip(decoders, labels, strict=True):
            numeric: list[int] = each.tag_ids.tolist()
            strings: list[int] = each.string_tag_ids.tolist()
            members.append((numeric + strings, label))
        blocks = self.reasons.split_block(read.block, members)
        parts: list[Read] = []
        row = read.rows.start
        for part, decoder, block in zip(requests, decoders, blocks, strict=True):
            n = decoder.tag_ids.shape[0]
            parts.append(Read(decoder, slice(row, row + n), _frame(unit_id, part), block))
            row += n
        # Batches of later polls take the unit-group with the parts in the read's place.
        group = batch.unit.group
        self._plans[group] = tuple(
            _with_parts(u, read, parts) if u.unit_id == unit_id else u for u in self._plans[group]
        )
        self._batches.clear()  # made again from the plans
        log.warning(
            "%s: %s: illegal data address (02) for a read through unused addresses; split "
            "into %s from now on",
            self.name,
            _label(unit_id, request),
            ", ".join(label.removeprefix(f"unit {unit_id} ") for label in labels),
        )
        return tuple(parts)

    async def _read_or_split(self, reader: Reader, batch: UnitBatch, read: Read) -> None:
        """`_read`, and the parts of a read through a hole the unit refused (`_split`), each
        part's failure booked; `ReadFailed` for any other failure of `read`."""
        try:
            await self._read(reader, batch, read)
        except ReadFailed as failed:
            code = failed.cause.code if isinstance(failed.cause, DeviceError) else None
            parts = self._split(batch, read, code)
            if not parts:
                raise
            for part in parts:
                if self._isolated(batch, self._clock.monotonic()):
                    self._skip(batch, part)
                    continue
                try:
                    await self._read(reader, batch, part)
                except ReadFailed as again:
                    self._fail(batch, part, again)

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
                        quality=np.full(n, BAD, dtype=np.uint8),
                        ts_ns=np.array([ts_ns], dtype=np.int64),
                    )
                )
        return out

    def statistics(self) -> SourceStatistics:
        now = self._clock.monotonic()
        s = self._stats
        kept = s.latency[: min(s.latency_count, LATENCY_SAMPLES)]
        p50, p99 = percentiles(kept, (50.0, 99.0)) if kept.size else (math.nan, math.nan)
        bytes_in, bytes_out = self._bytes()
        return SourceStatistics(
            polls=s.polls,
            requests=s.requests,
            responses=s.responses,
            timeouts=s.timeouts,
            exceptions=s.exceptions,
            malformed=s.malformed,
            aborted=s.aborted,
            connects=s.connects,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            latency_last_s=s.latency_last,
            latency_p50_s=float(p50),
            latency_p99_s=float(p99),
            latency=s.latency_histogram.snapshot(),
            extras=self._extras(now),
        )

    def _extras(self, now: float) -> dict[str, float]:
        """The figures only a Modbus source keeps (the RTU source adds its own)."""
        return {
            "string_tags": self._string_tags,
            "isolated_units": sum(1 for u in self._units.values() if u.until > now),
            "isolations": sum(u.isolations for u in self._units.values()),
            "skipped_requests": self._skipped,
        }

    # -- shared machinery ------------------------------------------------------------------

    def _wire(self) -> Wire | None:
        """The open connection or serial link, if any."""
        raise NotImplementedError

    def _bytes(self) -> tuple[int, int]:
        bytes_in, bytes_out = self._old_bytes
        wire = self._wire()
        if wire is not None:
            bytes_in += wire.bytes_in
            bytes_out += wire.bytes_out
        return bytes_in, bytes_out

    def _retire(self, wire: Wire) -> None:
        """Keep the byte counts of a connection or link being closed."""
        self._old_bytes = (
            self._old_bytes[0] + wire.bytes_in,
            self._old_bytes[1] + wire.bytes_out,
        )

    def _begin(self, groups: Sequence[str]) -> PollBatches:
        """The batches of a poll of `groups`, each with fresh arrays to fill."""
        key = tuple(groups)
        polled = self._batches.get(key)
        if polled is None:
            batches = tuple(
                UnitBatch(unit, self._units[unit.unit_id])
                for group in groups
                for unit in self._plans[group]
            )
            jobs = tuple((batch, read) for batch in batches for read in batch.unit.reads)
            polled = self._batches[key] = PollBatches(batches, jobs)
        for batch in polled.batches:
            batch.begin()
        return polled

    # -- isolation and reasons (both links) ------------------------------------------------

    def _isolated(self, batch: UnitBatch, now: float) -> bool:
        return now < batch.state.until

    def _skip(self, batch: UnitBatch, read: Read) -> None:
        """A read of an isolated unit: bad for the reason that isolated it, not sent."""
        batch.bad(read)
        self._skipped += 1
        self.reasons.set(read.block, batch.state.reason)

    def _failed(self, batch: UnitBatch, read: Read, reason: str) -> None:
        """A read that failed for good and does not say the unit is gone (an exception)."""
        batch.bad(read)
        self.reasons.set(read.block, reason)

    def _isolate(self, batch: UnitBatch, read: Read, reason: str) -> None:
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

    def _good(self, read: Read, state: UnitState) -> None:
        # Called per answered read: two plain tests when nothing changed.
        if self.reasons.current[read.block]:
            self.reasons.set(read.block, "")
        if state.backoff != state.initial:
            state.answered()

    async def _read(self, reader: Reader, batch: UnitBatch, read: Read) -> None:
        """Read one request into its batch rows; `ReadFailed` (counted) if it failed for good.

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
                raise ReadFailed(exc, self._timeout_reason) from None
            except DeviceError as exc:
                stats.exceptions += 1
                batch.state.answered()
                if last or exc.code not in RETRIED_CODES:
                    raise ReadFailed(exc, device_reason(exc)) from None
                continue
            except ProtocolError as exc:
                stats.malformed += 1
                raise ReadFailed(exc, MALFORMED) from None
            arrived = clock.time_ns()
            stats.responses += 1
            stats.record_latency(clock.monotonic() - started)
            try:
                batch.values[read.rows] = read.decoder.decode(payload)
            except ValueError as exc:  # the links check sizes; this guards the codec's contract
                stats.malformed += 1
                raise ReadFailed(ProtocolError(str(exc)), MALFORMED) from None
            if read.decoder.has_strings:
                self._read_texts(read, payload, arrived)
            batch.quality[read.rows] = GOOD
            batch.ts_ns = max(batch.ts_ns, arrived)
            self._good(read, batch.state)
            return

    def _read_texts(self, read: Read, payload: bytes | bytearray | memoryview, ts_ns: int) -> None:
        """Keep the strings of an answered request (the side channel of text tags)."""
        for tag_id, raw in read.decoder.decode_strings(payload).items():
            self.texts.decoded(tag_id, raw, ts_ns)

    def _fail(self, batch: UnitBatch, read: Read, failed: ReadFailed) -> None:
        """Book a read that failed for good: a timeout or garble isolates its unit."""
        if isinstance(failed.cause, RequestTimeout | ProtocolError):
            self._isolate(batch, read, failed.reason)
        else:
            self._failed(batch, read, failed.reason)


def _label(unit_id: int, request: ReadRequest) -> str:
    """Where a read reads, for the log and the reasons: "unit 1 hr:0+20"."""
    return f"unit {unit_id} {request.table}:{request.start}+{request.count}"


def _frame(unit_id: int, request: ReadRequest) -> tuple[int, int, int, int]:
    return (unit_id, request.function_code, request.start, request.count)


def _with_parts(unit: UnitGroup, read: Read, parts: Sequence[Read]) -> UnitGroup:
    """`unit` with `parts` read in place of `read` (a no-op when it no longer has `read`)."""
    if not any(r is read for r in unit.reads):
        return unit
    reads = tuple(r for old in unit.reads for r in (parts if old is read else (old,)))
    plan = ReadPlan(tuple(r.decoder.request for r in reads))
    return dataclasses.replace(unit, plan=plan, reads=reads)

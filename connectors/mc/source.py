"""The MC protocol source: the agent's acquisition path for MELSEC PLCs (FX5, Q/L, iQ-R).

Everything a poll needs is built once: per poll group the tags are planned into batch and
random reads (`planner.plan_reads`), each read gets its `RequestDecoder` and its request
bytes (`frame.Framing`), so a poll only writes prepared bytes, decodes each answer with a few
numpy operations into a preallocated slice, and returns one `ReadingBatch` per group.

A poll's requests go out in waves of `max_in_flight`, each wave one write under one deadline
(`timeout`). Answers are awaited in order.

Failures, each a reason on the request's block (agent/reasons.py) and counted by kind:
- an error end code: that request's tags read bad with the code named ("read past the last
  device number (C056)"); the rest of the poll goes on. A busy code (CEE0) is retried up to
  `retries` times.
- a timeout or a malformed answer: that request's tags read bad and the connection is closed
  (on a 3E port a late answer could pass for the next one; after garbage the stream cannot be
  trusted): the rest of the poll reads bad and the next poll raises `ConnectError`, so the
  link loop reconnects with back-off. A PLC that never answers costs one timeout per attempt,
  and it is alone on its link: the other PLCs' sources are polled on their own schedule.

String tags are not read (a reading is a float64): `statistics().extras["string_tags"]` counts them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.clock import Clock, SystemClock
from agent.duration import format_duration
from agent.errors import ConnectError, DeviceError, ProtocolError, RequestTimeout
from agent.histogram import Histogram
from agent.model import Quality, ReadingBatch
from agent.reasons import Reasons
from agent.statistics import SourceStatistics
from agent.tags import TagTable
from connectors.mc.address import word_width
from connectors.mc.client import McClient
from connectors.mc.codec import RequestDecoder
from connectors.mc.config import McSourceConfig, McTag
from connectors.mc.frame import (
    BUSY_CODES,
    Code,
    FrameType,
    Framing,
    Route,
    Series,
    end_code_reason,
)
from connectors.mc.planner import PlanTag, ReadPlan, ReadRequest, plan_reads, wire_point

_GOOD = np.uint8(Quality.GOOD)
_BAD = np.uint8(Quality.BAD)
_MALFORMED = "malformed answer"
_LATENCY_SAMPLES = 1024  # recent read latencies kept for p50/p99


def plan_tag(tag: McTag, tag_id: int, series: Series) -> PlanTag:
    number = tag.address.number(series)
    bits = tag.address.is_bit_device
    return PlanTag(
        tag_id=tag_id,
        device=tag.address.device,
        word=number // 16 if bits else number,
        width=word_width(tag.type),
        type=tag.type,
        order=tag.order,
        bit=(number % 16 if tag.type == "bool" else None) if bits else tag.address.bit,
        scale=tag.scale,
        offset_value=tag.offset,
    )


def build_request(framing: Framing, request: ReadRequest) -> bytes:
    """The request bytes of one planned read."""
    if request.kind == "batch":
        return framing.batch_read(wire_point(request.device, request.start), request.count)
    return framing.random_read(
        [wire_point(d, w) for d, w in request.words],
        [wire_point(d, w) for d, w in request.dwords],
    )


@dataclass(frozen=True, slots=True)
class _Read:
    decoder: RequestDecoder
    rows: slice
    wire: tuple[bytes, int, str, int | None]  # request, data bytes, what, single words
    block: int


@dataclass(frozen=True, slots=True)
class UnitGroup:
    """The reads of the PLC for one poll group (named as Modbus's, for `lineside plan`)."""

    unit_id: int
    machine: str
    group: str
    plan: ReadPlan
    reads: tuple[_Read, ...]
    tag_ids: npt.NDArray[np.int32]


class McSource:
    """One MELSEC PLC on one TCP connection."""

    def __init__(self, config: McSourceConfig, tags: TagTable, clock: Clock | None = None) -> None:
        self.name = config.name
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.framing = Framing(
            series=Series(config.series),
            code=Code(config.code),
            frame=FrameType(config.frame),
            route=Route(config.network, config.pc, config.module_io, config.station),
            # The PLC gives up on its own a little after we do (units of 250 ms).
            timer=min(0xFFFF, max(1, math.ceil(config.timeout / 0.25))),
        )
        self.reasons = Reasons(config.name, clock=self._clock.monotonic)
        self._timeout_reason = f"timeout after {format_duration(config.timeout)}"
        self._client: McClient | None = None
        self._old_bytes = (0, 0)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "polls",
                "requests",
                "responses",
                "timeouts",
                "exceptions",
                "malformed",
                "aborted",
                "connects",
            ),
            0,
        )
        self._latency = Histogram()
        self._latency_last = math.nan
        self._recent: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._string_tags = sum(1 for t in config.tags if t.type == "string")
        by_interval: dict[float, list[McTag]] = {}
        for tag in config.tags:
            if tag.type != "string":
                interval = tag.interval if tag.interval is not None else config.poll_interval
                by_interval.setdefault(interval, []).append(tag)
        self._intervals = {format_duration(i): i for i in sorted(by_interval)}
        self._groups = {
            format_duration(i): self._plan(format_duration(i), group, tags)
            for i, group in by_interval.items()
        }

    def _plan(self, group: str, group_tags: Sequence[McTag], tags: TagTable) -> UnitGroup:
        config = self._config
        series = Series(config.series)
        ids = [tags.id_of(config.machine, t.name) for t in group_tags]
        plan = plan_reads(
            [plan_tag(t, i, series) for t, i in zip(group_tags, ids, strict=True)],
            max_words=config.max_words_per_read,
            max_gap=config.max_gap,
            max_random_points=config.max_random_points,
        )
        reads: list[_Read] = []
        row = 0
        for request in plan.requests:
            decoder = RequestDecoder(request)
            n = decoder.tag_ids.shape[0]
            what = str(request).split(",")[0]
            block = self.reasons.add_block(decoder.tag_ids.tolist(), what)
            words = len(request.words) if request.kind == "random" else None
            wire = (build_request(self.framing, request), request.payload_bytes, what, words)
            reads.append(_Read(decoder, slice(row, row + n), wire, block))
            row += n
        tag_ids = (
            np.concatenate([r.decoder.tag_ids for r in reads])
            if reads
            else np.zeros(0, dtype=np.int32)
        )
        return UnitGroup(0, config.machine, group, plan, tuple(reads), tag_ids)

    # -- the Source protocol ---------------------------------------------------------------

    def poll_groups(self) -> Mapping[str, float]:
        return dict(self._intervals)

    def unit_groups(self, group: str) -> tuple[UnitGroup, ...]:
        return (self._groups[group],)

    async def connect(self) -> None:
        await self.close()
        config = self._config
        client = McClient(
            config.host,
            config.port,
            self.framing,
            max_in_flight=config.max_in_flight,
            connect_timeout=config.timeout,
        )
        self.counters["connects"] += 1
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

    def bad_batches(self, groups: Sequence[str], ts_ns: int) -> list[ReadingBatch]:
        out = []
        for group in groups:
            ids = self._groups[group].tag_ids
            n = ids.shape[0]
            out.append(
                ReadingBatch(
                    source=self.name,
                    tag_ids=ids,
                    values=np.full(n, math.nan),
                    quality=np.full(n, _BAD, dtype=np.uint8),
                    ts_ns=np.array([ts_ns], dtype=np.int64),
                )
            )
        return out

    def statistics(self) -> SourceStatistics:
        bytes_in, bytes_out = self._old_bytes
        if self._client is not None:
            bytes_in += self._client.bytes_in
            bytes_out += self._client.bytes_out
        recent = np.fromiter(self._recent, dtype=np.float64)
        p50, p99 = np.percentile(recent, [50, 99]) if recent.size else (math.nan, math.nan)
        c = self.counters
        return SourceStatistics(
            polls=c["polls"],
            requests=c["requests"],
            responses=c["responses"],
            timeouts=c["timeouts"],
            exceptions=c["exceptions"],
            malformed=c["malformed"],
            aborted=c["aborted"],
            connects=c["connects"],
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            latency_last_s=self._latency_last,
            latency_p50_s=float(p50),
            latency_p99_s=float(p99),
            latency=self._latency.snapshot(),
            extras={"string_tags": self._string_tags},
        )

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        client = self._client
        if client is None or not client.connected:
            why = client.closed_reason if client is not None else "not connected"
            raise ConnectError(f"{self.name} ({self._config.host}:{self._config.port}): {why}")
        self.counters["polls"] += 1
        units = [self._groups[g] for g in groups]
        values = [np.empty(u.tag_ids.shape[0]) for u in units]
        quality = [np.empty(u.tag_ids.shape[0], dtype=np.uint8) for u in units]
        stamps = [0] * len(units)
        jobs = [(k, read) for k, u in enumerate(units) for read in u.reads]
        try:
            await self._run(client, jobs, values, quality, stamps)
        finally:
            self.reasons.report()
        now = self._clock.time_ns()
        return [
            ReadingBatch(
                source=self.name,
                tag_ids=u.tag_ids,
                values=values[k],
                quality=quality[k],
                ts_ns=np.array([stamps[k] or now], dtype=np.int64),
            )
            for k, u in enumerate(units)
        ]

    async def _run(
        self,
        client: McClient,
        jobs: list[tuple[int, _Read]],
        values: list[npt.NDArray[np.float64]],
        quality: list[npt.NDArray[np.uint8]],
        stamps: list[int],
    ) -> None:
        config = self._config
        counters = self.counters
        clock = self._clock
        loop = asyncio.get_running_loop()
        attempts: dict[int, int] = {}
        queue = jobs[::-1]
        latencies: list[float] = []

        def bad(k: int, read: _Read, reason: str) -> None:
            values[k][read.rows] = math.nan
            quality[k][read.rows] = _BAD
            self.reasons.set(read.block, reason)

        try:
            while queue:
                wave = [queue.pop() for _ in range(min(config.max_in_flight, len(queue)))]
                if not client.connected:
                    for k, read in wave:
                        counters["aborted"] += 1
                        bad(k, read, client.closed_reason)
                    continue
                futures = client.send([r.wire for _, r in wave])
                counters["requests"] += len(wave)
                sent = clock.monotonic()
                timer = loop.call_later(config.timeout, client.expire, futures, config.timeout)
                gone: ConnectError | None = None
                try:
                    for (k, read), future in zip(wave, futures, strict=True):
                        try:
                            if not future.done():
                                await future
                            data = future.result()
                        except RequestTimeout:
                            counters["timeouts"] += 1
                            bad(k, read, self._timeout_reason)
                            continue
                        except DeviceError as exc:
                            counters["exceptions"] += 1
                            code = exc.code or 0
                            used = attempts.get(id(read), 0)
                            if code in BUSY_CODES and used < config.retries:
                                attempts[id(read)] = used + 1
                                queue.append((k, read))
                            else:
                                bad(k, read, end_code_reason(code))
                            continue
                        except ProtocolError:
                            counters["malformed"] += 1
                            bad(k, read, _MALFORMED)
                            continue
                        except ConnectError as exc:
                            counters["aborted"] += 1
                            bad(k, read, client.closed_reason)
                            gone = gone or exc
                            continue
                        counters["responses"] += 1
                        latencies.append(clock.monotonic() - sent)
                        try:
                            values[k][read.rows] = read.decoder.decode(data)
                        except ValueError:  # the client checks sizes; this guards the codec
                            counters["malformed"] += 1
                            bad(k, read, _MALFORMED)
                            continue
                        quality[k][read.rows] = _GOOD
                        stamps[k] = max(stamps[k], clock.time_ns())
                        self.reasons.set(read.block, "")
                except BaseException:
                    client.abandon(futures)
                    raise
                finally:
                    timer.cancel()
                if gone is not None and not any(
                    isinstance(f.exception(), RequestTimeout | ProtocolError)
                    for f in futures
                    if f.done() and not f.cancelled()
                ):
                    # The PLC closed the connection under us: the link loop's business.
                    for k, read in reversed(queue):
                        bad(k, read, client.closed_reason)
                    raise gone
        finally:
            if latencies:
                self._latency.observe_many(latencies)
                self._recent.extend(latencies)
                self._latency_last = latencies[-1]

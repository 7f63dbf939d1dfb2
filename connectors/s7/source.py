"""`S7Source`: the agent's acquisition path for one S7 CPU (`type = "s7"`).

Built once: per poll group the tags are planned (`planner.plan_reads`) into multi-read
requests for the PDU size asked for, each with its `RequestCodec`. When the CPU grants a
smaller PDU at connect, the plans are made again for it. A poll sends the due groups'
requests one after the other (a CPU serves one job per connection at a time) and decodes each
answer into a preallocated slice of its group's batch.

Failures, each with a reason per tag (agent/reasons.py) that says what to change:
- the answer's header refuses the request (PUT/GET off on an S7-1200/1500, 8104): every tag
  of the request reads bad;
- an item refused (a DB that does not exist, 0A; an offset past the end of the DB or an
  optimized DB, 05; access denied, 03): that item's tags read bad, the others good. An item
  that merged several tags and came back "out of range" is split: its tags get an item each
  from the next poll on, so one wrong offset costs only its own tag;
- a timeout or a garbled answer: the request's tags read bad and the connection is closed
  (the rest of the poll reads bad with it); the next poll raises `ConnectError` and the link
  loop reconnects with back-off, so a CPU that never answers costs one timeout per back-off;
- the CPU in STOP (asked every `state_check`): every tag reads bad, "CPU in STOP".
STRING tags are not readings (a reading is a float): like Modbus strings they are left out of
the plan, and `statistics().extras["string_tags"]` counts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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
from connectors.s7.address import Area
from connectors.s7.codec import ItemFailure, RequestCodec, header_reason
from connectors.s7.config import S7SourceConfig, S7Tag
from connectors.s7.link import CpuState, S7Link
from connectors.s7.planner import PlanTag, ReadItem, ReadPlan, plan_reads

_LATENCY_SAMPLES = 1024  # recent request latencies kept for p50/p99
_GOOD = np.uint8(Quality.GOOD)
_BAD = np.uint8(Quality.BAD)
STOP_REASON = "CPU in STOP: the values are frozen; switch the CPU to RUN"
PUT_GET_ADVICE = (
    "on an S7-1200/1500 tick 'Permit access with PUT/GET communication from remote partner' "
    "(TIA Portal: CPU properties > Protection & Security > Connection mechanisms) and download"
)


def item_reason(item: ReadItem, code: int) -> str:
    """Why an item was refused, in words that say what to change on the PLC side."""
    where = f"DB{item.db}" if item.area is Area.DB else f"the {item.area.name.lower()} area"
    if code == 0x0A:
        if item.area is Area.DB:
            return f"DB{item.db} does not exist on the CPU (0A): create it or fix the DB number"
        return f"{where} does not exist on this CPU (0A)"
    if code == 0x05:
        last = item.start + item.count - 1
        if item.area is Area.DB:
            return (
                f"address out of range (05): DB{item.db} is shorter than byte {last}, or it has "
                "optimized block access (TIA Portal: DB properties > Attributes > untick "
                "'Optimized block access', compile, download)"
            )
        return f"address out of range (05): {where} of this CPU ends before byte {last}"
    if code == 0x03:
        return f"access denied (03): {PUT_GET_ADVICE}, or lower the CPU's protection level"
    if code == 0x06 or code == 0x07:
        return f"data type not supported by the CPU ({code:02X})"
    return f"item refused ({code:02X})"


def request_reason(exc: DeviceError) -> str:
    if exc.code == 0x8104:
        return f"the CPU refused the read ({header_reason(0x8104)}): {PUT_GET_ADVICE}"
    if exc.code == 0xD602:
        return f"the CPU refused the read ({header_reason(0xD602)}): {PUT_GET_ADVICE}"
    return f"the CPU refused the read: {exc}"


def plan_tag(tag: S7Tag, tag_id: int) -> PlanTag:
    return PlanTag(tag_id, tag.address, tag.scale, tag.offset)


@dataclass(slots=True)
class _Request:
    """One planned request in a group: its codec, its rows in the batch, its tags' blocks."""

    codec: RequestCodec
    rows: slice
    blocks: list[list[int]]  # per item, the reasons blocks of its numeric tags
    dirty: list[bool]  # per item: some of its tags have a reason set


@dataclass(slots=True)
class Group:
    """One poll group's plan, requests and batch layout."""

    name: str
    interval: float
    tags: list[PlanTag]
    plan: ReadPlan = field(init=False)
    requests: list[_Request] = field(default_factory=list)
    tag_ids: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    alone: set[int] = field(default_factory=set)  # tag ids given an item each


@dataclass(slots=True)
class _Counters:
    polls: int = 0
    requests: int = 0
    responses: int = 0
    timeouts: int = 0
    refused: int = 0  # requests refused in the answer's header
    item_errors: int = 0
    malformed: int = 0
    aborted: int = 0
    connects: int = 0
    replans: int = 0
    stopped_polls: int = 0
    latency_last: float = math.nan
    latency: Histogram = field(default_factory=Histogram)  # every request since start
    recent: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(_LATENCY_SAMPLES, dtype=np.float64)
    )  # the last requests' latencies, for p50 / p99
    latency_count: int = 0

    def record_latency(self, seconds: float) -> None:
        self.recent[self.latency_count % _LATENCY_SAMPLES] = seconds
        self.latency_count += 1
        self.latency_last = seconds
        self.latency.observe(seconds)


class S7Source:
    """An S7 source: one connection to one CPU, its tags in poll groups."""

    def __init__(self, config: S7SourceConfig, tags: TagTable, clock: Clock | None = None) -> None:
        self.name = config.name
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.reasons = Reasons(config.name, clock=self._clock.monotonic)
        self._stats = _Counters()
        self._link: S7Link | None = None
        self._old_bytes = (0, 0)
        self._state = CpuState.UNKNOWN
        self._state_due = -math.inf
        self._pdu_size: int = config.pdu_size
        self._blocks: dict[int, int] = {}  # tag id -> its reasons block
        by_interval: dict[float, list[PlanTag]] = {}
        self.string_tags = 0
        for tag in config.tags:
            if tag.address.type == "STRING":  # not a float reading: left out, as on Modbus
                self.string_tags += 1
                continue
            tag_id = tags.id_of(config.machine, tag.name)
            interval = tag.interval if tag.interval is not None else config.poll_interval
            by_interval.setdefault(interval, []).append(plan_tag(tag, tag_id))
            self._blocks[tag_id] = self.reasons.add_block([tag_id], str(tag.address))
        self._groups = {
            format_duration(interval): Group(format_duration(interval), interval, group_tags)
            for interval, group_tags in sorted(by_interval.items())
        }
        for group in self._groups.values():
            self._plan(group)

    # -- plans -----------------------------------------------------------------------------

    def _plan(self, group: Group) -> None:
        config = self._config
        group.plan = plan_reads(
            group.tags,
            pdu_size=self._pdu_size,
            max_gap=config.max_gap,
            max_items=config.max_items,
            alone=group.alone,
        )
        group.requests = []
        row = 0
        ids: list[npt.NDArray[np.int32]] = []
        for request in group.plan.requests:
            codec = RequestCodec(request)
            n = codec.tag_ids.shape[0]
            blocks = [
                [self._blocks[int(t)] for t in codec.tag_ids[rows]] for rows in codec.item_rows
            ]
            dirty = [True] * len(blocks)  # the first answer clears whatever was set before
            group.requests.append(_Request(codec, slice(row, row + n), blocks, dirty))
            ids.append(codec.tag_ids)
            row += n
        group.tag_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)

    def plans(self) -> dict[str, ReadPlan]:
        """Poll group name -> its read plan (for `lineside plan`)."""
        return {name: g.plan for name, g in self._groups.items()}

    @property
    def pdu_size(self) -> int:
        return self._pdu_size

    # -- the Source protocol ---------------------------------------------------------------

    def poll_groups(self) -> Mapping[str, float]:
        return {name: g.interval for name, g in self._groups.items()}

    async def connect(self) -> None:
        await self.close()
        config = self._config
        local, remote = config.tsaps
        rack_slot = (
            f"TSAP {remote >> 8:02X}.{remote & 0xFF:02X}"
            if config.remote_tsap is not None
            else f"rack {config.rack} slot {config.slot}"
        )
        link = S7Link(
            config.host,
            config.port,
            local_tsap=local,
            remote_tsap=remote,
            pdu_size=config.pdu_size,
            timeout=config.timeout,
            rack_slot=rack_slot,
        )
        self._stats.connects += 1
        await link.open()
        self._link = link
        if link.pdu_size != self._pdu_size:  # the CPU granted another size: plan for it
            self._pdu_size = link.pdu_size
            for group in self._groups.values():
                self._plan(group)
        self._state_due = -math.inf

    async def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()
            self._old_bytes = (
                self._old_bytes[0] + link.bytes_in,
                self._old_bytes[1] + link.bytes_out,
            )

    def bad_batches(self, groups: Sequence[str], ts_ns: int) -> list[ReadingBatch]:
        out = []
        for name in groups:
            ids = self._groups[name].tag_ids
            out.append(
                ReadingBatch(
                    source=self.name,
                    tag_ids=ids,
                    values=np.full(ids.shape[0], math.nan),
                    quality=np.full(ids.shape[0], _BAD, dtype=np.uint8),
                    ts_ns=np.array([ts_ns], dtype=np.int64),
                )
            )
        return out

    async def poll(self, groups: Sequence[str]) -> list[ReadingBatch]:
        link = self._link
        if link is None or not link.connected:
            why = link.closed_reason if link is not None else "not connected"
            raise ConnectError(f"{self.name} ({self._config.endpoint}): {why}")
        self._stats.polls += 1
        try:
            await self._check_state(link)
            out = []
            for name in groups:
                out.append(await self._poll_group(link, self._groups[name]))
        finally:
            self.reasons.report()
        return out

    async def _check_state(self, link: S7Link) -> None:
        every = self._config.state_check
        now = self._clock.monotonic()
        if every <= 0 or now < self._state_due:
            return
        self._state_due = now + every
        try:
            self._state = await link.cpu_state()
        except (DeviceError, ProtocolError):
            self._state = CpuState.UNKNOWN
        except RequestTimeout:
            self._state = CpuState.UNKNOWN  # the link is closed; the reads say the rest

    async def _poll_group(self, link: S7Link, group: Group) -> ReadingBatch:
        n = group.tag_ids.shape[0]
        values = np.full(n, math.nan)
        quality = np.full(n, _BAD, dtype=np.uint8)
        ts_ns = 0
        stats = self._stats
        clock = self._clock
        split = False
        for request in group.requests:
            if self._state is CpuState.STOP:
                stats.stopped_polls += 1
                self._set(request, STOP_REASON)
                continue
            if not link.connected:  # closed by a failure earlier in this poll
                stats.aborted += 1
                self._set(request, link.closed_reason)
                continue
            codec = request.codec
            stats.requests += 1
            started = clock.monotonic()
            try:
                answer = await link.exchange(codec.frame(link.next_seq()))
                decoded, failures = codec.decode(answer)
            except RequestTimeout as exc:
                stats.timeouts += 1
                self._set(request, str(exc))
                continue
            except DeviceError as exc:
                stats.refused += 1
                self._set(request, request_reason(exc))
                continue
            except ProtocolError as exc:
                stats.malformed += 1
                if link.connected:
                    await link.close(f"malformed answer: {exc}")
                self._set(request, f"malformed answer: {exc}")
                continue
            elapsed = clock.monotonic() - started
            stats.responses += 1
            stats.record_latency(elapsed)
            values[request.rows] = decoded
            quality[request.rows] = _GOOD
            ts_ns = max(ts_ns, clock.time_ns())
            if failures:
                split |= self._item_failures(group, request, failures, quality)
            failed = {f.index for f in failures}
            for index, dirty in enumerate(request.dirty):
                if dirty and index not in failed:
                    for block in request.blocks[index]:
                        self.reasons.set(block, "")
                    request.dirty[index] = False
        if split:
            self._stats.replans += 1
            self._plan(group)
        return ReadingBatch(
            source=self.name,
            tag_ids=group.tag_ids,
            values=values,
            quality=quality,
            ts_ns=np.array([ts_ns or clock.time_ns()], dtype=np.int64),
        )

    def _item_failures(
        self,
        group: Group,
        request: _Request,
        failures: list[ItemFailure],
        quality: npt.NDArray[np.uint8],
    ) -> bool:
        """Book refused items; True when one should be split into an item per tag."""
        split = False
        rows = request.rows
        for failure in failures:
            item = request.codec.request.items[failure.index]
            self._stats.item_errors += 1
            item_rows = request.codec.item_rows[failure.index]
            quality[rows.start + item_rows.start : rows.start + item_rows.stop] = _BAD
            reason = item_reason(item, failure.code)
            for block in request.blocks[failure.index]:
                self.reasons.set(block, reason)
            request.dirty[failure.index] = True
            if failure.code == 0x05 and len(item.tags) > 1:
                group.alone.update(t.tag_id for t in item.tags)
                split = True
        return split

    def _set(self, request: _Request, reason: str) -> None:
        for index, blocks in enumerate(request.blocks):
            for block in blocks:
                self.reasons.set(block, reason)
            request.dirty[index] = True

    def statistics(self) -> SourceStatistics:
        s = self._stats
        bytes_in, bytes_out = self._old_bytes
        if self._link is not None:
            bytes_in += self._link.bytes_in
            bytes_out += self._link.bytes_out
        kept = s.recent[: min(s.latency_count, _LATENCY_SAMPLES)]
        p50, p99 = np.percentile(kept, [50, 99]) if kept.size else (math.nan, math.nan)
        return SourceStatistics(
            polls=s.polls,
            requests=s.requests,
            responses=s.responses,
            timeouts=s.timeouts,
            # The CPU answered with an error (the status page and /metrics count these as
            # exceptions, as for Modbus): a refused request or a refused item.
            exceptions=s.refused + s.item_errors,
            malformed=s.malformed,
            aborted=s.aborted,
            connects=s.connects,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            latency_last_s=s.latency_last,
            latency_p50_s=float(p50),
            latency_p99_s=float(p99),
            latency=s.latency.snapshot(),
            extras={
                "refused": s.refused,
                "item_errors": s.item_errors,
                "replans": s.replans,
                "string_tags": self.string_tags,
                "pdu_size": self._pdu_size,
                "cpu_stopped": 1.0 if self._state is CpuState.STOP else 0.0,
                "stopped_polls": s.stopped_polls,
            },
        )

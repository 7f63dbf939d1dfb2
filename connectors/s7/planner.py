"""The read plan of one S7 CPU: which multi-read requests one poll sends, built once at start.

Two steps, both pure:

1. Items. Per area and DB, tags sorted by start byte are merged into one read item while the
   gap between them is at most `max_gap` bytes (reading a few unused bytes costs less than
   another item header, let alone another round trip) and the item still fits one response.
   Bits share their byte; a value is never split across items (its halves would come from two
   different PLC cycles). Timers and counters merge by number (2 bytes each).
2. Requests. Items are packed into as few ReadVar requests as the negotiated PDU allows: a
   request carries at most `max_items` items and 12 bytes per item in its parameters
   (10 header + 2 + 12 n <= PDU), and its response carries 4 bytes of header per item plus
   the data, padded to even between items (12 header + 2 + sum(4 + len + pad) <= PDU). The
   packing is first-fit decreasing, which for these sizes reaches the lower bound
   `minimum_requests` in practice (checked by the tests and the benchmark).

`ReadPlan.__str__` is what `lineside plan` prints.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from itertools import groupby

from connectors.s7.address import Area, S7Address

REQUEST_HEADER = 10  # S7 header of a job
RESPONSE_HEADER = 12  # S7 header of an ack-data: 10 + error class and code
PARAMETER = 2  # function code and item count
ITEM_SPEC = 12  # one item's address in a request
ITEM_HEADER = 4  # return code, transport size, length, before one item's data
MAX_ITEMS = 20  # what S7 CPUs accept in one multi-read
PDU_SIZES = (240, 480, 960)


@dataclass(frozen=True, slots=True)
class PlanTag:
    """What the planner and the codec need of one configured tag."""

    tag_id: int
    address: S7Address
    scale: float = 1.0
    offset_value: float = 0.0

    @property
    def start(self) -> int:
        return self.address.start

    @property
    def end(self) -> int:
        """One past the last addressing unit (byte or element) the tag occupies."""
        return self.address.start + self.address.width


@dataclass(frozen=True, slots=True)
class ReadItem:
    """One item of a multi-read: `count` bytes (or elements) of one area from `start`."""

    area: Area
    db: int
    start: int
    count: int
    tags: tuple[PlanTag, ...]

    @property
    def nbytes(self) -> int:
        return 2 * self.count if self.area.counted else self.count

    @property
    def response_cost(self) -> int:
        """Bytes it takes in the response, with the fill byte an odd length may need."""
        return ITEM_HEADER + self.nbytes + (self.nbytes & 1)

    @property
    def wasted(self) -> int:
        """Bytes (or elements) read that no tag uses: the price of bridged gaps."""
        covered = 0
        reach = -1
        for tag in sorted(self.tags, key=lambda t: t.start):
            if tag.end > reach:
                covered += tag.end - max(tag.start, reach)
                reach = tag.end
        return self.count - covered

    def __str__(self) -> str:
        where = f"DB{self.db}" if self.area is Area.DB else self.area.letter
        unit = "elements" if self.area.counted else "bytes"
        last = self.start + self.count - 1
        return f"{where}:{self.start}-{last} ({self.count} {unit}, {len(self.tags)} tags)"


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One ReadVar request: its items in order."""

    items: tuple[ReadItem, ...]

    @property
    def request_bytes(self) -> int:
        return REQUEST_HEADER + PARAMETER + ITEM_SPEC * len(self.items)

    @property
    def response_bytes(self) -> int:
        """The response's S7 PDU (the last item needs no fill byte)."""
        body = sum(i.response_cost for i in self.items)
        if self.items and self.items[-1].nbytes & 1:
            body -= 1
        return RESPONSE_HEADER + PARAMETER + body

    def __str__(self) -> str:
        items = ", ".join(str(i) for i in self.items)
        return f"{len(self.items)} items, {self.response_bytes} bytes back: {items}"


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The requests of one poll and their figures."""

    requests: tuple[ReadRequest, ...]
    pdu_size: int
    max_items: int

    @property
    def requests_per_poll(self) -> int:
        return len(self.requests)

    @property
    def items(self) -> int:
        return sum(len(r.items) for r in self.requests)

    @property
    def bytes_read(self) -> int:
        return sum(i.nbytes for r in self.requests for i in r.items)

    @property
    def wasted_bytes(self) -> int:
        return sum(i.wasted * (2 if i.area.counted else 1) for r in self.requests for i in r.items)

    @property
    def minimum_requests(self) -> int:
        """The lower bound for these items: by item count and by response bytes."""
        items = [i for r in self.requests for i in r.items]
        if not items:
            return 0
        per_request = item_limit(self.pdu_size, self.max_items)
        budget = self.pdu_size - RESPONSE_HEADER - PARAMETER
        by_bytes = math.ceil(sum(i.response_cost for i in items) / budget)
        return max(math.ceil(len(items) / per_request), by_bytes, 1)

    def __str__(self) -> str:
        lines = [f"request {n + 1}: {r}" for n, r in enumerate(self.requests)]
        lines.append(
            f"{self.requests_per_poll} requests ({self.minimum_requests} at least), "
            f"{self.items} items, {self.bytes_read} bytes read ({self.wasted_bytes} unused), "
            f"PDU {self.pdu_size}"
        )
        return "\n".join(lines)


def item_limit(pdu_size: int, max_items: int = MAX_ITEMS) -> int:
    """Items one request may carry: the CPU's limit and what fits the request PDU."""
    return max(1, min(max_items, (pdu_size - REQUEST_HEADER - PARAMETER) // ITEM_SPEC))


def max_item_bytes(pdu_size: int) -> int:
    """The most data one item may carry: the whole response for it alone."""
    return pdu_size - RESPONSE_HEADER - PARAMETER - ITEM_HEADER


def plan_reads(
    tags: Sequence[PlanTag],
    *,
    pdu_size: int = 480,
    max_gap: int = 0,
    max_items: int = MAX_ITEMS,
    alone: Collection[int] = (),
) -> ReadPlan:
    """Merge tags into items and pack the items into the fewest requests within the PDU.

    `alone` lists tag ids that get an item of their own (the source's answer to an item that
    failed for one of its tags). Raises ValueError for a repeated tag id, a value wider than
    one response may carry, or limits out of range.
    """
    if pdu_size < 64:
        raise ValueError(f"a PDU of {pdu_size} bytes is too small")
    if not 1 <= max_items <= MAX_ITEMS or max_gap < 0:
        raise ValueError("max_items must be in 1..20 and max_gap 0 or more")
    seen: set[int] = set()
    for tag in tags:
        if tag.tag_id in seen:
            raise ValueError(f"tag id {tag.tag_id} appears twice")
        seen.add(tag.tag_id)
    limit = max_item_bytes(pdu_size)
    ordered = sorted(tags, key=lambda t: (t.address.area, t.address.db, t.start, t.tag_id))
    items: list[ReadItem] = []
    for (area, db), group in groupby(ordered, key=lambda t: (t.address.area, t.address.db)):
        unit = 2 if area.counted else 1
        items.extend(_merge(area, db, list(group), max_gap, limit // unit, frozenset(alone)))
    return ReadPlan(_pack(items, pdu_size, max_items), pdu_size, max_items)


def _merge(
    area: Area, db: int, tags: list[PlanTag], max_gap: int, limit: int, alone: frozenset[int]
) -> list[ReadItem]:
    """Greedy sweep over one area's tags, sorted by start."""
    out: list[ReadItem] = []
    members: list[PlanTag] = []
    start = end = 0
    for tag in tags:
        if tag.address.width > limit:
            raise ValueError(
                f"{tag.address} is {tag.address.size} bytes, more than one response of this "
                f"PDU carries ({limit})"
            )
        if tag.tag_id in alone:
            out.append(ReadItem(area, db, tag.start, tag.address.width, (tag,)))
            continue
        if members and tag.start - end <= max_gap and max(end, tag.end) - start <= limit:
            members.append(tag)
            end = max(end, tag.end)
            continue
        if members:
            out.append(ReadItem(area, db, start, end - start, tuple(members)))
        members, start, end = [tag], tag.start, tag.end
    if members:
        out.append(ReadItem(area, db, start, end - start, tuple(members)))
    return out


def _pack(items: list[ReadItem], pdu_size: int, max_items: int) -> tuple[ReadRequest, ...]:
    """Items into requests: two budgets per request (item count, response bytes), so this is a
    two-dimensional bin packing. First fit and best fit over a few orders (largest first by
    bytes, by the larger of the two shares, by their sum) are tried until one reaches the lower
    bound; when none does, a spread of the largest items over the bound's number of requests
    (least loaded first) is tried, then over one more, and so on. A plan is made once."""
    if not items:
        return ()
    per_request = item_limit(pdu_size, max_items)
    budget = pdu_size - RESPONSE_HEADER - PARAMETER
    total = sum(i.response_cost for i in items)
    low = max(math.ceil(len(items) / per_request), math.ceil(total / budget), 1)

    def bytes_first(i: ReadItem) -> float:
        return -i.response_cost

    def larger_share(i: ReadItem) -> float:
        return -max(i.response_cost / budget, 1 / per_request)

    def share_sum(i: ReadItem) -> float:
        return -(i.response_cost / budget + 1 / per_request)

    best: list[list[ReadItem]] = []
    for key in (bytes_first, larger_share, share_sum):
        ordered = sorted(items, key=key)
        for best_fit in (False, True):
            bins = _fit(ordered, per_request, budget, best_fit)
            if not best or len(bins) < len(best):
                best = bins
            if len(best) == low:
                break
        if len(best) == low:
            break
    # When the item count is what binds, spreading the largest items over a fixed number of
    # requests finds the packings the greedy fits miss.
    largest_first = sorted(items, key=bytes_first)
    for k in range(low, len(best)):
        spread = _spread(largest_first, k, per_request, budget)
        if spread is not None:
            best = spread
            break

    def order(i: ReadItem) -> tuple[int, int, int]:
        return (i.area, i.db, i.start)

    requests = [ReadRequest(tuple(sorted(b, key=order))) for b in best]
    return tuple(sorted(requests, key=lambda r: order(r.items[0])))


def _spread(
    items: list[ReadItem], k: int, per_request: int, budget: int
) -> list[list[ReadItem]] | None:
    """Worst fit into exactly `k` requests (the least loaded first), or None when an item finds
    no room. A heap keeps the requests with an item free by load."""
    bins: list[list[ReadItem]] = [[] for _ in range(k)]
    heap = [(0, n) for n in range(k)]  # (bytes used, request) of requests with an item free
    for item in items:
        if not heap:
            return None
        used, n = heapq.heappop(heap)
        if used + item.response_cost > budget:
            return None  # the least loaded request has no room: none has
        bins[n].append(item)
        if len(bins[n]) < per_request:
            heapq.heappush(heap, (used + item.response_cost, n))
    return [b for b in bins if b]


def _fit(
    items: list[ReadItem], per_request: int, budget: int, best_fit: bool
) -> list[list[ReadItem]]:
    """First or best fit; a request leaves the candidates once full (items or bytes), so a
    long list of small items costs a short scan each."""
    # Every odd item is counted with its fill byte: the order inside is decided later.
    smallest = min(i.response_cost for i in items)
    bins: list[list[ReadItem]] = []
    used: list[int] = []
    candidates: list[int] = []  # requests that may still take an item, in opening order
    for item in items:
        cost = item.response_cost
        chosen = -1
        for n in candidates:
            if used[n] + cost <= budget:
                if not best_fit:
                    chosen = n
                    break
                if chosen < 0 or used[n] > used[chosen]:
                    chosen = n
        if chosen < 0:
            chosen = len(bins)
            bins.append([])
            used.append(0)
            candidates.append(chosen)
        bins[chosen].append(item)
        used[chosen] += cost
        if len(bins[chosen]) >= per_request or budget - used[chosen] < smallest:
            candidates.remove(chosen)
    return bins

"""The read plan of one MELSEC PLC: which requests one poll sends, built once at start.

Every read is in word units: a word device's words, or a bit device's points 16 to a word
(M0..M15 is the word at M0), so one read serves bits and words alike and a tag is a run of
words, `(device, word, width)`. The plan is made in two passes:

1. Batch reads (0401): per device, tags sorted by word are coalesced into as few reads as
   `max_words` allows, reading through gaps of up to `max_gap` unused words (one longer
   request costs less than a second round trip). A value is never split across two reads.
2. Random reads (0403): reads scattered over many devices or far apart cost a request each;
   a random read fetches up to `max_random_points` single or double words at any addresses in
   one request. Batch reads are moved into random reads, smallest first, as long as a random
   read then replaces at least two of them: the plan never has more requests than pass 1.

Pure: frozen `PlanTag`s in, a frozen `ReadPlan` out, whose figures `lineside plan` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from agent.model import DATA_TYPES
from connectors.mc.address import WORD_WIDTH
from connectors.mc.frame import DEVICES, MAX_BATCH_WORDS, MAX_RANDOM_POINTS, Point

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
# Bytes on the wire of a 3E binary request and of its response, less the points and data.
_REQUEST_BYTES = {"batch": 21, "random": 17}
_RESPONSE_BYTES = 11
_POINT_BYTES = 4  # device number (3) and code (1) of one random-read point


@dataclass(frozen=True, slots=True)
class PlanTag:
    """What the planner and the codec need of one tag, in word space.

    `word` is the word's index in its device (a bit device's number // 16); `bit` picks one
    bit of the word for a bool (None: the whole word, true when not zero).
    """

    tag_id: int
    device: str
    word: int
    width: int
    type: str
    order: str = "CDAB"
    bit: int | None = None
    scale: float = 1.0
    offset_value: float = 0.0

    def __post_init__(self) -> None:
        where = f"tag {self.tag_id} ({self.device} word {self.word})"
        if self.device not in DEVICES:
            raise ValueError(f"{where}: unknown device")
        if self.type not in DATA_TYPES or self.type == "string":
            raise ValueError(f"{where}: cannot plan type {self.type!r}")
        if self.order not in ORDERS:
            raise ValueError(f"{where}: unknown order {self.order!r}")
        if self.bit is not None and (self.type != "bool" or not 0 <= self.bit <= 15):
            raise ValueError(f"{where}: a bit is a bool with bit in 0..15")
        if self.width != WORD_WIDTH[self.type]:
            raise ValueError(f"{where}: a {self.type} is {WORD_WIDTH[self.type]} words wide")
        if self.word < 0:
            raise ValueError(f"{where}: negative word")

    @property
    def end(self) -> int:
        return self.word + self.width

    @property
    def words(self) -> range:
        return range(self.word, self.end)


def wire_point(device: str, word: int) -> Point:
    """The wire address of word `word` of `device` (a bit device counts points)."""
    return Point(device, word * 16 if DEVICES[device].bits else word)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One request and the tags it serves.

    A batch read has `device`, `start` and `count`; a random read has `words` and `dwords`
    (device, word) points. `slots` maps each word read to its word index in the response data.
    """

    kind: str  # "batch" | "random"
    tags: tuple[PlanTag, ...]
    device: str = ""
    start: int = 0
    count: int = 0
    words: tuple[tuple[str, int], ...] = ()
    dwords: tuple[tuple[str, int], ...] = ()
    slots: dict[tuple[str, int], int] = field(default_factory=dict, compare=False)

    @classmethod
    def batch(cls, device: str, start: int, count: int, tags: Sequence[PlanTag]) -> ReadRequest:
        slots = {(device, start + i): i for i in range(count)}
        return cls("batch", tuple(tags), device, start, count, slots=slots)

    @classmethod
    def random(cls, tags: Sequence[PlanTag]) -> ReadRequest:
        words, dwords = _points(tags)
        slots: dict[tuple[str, int], int] = {}
        for i, key in enumerate(words):
            slots[key] = i
        for i, (device, word) in enumerate(dwords):
            slots[(device, word)] = len(words) + 2 * i
            slots[(device, word + 1)] = len(words) + 2 * i + 1
        return cls("random", tuple(tags), words=words, dwords=dwords, slots=slots)

    @property
    def data_words(self) -> int:
        return self.count if self.kind == "batch" else len(self.words) + 2 * len(self.dwords)

    @property
    def payload_bytes(self) -> int:
        return 2 * self.data_words

    @property
    def points(self) -> int:
        """Points of a random read (a batch read: 1)."""
        return len(self.words) + len(self.dwords) if self.kind == "random" else 1

    @property
    def wire_bytes(self) -> int:
        """Request plus response on a 3E binary port."""
        request = _REQUEST_BYTES[self.kind] + (
            _POINT_BYTES * self.points if self.kind == "random" else 0
        )
        return request + _RESPONSE_BYTES + self.payload_bytes

    @property
    def wasted(self) -> int:
        """Words read that no tag uses (gaps a batch read bridged)."""
        used = {(t.device, w) for t in self.tags for w in t.words}
        return self.data_words - len(used)

    def __str__(self) -> str:
        if self.kind == "batch":
            head = wire_point(self.device, self.start)
            bits = " (bit device, 16 points a word)" if DEVICES[self.device].bits else ""
            return (
                f"0401 {self.device}{head.number}: {self.count} words{bits}, "
                f"{len(self.tags)} tags, {self.wasted} unused"
            )
        devices = ",".join(sorted({d for d, _ in (*self.words, *self.dwords)}))
        return (
            f"0403 random: {len(self.words)} words + {len(self.dwords)} double words "
            f"of {devices}, {len(self.tags)} tags"
        )


@dataclass(frozen=True, slots=True)
class ReadPlan:
    requests: tuple[ReadRequest, ...]

    @property
    def requests_per_poll(self) -> int:
        return len(self.requests)

    @property
    def registers_read(self) -> int:
        """Words read per poll (named as the Modbus plan's, for `lineside plan`)."""
        return sum(r.data_words for r in self.requests)

    @property
    def bits_read(self) -> int:
        return 0  # bits travel in words

    @property
    def wasted_registers(self) -> int:
        return sum(r.wasted for r in self.requests)

    @property
    def bytes_per_poll(self) -> int:
        return sum(r.wire_bytes for r in self.requests)

    def __str__(self) -> str:
        lines = [str(r) for r in self.requests]
        lines.append(
            f"{self.requests_per_poll} requests, {self.registers_read} words read "
            f"({self.wasted_registers} unused), {self.bytes_per_poll} bytes per poll"
        )
        return "\n".join(lines)


def plan_reads(
    tags: Sequence[PlanTag],
    *,
    max_words: int = MAX_BATCH_WORDS,
    max_gap: int = 0,
    max_random_points: int = MAX_RANDOM_POINTS,
) -> ReadPlan:
    """The fewest requests that read every tag (see the module's docstring)."""
    if not 1 <= max_words <= MAX_BATCH_WORDS:
        raise ValueError(f"max_words must be in 1..{MAX_BATCH_WORDS}, not {max_words}")
    if not 0 <= max_random_points <= MAX_RANDOM_POINTS:
        raise ValueError(f"max_random_points must be in 0..{MAX_RANDOM_POINTS}")
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more, not {max_gap}")
    if len({t.tag_id for t in tags}) != len(tags):
        raise ValueError("a tag id appears twice")
    ordered = sorted(tags, key=lambda t: (t.device, t.word, t.tag_id))
    batches: list[ReadRequest] = []
    for device, group in groupby(ordered, key=lambda t: t.device):
        batches.extend(_coalesce(device, group, max_words, max_gap))
    return ReadPlan(tuple(_randomise(batches, max_random_points)))


def _coalesce(device: str, tags: Iterable[PlanTag], limit: int, max_gap: int) -> list[ReadRequest]:
    requests: list[ReadRequest] = []
    members: list[PlanTag] = []
    start = end = 0
    for tag in tags:
        if tag.width > limit:
            raise ValueError(f"tag {tag.tag_id} is {tag.width} words, more than {limit} a read")
        if members and tag.word - end <= max_gap and tag.end - start <= limit:
            members.append(tag)
            end = max(end, tag.end)
            continue
        if members:
            requests.append(ReadRequest.batch(device, start, end - start, members))
        members, start, end = [tag], tag.word, tag.end
    if members:
        requests.append(ReadRequest.batch(device, start, end - start, members))
    return requests


def _points(tags: Iterable[PlanTag]) -> tuple[tuple[tuple[str, int], ...], ...]:
    """Single and double word points covering every word of `tags`: runs paired into dwords."""
    used = sorted({(t.device, w) for t in tags for w in t.words})
    words: list[tuple[str, int]] = []
    dwords: list[tuple[str, int]] = []
    i = 0
    while i < len(used):
        device, word = used[i]
        if i + 1 < len(used) and used[i + 1] == (device, word + 1):
            dwords.append((device, word))
            i += 2
        else:
            words.append((device, word))
            i += 1
    return tuple(words), tuple(dwords)


def _cost(tags: Iterable[PlanTag]) -> int:
    words, dwords = _points(tags)
    return len(words) + len(dwords)


def _randomise(batches: list[ReadRequest], limit: int) -> list[ReadRequest]:
    """Replace two or more small batch reads by one random read where they fit."""
    if limit == 0 or len(batches) < 2:
        return batches
    by_cost = sorted(batches, key=lambda r: _cost(r.tags))
    kept: list[ReadRequest] = []
    randoms: list[ReadRequest] = []
    bin_: list[ReadRequest] = []
    for request in by_cost:
        merged = [t for r in (*bin_, request) for t in r.tags]
        if _cost(merged) <= limit:
            bin_.append(request)
            continue
        _close_bin(bin_, kept, randoms)
        bin_ = [request] if _cost(request.tags) <= limit else []
        if not bin_:
            kept.append(request)
    _close_bin(bin_, kept, randoms)
    order = {id(r): i for i, r in enumerate(batches)}
    kept.sort(key=lambda r: order[id(r)])
    return kept + randoms


def _close_bin(
    bin_: list[ReadRequest], kept: list[ReadRequest], randoms: list[ReadRequest]
) -> None:
    if len(bin_) >= 2:
        randoms.append(ReadRequest.random([t for r in bin_ for t in r.tags]))
    else:
        kept.extend(bin_)

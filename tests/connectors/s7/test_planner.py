"""The S7 read planner: merging inside a DB, PDU limits on items and bytes, its lower bound."""

from __future__ import annotations

import random

import pytest

from connectors.s7.address import parse_address
from connectors.s7.planner import (
    PlanTag,
    ReadPlan,
    item_limit,
    max_item_bytes,
    plan_reads,
)


def tags(*addresses: str) -> list[PlanTag]:
    return [PlanTag(i, parse_address(a)) for i, a in enumerate(addresses)]


def test_neighbours_in_a_db_share_one_item_and_bits_share_their_byte() -> None:
    plan = plan_reads(
        tags("DB1.DBD0:REAL", "DB1.DBW4:INT", "DB1.DBX6.0", "DB1.DBX6.7", "DB1.DBD8:DINT"),
        max_gap=1,
    )
    assert plan.requests_per_poll == 1
    (item,) = plan.requests[0].items
    assert (item.db, item.start, item.count, len(item.tags)) == (1, 0, 12, 5)
    assert item.wasted == 1  # byte 7, between the bits' byte and the DINT


def test_gaps_up_to_max_gap_are_bridged_and_longer_ones_are_not() -> None:
    spread = tags("DB1.DBW0", "DB1.DBW12", "DB1.DBW40")
    assert [len(r.items) for r in plan_reads(spread, max_gap=10).requests] == [2]
    bridged = plan_reads(spread, max_gap=10).requests[0].items
    assert [(i.start, i.count) for i in bridged] == [(0, 14), (40, 2)]
    assert plan_reads(spread, max_gap=0).items == 3


def test_areas_and_dbs_never_merge() -> None:
    plan = plan_reads(tags("DB1.DBW0", "DB2.DBW2", "MW4", "IW6", "QW8", "T1", "T2"), max_gap=64)
    items = [i for r in plan.requests for i in r.items]
    assert len(items) == 6  # T1 and T2 merge (element numbers), nothing else
    timers = [i for i in items if i.area.counted]
    assert [(i.start, i.count, i.nbytes) for i in timers] == [(1, 2, 4)]


def test_item_limit_of_the_request_pdu_and_the_cpu() -> None:
    assert item_limit(240) == 19  # 10 + 2 + 12 * 19 = 240
    assert item_limit(480) == 20
    assert item_limit(480, max_items=8) == 8
    far = tags(*(f"DB{n}.DBW0" for n in range(1, 42)))  # 41 DBs: 41 items
    assert plan_reads(far, pdu_size=240).requests_per_poll == 3
    assert [len(r.items) for r in plan_reads(far, pdu_size=480).requests] == [20, 20, 1]


def test_response_bytes_stay_within_the_pdu_and_values_are_never_split() -> None:
    big = tags(*(f"DB1.DBB{100 * n}:LREAL" for n in range(60)), "DB2.DBB0:STRING[200]")
    for pdu in (240, 480, 960):
        plan = plan_reads(big, pdu_size=pdu, max_gap=100)
        for request in plan.requests:
            assert request.response_bytes <= pdu
            assert request.request_bytes <= pdu
            for item in request.items:
                assert item.nbytes <= max_item_bytes(pdu)
                for tag in item.tags:
                    assert item.start <= tag.start and tag.end <= item.start + item.count
        served = sorted(t.tag_id for r in plan.requests for i in r.items for t in i.tags)
        assert served == list(range(61))


def test_a_value_larger_than_a_response_is_refused() -> None:
    with pytest.raises(ValueError, match="more than one response of this PDU carries"):
        plan_reads(tags("DB1.DBB0:STRING[254]"), pdu_size=240)


@pytest.mark.parametrize("seed", range(40))
def test_packing_reaches_the_lower_bound(seed: int) -> None:
    rng = random.Random(seed)
    forms = ["DB{db}.DBD{o}:REAL", "DB{db}.DBW{o}:INT", "DB{db}.DBX{o}.1", "DB{db}.DBB{o}:LREAL"]
    addresses = {
        rng.choice(forms).format(db=rng.randint(1, 30), o=rng.randrange(0, 2000, 2))
        for _ in range(rng.randint(5, 300))
    }
    for pdu in (240, 480, 960):
        plan = plan_reads(tags(*sorted(addresses)), pdu_size=pdu, max_gap=8)
        assert plan.requests_per_poll == plan.minimum_requests, str(plan)


def test_alone_gives_tags_an_item_each() -> None:
    three = tags("DB1.DBW0", "DB1.DBW2", "DB1.DBW4")
    assert plan_reads(three).items == 1
    assert plan_reads(three, alone={0, 1, 2}).items == 3


def test_printed_plan() -> None:
    plan = plan_reads(tags("DB1.DBD0:REAL", "DB1.DBW4:INT", "MW10"), max_gap=4)
    assert isinstance(plan, ReadPlan)
    assert str(plan) == (
        "request 1: 2 items, 30 bytes back: M:10-11 (2 bytes, 1 tags), DB1:0-5 (6 bytes, 2 tags)\n"
        "1 requests (1 at least), 2 items, 8 bytes read (0 unused), PDU 480"
    )

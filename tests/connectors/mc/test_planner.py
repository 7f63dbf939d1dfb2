"""The MC planner: batch reads merged, random reads only where they save requests."""

from __future__ import annotations

import numpy as np

from connectors.mc.codec import RequestDecoder
from connectors.mc.planner import PlanTag, plan_reads


def _tag(i: int, device: str, word: int, type: str = "int16", **kw: object) -> PlanTag:
    width = {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "float32": 2, "float64": 4}[type]
    return PlanTag(i, device, word, width, type, **kw)  # type: ignore[arg-type]


def test_neighbours_share_one_batch_read() -> None:
    plan = plan_reads([_tag(0, "D", 0), _tag(1, "D", 1, "int32"), _tag(2, "D", 8)], max_gap=10)
    assert plan.requests_per_poll == 1
    assert (plan.requests[0].kind, plan.requests[0].count) == ("batch", 9)


def test_scattered_tags_take_one_random_read_not_three_batches() -> None:
    tags = [
        _tag(0, "D", 0),
        _tag(1, "D", 5000, "float32"),
        _tag(2, "W", 3),
        _tag(3, "M", 0, "bool", bit=5),
    ]
    batch_only = plan_reads(tags, max_random_points=0)
    plan = plan_reads(tags)
    assert batch_only.requests_per_poll == 4
    assert plan.requests_per_poll == 1
    assert plan.requests[0].kind == "random"


def test_random_reads_never_add_requests() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        tags = [
            _tag(i, str(rng.choice(["D", "W", "R", "M"])), int(rng.integers(0, 3000)))
            for i in range(int(rng.integers(1, 400)))
        ]
        with_random = plan_reads(tags, max_gap=4, max_random_points=int(rng.integers(1, 193)))
        without = plan_reads(tags, max_gap=4, max_random_points=0)
        assert with_random.requests_per_poll <= without.requests_per_poll
        assert all(r.points <= 192 for r in with_random.requests)


def test_decoder_reads_low_word_first_by_default_and_abcd_when_told() -> None:
    tags = [
        _tag(0, "D", 0, "int32"),
        _tag(1, "D", 2, "float32", order="ABCD"),
        _tag(2, "D", 4, "bool", bit=3),
        _tag(3, "D", 5, scale=0.1),
    ]
    [request] = plan_reads(tags).requests
    data = bytes.fromhex("feff ffff" + "2040 0000" + "0800" + "f6ff")  # LE words
    values = RequestDecoder(request).decode(data)
    assert values.tolist() == [-2.0, 2.5, 1.0, -1.0]

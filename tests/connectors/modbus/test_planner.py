import pytest

from connectors.modbus.address import Table
from connectors.modbus.planner import (
    MAX_BITS,
    MAX_REGISTERS,
    PlanTag,
    ReadPlan,
    plan_unit,
    tag_width,
)

HR = Table.HOLDING_REGISTERS
IR = Table.INPUT_REGISTERS
CO = Table.COILS
DI = Table.DISCRETE_INPUTS


def words(offsets: list[int], table: Table = HR, first_id: int = 0) -> list[PlanTag]:
    """One uint16 tag per offset."""
    return [PlanTag(first_id + i, table, o, 1, "uint16") for i, o in enumerate(offsets)]


def bits(offsets: list[int], table: Table = CO, first_id: int = 0) -> list[PlanTag]:
    return [PlanTag(first_id + i, table, o, 1, "bool") for i, o in enumerate(offsets)]


def spans(plan: ReadPlan) -> list[tuple[str, int, int]]:
    """(table, first address, last address) of each request."""
    return [(r.table.value, r.start, r.end - 1) for r in plan.requests]


ISSUE_OFFSETS = [1, 2, 3, 5, 6, 10, 11, 12, 14]


@pytest.mark.parametrize(
    ("tags", "limits", "expected"),
    [
        pytest.param(
            words(ISSUE_OFFSETS),
            {"max_gap": 0},
            [("hr", 1, 3), ("hr", 5, 6), ("hr", 10, 12), ("hr", 14, 14)],
            id="issue-gap-0",
        ),
        pytest.param(
            words(ISSUE_OFFSETS),
            {"max_gap": 2},
            [("hr", 1, 6), ("hr", 10, 14)],
            id="issue-gap-2",
        ),
        pytest.param(
            words(ISSUE_OFFSETS),
            {"max_gap": 3},
            [("hr", 1, 14)],
            id="issue-gap-3-joins-all",
        ),
        pytest.param(
            words(list(reversed(ISSUE_OFFSETS))),
            {"max_gap": 2},
            [("hr", 1, 6), ("hr", 10, 14)],
            id="input-order-does-not-matter",
        ),
        pytest.param(
            words(list(range(126))),
            {},
            [("hr", 0, 124), ("hr", 125, 125)],
            id="126-contiguous-registers-split",
        ),
        pytest.param(
            words(list(range(125))),
            {},
            [("hr", 0, 124)],
            id="125-contiguous-registers-one-request",
        ),
        pytest.param(
            [*words(list(range(124))), PlanTag(999, HR, 124, 2, "float32")],
            {},
            [("hr", 0, 123), ("hr", 124, 125)],
            id="float32-at-124-moves-to-next-request",
        ),
        pytest.param(
            words(list(range(30))),
            {"max_registers": 10},
            [("hr", 0, 9), ("hr", 10, 19), ("hr", 20, 29)],
            id="per-device-limit",
        ),
        pytest.param(
            [*words([0, 9]), PlanTag(5, HR, 9, 4, "float64")],
            {"max_registers": 10, "max_gap": 20},
            [("hr", 0, 9), ("hr", 9, 12)],
            id="overlap-beyond-limit-starts-new-request",
        ),
        pytest.param(
            bits(list(range(2001))),
            {},
            [("co", 0, 1999), ("co", 2000, 2000)],
            id="2001-coils-split",
        ),
        pytest.param(
            bits([0, 5, 9], table=DI),
            {"max_gap": 4},
            [("di", 0, 9)],
            id="bit-gap-counted-in-bits",
        ),
        pytest.param(
            bits([0, 5, 10], table=DI),
            {"max_gap": 3},
            [("di", 0, 0), ("di", 5, 5), ("di", 10, 10)],
            id="bit-gap-too-wide",
        ),
        pytest.param(
            bits(list(range(20))),
            {"max_bits": 8},
            [("co", 0, 7), ("co", 8, 15), ("co", 16, 19)],
            id="per-device-bit-limit",
        ),
        pytest.param(
            [*words([0, 1], table=IR), *words([2, 3], first_id=10), *bits([0], first_id=20)],
            {"max_gap": 100},
            [("co", 0, 0), ("hr", 2, 3), ("ir", 0, 1)],
            id="tables-never-merged",
        ),
        pytest.param(
            [
                PlanTag(0, HR, 7, 1, "bool", bit=0),
                PlanTag(1, HR, 7, 1, "bool", bit=15),
                PlanTag(2, HR, 8, 2, "int32"),
            ],
            {},
            [("hr", 7, 9)],
            id="bits-of-one-register-share-it",
        ),
        pytest.param(
            [PlanTag(0, HR, 0, 2, "float32"), PlanTag(1, HR, 1, 1, "uint16")],
            {},
            [("hr", 0, 1)],
            id="overlapping-tags-share",
        ),
        pytest.param(
            [
                PlanTag(0, HR, 0, 4, "float64"),
                PlanTag(1, HR, 1, 1, "uint16"),
                *words([5], first_id=2),
            ],
            {},
            [("hr", 0, 3), ("hr", 5, 5)],
            id="a-tag-inside-a-wider-one-keeps-the-wider-end",
        ),
        pytest.param(
            [PlanTag(0, HR, 65532, 4, "uint64")],
            {},
            [("hr", 65532, 65535)],
            id="top-of-address-space",
        ),
        pytest.param(
            [PlanTag(0, HR, 0, 10, "string", length=20), *words([10], first_id=1)],
            {},
            [("hr", 0, 10)],
            id="string-width-from-length",
        ),
        pytest.param([], {}, [], id="empty"),
    ],
)
def test_requests(tags: list[PlanTag], limits: dict[str, int], expected: list[object]) -> None:
    plan = plan_unit(tags, **limits)
    assert spans(plan) == expected
    # Every tag is served by exactly one request that holds it whole.
    served = [t.tag_id for r in plan.requests for t in r.tags]
    assert sorted(served) == sorted(t.tag_id for t in tags)
    for r in plan.requests:
        if r.table.is_bits:
            assert r.count <= limits.get("max_bits", MAX_BITS)
        else:
            assert r.count <= limits.get("max_registers", MAX_REGISTERS)
        assert all(r.start <= t.offset and t.end <= r.end for t in r.tags)


def test_figures_for_the_issue_case() -> None:
    gap0 = plan_unit(words(ISSUE_OFFSETS))
    assert gap0.requests_per_poll == 4
    assert gap0.registers_read == 9
    assert gap0.wasted_registers == 0
    # 4 x 12-byte requests + responses of 9 + 2N bytes.
    assert gap0.bytes_per_poll == 4 * 12 + 4 * 9 + 2 * 9
    gap2 = plan_unit(words(ISSUE_OFFSETS), max_gap=2)
    assert gap2.requests_per_poll == 2
    assert gap2.registers_read == 11  # 1-6 and 10-14
    assert gap2.wasted_registers == 2  # addresses 4 and 13
    assert gap2.bytes_per_poll == 2 * 12 + 2 * 9 + 2 * 11
    assert gap2.bits_read == 0 and gap2.wasted_bits == 0


def test_figures_for_bits_and_shared_registers() -> None:
    plan = plan_unit(
        [
            *bits([0, 1, 2, 12]),
            PlanTag(10, HR, 3, 1, "bool", bit=1),
            PlanTag(11, HR, 3, 1, "bool", bit=2),
        ],
        max_gap=10,
    )
    coils, regs = plan.requests
    assert (coils.function_code, coils.count, coils.payload_bytes, coils.wasted) == (1, 13, 2, 9)
    assert (regs.function_code, regs.count, regs.payload_bytes, regs.wasted) == (3, 1, 2, 0)
    assert plan.bits_read == 13 and plan.wasted_bits == 9
    assert plan.registers_read == 1 and plan.wasted_registers == 0
    assert plan.bytes_per_poll == (12 + 9 + 2) + (12 + 9 + 2)


def test_function_codes() -> None:
    assert [t.function_code for t in (CO, DI, HR, IR)] == [1, 2, 3, 4]


def test_tags_in_a_request_are_in_address_order() -> None:
    plan = plan_unit(words([5, 3, 4], first_id=7))
    assert [t.offset for t in plan.requests[0].tags] == [3, 4, 5]


def test_plan_prints_one_line_per_request_and_a_total() -> None:
    text = str(plan_unit(words(ISSUE_OFFSETS), max_gap=2))
    assert text.splitlines() == [
        "hr:1-6 (FC03, 6 registers, 5 tags, 1 unused)",
        "hr:10-14 (FC03, 5 registers, 4 tags, 1 unused)",
        "2 requests, 11 registers and 0 bits read (2 registers and 0 bits unused), "
        "64 bytes per poll on TCP",
    ]


@pytest.mark.parametrize(
    ("tags", "limits", "message"),
    [
        pytest.param(
            [PlanTag(0, HR, 0, 4, "float64")],
            {"max_registers": 3},
            "more than the 3 ",
            id="value-over-limit",
        ),
        pytest.param(
            [PlanTag(0, HR, 0, 126, "string", length=252)],
            {},
            "more than the 125",
            id="long-string",
        ),
        pytest.param(words([0]), {"max_registers": 126}, "max_registers", id="limit-above-125"),
        pytest.param(words([0]), {"max_registers": 0}, "max_registers", id="limit-zero"),
        pytest.param(bits([0]), {"max_bits": 2001}, "max_bits", id="bit-limit-above-2000"),
        pytest.param(words([0]), {"max_gap": -1}, "max_gap", id="negative-gap"),
        pytest.param([*words([0]), *words([1])], {}, "appears twice", id="repeated-tag-id"),
    ],
)
def test_bad_plans_are_refused(tags: list[PlanTag], limits: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_unit(tags, **limits)


def test_wider_than_limit_message_names_the_tag() -> None:
    with pytest.raises(ValueError) as err:
        plan_unit([PlanTag(42, IR, 7, 4, "uint64")], max_registers=2)
    assert str(err.value) == (
        "tag 42 (ir:7, uint64) is 4 registers wide, more than the 2 one request may read"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "float16"}, "unknown type"),
        ({"order": "ABDC"}, "unknown order"),
        ({"width": 1, "type": "float32"}, "2 registers wide, not 1"),
        ({"width": 2, "type": "uint16"}, "1 registers wide, not 2"),
        ({"table": CO, "type": "uint16"}, "plain bools"),
        ({"table": DI, "type": "bool", "bit": 0}, "plain bools"),
        ({"type": "bool", "bit": 16}, "bit in 0..15"),
        ({"type": "bool", "bit": -1}, "bit in 0..15"),
        ({"type": "uint16", "bit": 3}, "bit in 0..15"),
        ({"type": "string", "length": 0, "width": 0}, "length of at least 1"),
        ({"type": "string", "length": 5, "width": 2}, "3 registers wide"),
        ({"offset": -1}, "address space"),
        ({"offset": 65535, "type": "uint32", "width": 2}, "address space"),
    ],
)
def test_bad_tags_are_refused(fields: dict[str, object], message: str) -> None:
    good: dict[str, object] = {"tag_id": 1, "table": HR, "offset": 0, "width": 1, "type": "uint16"}
    good.update(fields)
    with pytest.raises(ValueError, match=message):
        PlanTag(**good)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "type_", "length", "width"),
    [
        (HR, "bool", 0, 1),
        (IR, "int16", 0, 1),
        (HR, "uint32", 0, 2),
        (HR, "float64", 0, 4),
        (HR, "string", 1, 1),
        (HR, "string", 7, 4),
        (CO, "bool", 0, 1),
    ],
)
def test_tag_width(table: Table, type_: str, length: int, width: int) -> None:
    assert tag_width(table, type_, length) == width


def test_tag_width_refuses_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown type"):
        tag_width(HR, "decimal")

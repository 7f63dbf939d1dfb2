"""`[machines.kpi]`: good sections load, each mistake gives one exact problem line.

Checked through `agent.config.load_config`, as `lineside validate` reports them (`FILE: WHERE:
MESSAGE`, the file prefix stripped here).
"""

from pathlib import Path

import pytest

from agent.config import load_config
from agent.kpi.config import product_code
from tests.agent.test_config import problems

HEAD = 'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
MACHINE = '[[machines]]\nname = "press1"\narea = "stamping"\nline = "line-1"\n'
SOURCE = """
[[sources]]
name = "plc1"
type = "modbus_tcp"
host = "127.0.0.1"
[[sources.units]]
unit_id = 1
machine = "press1"
tags = [
  { name = "state", address = "hr:0", type = "uint16" },
  { name = "mode", address = "hr:1", type = "uint16" },
  { name = "reason", address = "hr:2", type = "uint16" },
  { name = "parts", address = "hr:4", type = "uint32" },
  { name = "good", address = "hr:6", type = "uint32" },
  { name = "scrap", address = "hr:8", type = "uint16" },
  { name = "product", address = "hr:9", type = "uint16" },
  { name = "kwh", address = "hr:10", type = "float32" },
  { name = "die", address = "hr:20", type = "string", length = 4 },
]
"""
KPI = """[machines.kpi]
state = "state"
states = { running = [1], idle = [2], down = [3, 6], setup = [4], planned_stop = [5] }
total = "parts"
good = "good"
ideal_cycle_time = "2.5s"
"""


def write(tmp_path: Path, kpi: str, agent_extra: str = "") -> Path:
    head = HEAD.replace('id = "edge-1"\n', f'id = "edge-1"\n{agent_extra}')
    path = tmp_path / "lineside.toml"
    path.write_text(head + MACHINE + kpi + SOURCE, encoding="utf-8")
    return path


def test_minimal_section_loads(tmp_path: Path) -> None:
    kpi = load_config(write(tmp_path, KPI)).machines[0].kpi
    assert kpi is not None
    assert kpi.code_table() == {1: "running", 2: "idle", 3: "down", 6: "down", 4: "setup",
                                5: "planned_stop"}  # fmt: skip
    assert kpi.cycle_time_s() == 2.5
    assert kpi.max_gap == 180.0
    assert kpi.reason_label(7) == "reason 7"


def test_full_section_loads(tmp_path: Path) -> None:
    text = """[machines.kpi]
state = "state"
packml = true
unit_mode = "mode"
reason = "reason"
reasons = { "101" = "die jam" }
total = "parts"
reject = "scrap"
rework = "good"
ideal_rate = 24
rate_per = "minute"
product = "product"
products = { "7" = 30.0 }
energy = "kwh"
max_gap = "5m"
product_names = { "7" = "Bracket A" }
target_oee = 0.85
target_output = 9000
"""
    kpi = load_config(write(tmp_path, text)).machines[0].kpi
    assert kpi is not None and kpi.packml
    assert kpi.reason_label(101) == "die jam"
    assert kpi.cycle_time_s() == 2.5  # 24 per minute
    assert kpi.cycle_time_s(7) == 2.0  # product 7: 30 per minute
    assert kpi.cycle_time_s(8) == 2.5  # unknown product: the default
    assert kpi.max_gap == 300.0
    assert (kpi.target_oee, kpi.target_output) == (0.85, 9000)
    assert kpi.product_label(7) == "Bracket A" and kpi.product_label(8) == "product 8"


def test_a_text_product_tag_keys_products_by_their_strings(tmp_path: Path) -> None:
    # The product tag may be a text tag: its string is the product, `products` and
    # `product_names` are keyed by the strings (no integer codes asked for).
    text = KPI.replace('ideal_cycle_time = "2.5s"', "ideal_rate = 24") + (
        'product = "die"\nproducts = { "DR-DOOR-LH" = 30.0 }\n'
        'product_names = { "DR-HOOD-01" = "Hood die" }\n'
    )
    kpi = load_config(write(tmp_path, text)).machines[0].kpi
    assert kpi is not None
    door, hood, roof = (product_code(d) for d in ("DR-DOOR-LH", "DR-HOOD-01", "DR-ROOF-02"))
    assert kpi.cycle_time_s(door) == 2.0 and kpi.cycle_time_s(roof) == 2.5  # the default
    assert kpi.product_label(hood) == "Hood die" and kpi.product_label(roof) == "DR-ROOF-02"
    assert product_code("DR-ROOF-02") == roof  # the same code each time, in every process


def test_rates_per_hour_and_second(tmp_path: Path) -> None:
    text = KPI.replace('ideal_cycle_time = "2.5s"', 'ideal_rate = 160\nrate_per = "hour"')
    kpi = load_config(write(tmp_path, text)).machines[0].kpi
    assert kpi is not None and kpi.cycle_time_s() == pytest.approx(3600 / 160)
    text = KPI.replace('ideal_cycle_time = "2.5s"', 'ideal_rate = 4\nrate_per = "second"')
    kpi = load_config(write(tmp_path, text)).machines[0].kpi
    assert kpi is not None and kpi.cycle_time_s() == 0.25


W = "machines[0].kpi"
BAD = [
    (
        "target-oee-in-percent",
        KPI + "target_oee = 85\n",
        [f"{W}.target_oee: a ratio up to 1: write 0.85 for 85 %, got 85"],
    ),
    (
        "target-output-zero",
        KPI + "target_output = 0\n",
        [f"{W}.target_output: must be more than 0.0, got 0"],
    ),
    (
        "product-names-without-product",
        KPI + 'product_names = { "1" = "A" }\n',
        [f"{W}.product_names: product_names label the product tag: set product"],
    ),
    (
        "product-name-code-not-integer",
        KPI + 'product = "product"\nproduct_names = { "x1" = "A" }\n',
        [f"{W}.product_names.x1: product codes are integers, got 'x1'"],
    ),
    ("unknown-key", KPI + 'colour = "red"\n', [f"{W}: unknown key 'colour'"]),
    (
        "no-state-map",
        KPI.replace("states = {", "# states = {"),
        [f"{W}.state: say how to read the state: states = {{ running = [1], ... }} or packml"],
    ),
    (
        "both-state-maps",
        KPI + "packml = true\n",
        [f"{W}.states: use either states (raw codes) or packml = true, not both"],
    ),
    (
        "unit-mode-without-packml",
        KPI + 'unit_mode = "mode"\n',
        [f"{W}.unit_mode: unit_mode is a PackML tag: set packml = true"],
    ),
    (
        "code-twice",
        KPI.replace("idle = [2]", "idle = [2, 1]"),
        [f"{W}.states.idle: code 1 is also mapped to running"],
    ),
    (
        "one-counter",
        KPI.replace('good = "good"\n', ""),
        [f"{W}.total: name at least two of the counters total, good and reject"],
    ),
    (
        "no-ideal",
        KPI.replace('ideal_cycle_time = "2.5s"\n', ""),
        [f"{W}.ideal_rate: give the ideal as either ideal_cycle_time or ideal_rate (one)"],
    ),
    (
        "two-ideals",
        KPI + "ideal_rate = 24\n",
        [f"{W}.ideal_rate: give the ideal as either ideal_cycle_time or ideal_rate (one)"],
    ),
    (
        "rate-per-alone",
        KPI + 'rate_per = "hour"\n',
        [f"{W}.rate_per: rate_per goes with ideal_rate"],
    ),
    (
        "rate-per-unknown",
        KPI.replace('ideal_cycle_time = "2.5s"', 'ideal_rate = 5\nrate_per = "week"'),
        [f"{W}.rate_per: expected 'second', 'minute' or 'hour', got 'week'"],
    ),
    (
        "zero-rate",
        KPI.replace('ideal_cycle_time = "2.5s"', "ideal_rate = 0"),
        [f"{W}.ideal_rate: must be more than 0.0, got 0"],
    ),
    (
        "cycle-without-unit",
        KPI.replace('"2.5s"', "2.5"),
        [f'{W}.ideal_cycle_time: durations need a unit, e.g. "500ms" or "5s", got 2.5'],
    ),
    (
        "products-without-rate",
        KPI + 'product = "product"\nproducts = { "7" = 30.0 }\n',
        [f"{W}.products: products give ideal rates per product: use ideal_rate as the default"],
    ),
    (
        "products-without-tag",
        KPI.replace('ideal_cycle_time = "2.5s"', "ideal_rate = 24") + 'products = { "7" = 30.0 }\n',
        [f"{W}.products: products need the product tag: set product"],
    ),
    (
        "product-code-not-integer",
        KPI.replace('ideal_cycle_time = "2.5s"', "ideal_rate = 24")
        + 'product = "product"\nproducts = { "A7" = 30.0 }\n',
        [f"{W}.products.A7: product codes are integers, got 'A7'"],
    ),
    (
        "reasons-without-tag",
        KPI + 'reasons = { "101" = "die jam" }\n',
        [f"{W}.reasons: reasons label the codes of a reason tag: set reason"],
    ),
    (
        "unknown-tag",
        KPI.replace('good = "good"', 'good = "good_parts"'),
        [
            f"{W}.good: no tag 'good_parts' on this machine (its tags: state, mode, reason, "
            "parts, good, scrap, product, kwh, die)"
        ],
    ),
    (
        "text-tag",
        KPI + 'reason = "die"\n',  # a text product is allowed (a string names it), not this
        [f"{W}.reason: tag 'die' is a string: KPI inputs must be numeric"],
    ),
    (
        "gap-below-heartbeat",
        KPI + 'max_gap = "30s"\n',
        [
            f"{W}.max_gap: must exceed the agent heartbeat (1m), or a quiet machine counts as "
            "unknown time"
        ],
    ),
    ("gap-zero", KPI + 'max_gap = "0s"\n', [f"{W}.max_gap: must be more than zero, got '0s'"]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_section(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert problems(write(tmp_path, text)) == expected


def test_gap_checked_against_the_configured_heartbeat(tmp_path: Path) -> None:
    path = write(tmp_path, KPI + 'max_gap = "30s"\n', agent_extra='heartbeat = "10s"\n')
    assert load_config(path).machines[0].kpi is not None
    path = write(tmp_path, KPI + 'max_gap = "2m"\n', agent_extra='heartbeat = "5m"\n')
    assert problems(path) == [
        f"{W}.max_gap: must exceed the agent heartbeat (5m), or a quiet machine counts as "
        "unknown time"
    ]


def inspection(name: str, machine: str = "press1") -> str:
    return f"""
[[inspections]]
name = "{name}"
machine = "{machine}"
source = {{ type = "sim" }}
model = "surface.onnx"
"""


def with_press2(kpi: str, *entries: str) -> str:
    """press1 with `kpi`, a second machine press2, and the `[[inspections]]` entries."""
    return HEAD + MACHINE + kpi + SOURCE + MACHINE.replace("press1", "press2") + "".join(entries)


def test_the_kpi_inspection_names_an_inspection_of_the_machine(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(
        with_press2(KPI + 'inspection = "surface"\n', inspection("surface")), encoding="utf-8"
    )
    kpi = load_config(path).machines[0].kpi
    assert kpi is not None and kpi.inspection == "surface"


BAD_INSPECTION = [
    (
        "no-such-entry",
        [inspection("surface"), inspection("edges")],
        [f"{W}.inspection: no [[inspections]] entry 'surfce' (the entries: surface, edges)"],
    ),
    (
        "no-entry-at-all",
        [],
        [f"{W}.inspection: no [[inspections]] entry 'surfce' (the entries: none)"],
    ),
    (
        "another-machine",
        [inspection("surfce", machine="press2")],
        [f"{W}.inspection: inspection 'surfce' inspects machine 'press2', not 'press1'"],
    ),
]


@pytest.mark.parametrize(
    ("entries", "expected"), [c[1:] for c in BAD_INSPECTION], ids=[c[0] for c in BAD_INSPECTION]
)
def test_bad_kpi_inspection(tmp_path: Path, entries: list[str], expected: list[str]) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(with_press2(KPI + 'inspection = "surfce"\n', *entries), encoding="utf-8")
    assert problems(path) == expected


def test_a_broken_inspection_entry_is_not_also_called_missing(tmp_path: Path) -> None:
    broken = inspection("surface").replace('model = "surface.onnx"', "model = 5")
    path = tmp_path / "lineside.toml"
    path.write_text(with_press2(KPI + 'inspection = "surface"\n', broken), encoding="utf-8")
    assert [p for p in problems(path) if ".kpi." in p] == []

"""The demo view's decoder reads back what the encoder wrote, for every machine kind."""

import pytest

from firmware_sim.encoder import make_encoder
from firmware_sim.image import RegisterImage, Table
from firmware_sim.machines import make_machine
from firmware_sim.profile import KINDS, load_profile
from firmware_sim.watch import decode_tag, format_value, reorder, table_spans


def tables_of(image: RegisterImage) -> dict[Table, bytes]:
    return {table: bytes(image.table(table)) for table in Table}


@pytest.mark.parametrize("kind", KINDS)
def test_decode_reads_back_every_tag(kind: str) -> None:
    machine = make_machine(kind, f"{kind}1", seed=7)
    machine.advance_to(3_600.0)
    values = machine.values()
    image = RegisterImage()
    profile = load_profile(kind)
    make_encoder(profile)(values, image)
    for tag in profile.tags:
        got = decode_tag(tag, tables_of(image))
        want = values[tag.name]
        if isinstance(want, float) and not isinstance(want, bool):
            # registers hold raw = (value - offset) / scale, rounded for integer types
            assert got == pytest.approx(want, abs=tag.scale / 2 + 1e-6 * abs(want)), tag.name
        else:
            assert got == want, tag.name


@pytest.mark.parametrize(
    ("order", "expected"),
    [("ABCD", "42f6e666"), ("CDAB", "e66642f6"), ("BADC", "f64266e6"), ("DCBA", "66e6f642")],
)
def test_reorder_undoes_each_word_order(order: str, expected: str) -> None:
    # 123.45 as float32 is 42 F6 E6 66; standards.md §5.6 gives the wire form per order
    assert reorder(bytes.fromhex(expected), order).hex() == "42f6e666"


def test_reorder_rejects_unknown_order() -> None:
    with pytest.raises(ValueError, match="unknown order"):
        reorder(b"\0\0\0\0", "ACBD")


def test_table_spans_cover_every_tag() -> None:
    profile = load_profile("press")
    spans = table_spans(profile)
    for tag in profile.tags:
        assert tag.index + tag.width <= spans[tag.table]


def test_format_value() -> None:
    assert format_value(True, "") == "yes"
    assert format_value(1234.5, "kW") == "1,234.50 kW"
    assert format_value(70000, "") == "70,000"
    assert format_value("CEM I", "") == "CEM I"

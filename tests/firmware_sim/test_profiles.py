"""Shipped profiles: they load, do not overlap, fit the image, and match the models' values."""

from __future__ import annotations

import re

import pytest

from firmware_sim.image import Table
from firmware_sim.machines import make_machine
from firmware_sim.profile import KINDS, Profile, ProfileTag, load_profile, profile_from_toml

IMAGE_SIZE = 1024  # RegisterImage default


def cells(tag: ProfileTag) -> set[tuple[Table, int, int]]:
    """The bits a tag occupies: every bit of its registers, or its one bit."""
    if tag.table.is_bits:
        return {(tag.table, tag.index, 0)}
    if tag.bit is not None:
        return {(tag.table, tag.index, tag.bit)}
    return {(tag.table, a, b) for a in range(tag.index, tag.index + tag.width) for b in range(16)}


def overlaps(profile: Profile) -> list[str]:
    """Pairs of tags that claim the same bits (bits of one register may share it)."""
    tags = profile.tags
    return [
        f"{x.name}/{y.name}"
        for i, x in enumerate(tags)
        for y in tags[i + 1 :]
        if cells(x) & cells(y)
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_profile_loads_and_is_well_formed(kind: str) -> None:
    p = load_profile(kind)
    assert p.kind == kind and p.description
    names = p.tag_names
    assert len(set(names)) == len(names)
    for tag in p.tags:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", tag.name), tag.name
        assert tag.index >= 0 and tag.index + tag.width <= IMAGE_SIZE
        assert tag.order in ("ABCD", "CDAB", "BADC", "DCBA")
        assert tag.scale != 0
        assert tag.description
        if tag.type == "string":
            assert tag.length > 0
        if tag.table.is_bits or tag.bit is not None:
            assert tag.type == "bool"
    assert overlaps(p) == []


def test_overlap_check_catches_a_clash() -> None:
    bad = profile_from_toml(
        'kind = "press"\n'
        '[[tags]]\nname = "a"\naddress = "hr:0"\ntype = "uint32"\n'
        '[[tags]]\nname = "b"\naddress = "hr:1"\ntype = "uint16"\n'
        '[[tags]]\nname = "c"\naddress = "hr:1.3"\ntype = "bool"\n'
    )
    assert overlaps(bad) == ["a/b", "a/c", "b/c"]
    ok = profile_from_toml(
        'kind = "loom"\n'
        '[[tags]]\nname = "a"\naddress = "hr:9.0"\ntype = "bool"\n'
        '[[tags]]\nname = "b"\naddress = "hr:9.1"\ntype = "bool"\n'
    )
    assert overlaps(ok) == []


@pytest.mark.parametrize("kind", KINDS)
def test_profile_exercises_the_encodings(kind: str) -> None:
    p = load_profile(kind)
    types = {t.type for t in p.tags}
    assert "float32" in types and "uint32" in types and "string" in types
    assert any(t.type == "int16" and t.scale != 1.0 for t in p.tags)
    assert any(t.table.is_bits for t in p.tags)
    assert any(t.order == "CDAB" and t.width >= 2 for t in p.tags)


def test_profiles_together_cover_every_table_and_order() -> None:
    tags = [t for k in KINDS for t in load_profile(k).tags]
    assert {t.table for t in tags} == set(Table)
    assert {t.order for t in tags if t.width >= 2 and t.type != "string"} >= {
        "ABCD",
        "CDAB",
        "DCBA",
    }
    assert any(t.bit is not None for t in tags)
    assert any(t.type == "float64" for t in tags)


@pytest.mark.parametrize("kind", KINDS)
def test_values_cover_exactly_the_profile_tags(kind: str) -> None:
    m = make_machine(kind, "m", 1)
    p = load_profile(kind)
    for t in (0.0, 600.0, 3600.0, 30000.0):
        m.advance_to(t)
        values = m.values()
        assert tuple(values) == p.tag_names
        for tag in p.tags:
            v = values[tag.name]
            if tag.type == "bool":
                assert isinstance(v, bool), tag.name
            elif tag.type == "string":
                assert isinstance(v, str) and len(v) <= tag.length, tag.name
            elif tag.type.startswith(("int", "uint")) and tag.scale == 1.0:
                assert isinstance(v, int) and not isinstance(v, bool), tag.name
            else:
                assert isinstance(v, int | float) and not isinstance(v, bool), tag.name
            if tag.type.startswith("uint"):
                assert isinstance(v, int | float) and v >= 0, tag.name

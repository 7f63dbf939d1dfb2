"""MC source configs: addresses checked against the series, problems as one line with a key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError

HEAD = """config_version = 1
[agent]
id = "edge"
[plant]
site = "s"
[[machines]]
name = "press1"
area = "a"
line = "l"
[[sources]]
name = "plc"
type = "mc"
host = "10.0.0.9"
machine = "press1"
"""


def _problems(tmp_path: Path, settings: str, tags: str) -> list[str]:
    path = tmp_path / "lineside.toml"
    path.write_text(HEAD + settings + f"\ntags = [{tags}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).splitlines()


def test_a_good_config_defaults_types_from_the_device(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    tags = '{ name = "a", address = "M5" }, { name = "b", address = "D1.2" }, '
    tags += '{ name = "c", address = "d10", type = "REAL" }, { name = "d", address = "X17" }'
    path.write_text(HEAD + 'series = "fx5"\n' + f"tags = [{tags}]\n")
    [source] = load_config(path).sources
    assert [(str(t.address), t.type) for t in source.tags_of("press1")] == [  # type: ignore[attr-defined]
        ("M5", "bool"),
        ("D1.2", "bool"),
        ("D10", "float32"),
        ("X17", "bool"),
    ]


@pytest.mark.parametrize(
    ("settings", "tag", "expected"),
    [
        (
            'series = "fx5"',
            '{ name = "a", address = "X18" }',
            "sources[0].tags[0].address: X18: X is numbered in octal on series 'fx5'",
        ),
        (
            "",
            '{ name = "a", address = "Q10" }',
            "sources[0].tags[0].address: unknown device 'Q' in 'Q10' "
            "(known: SM, SD, X, Y, M, L, F, B, D, W, R, ZR)",
        ),
        (
            "",
            '{ name = "a", address = "M3", type = "uint16" }',
            "sources[0].tags[0].address: M3: a uint16 on bit device M reads 16 points a word "
            "and must start on a multiple of 16",
        ),
        (
            "",
            '{ name = "a", address = "D3.2", type = "int16" }',
            "sources[0].tags[0].type: D3.2 is a single bit: use type bool, not int16",
        ),
        (
            'series = "a"',
            '{ name = "a", address = "D0" }',
            "sources[0].series: expected 'fx5', 'q' or 'iqr', got 'a'",
        ),
    ],
)
def test_problems_name_the_key(tmp_path: Path, settings: str, tag: str, expected: str) -> None:
    problems = _problems(tmp_path, settings, tag)
    assert any(p.endswith(expected) for p in problems), problems


def test_sources_with_equal_tags_share_their_tag_models(tmp_path: Path) -> None:
    """Issue 17: one MC source per PLC with the same tags (a tags_file, mostly) held a copy of
    every tag model each; equal tags are one tuple now."""
    tags = 'tags = [{ name = "a", address = "D10", type = "REAL" }]\n'
    second = HEAD.split("[[sources]]")[1].replace('"plc"', '"plc2"').replace("press1", "press2")
    machine = '[[machines]]\nname = "press2"\narea = "a"\nline = "l"\n'
    path = tmp_path / "lineside.toml"
    path.write_text(HEAD + 'series = "fx5"\n' + tags + machine + "[[sources]]" + second
                    + 'series = "fx5"\n' + tags)  # fmt: skip
    first, other = load_config(path).sources
    assert first.tags is other.tags  # type: ignore[attr-defined]

"""How readings are printed and sent: no float noise, integers and booleans as such."""

import math
from types import SimpleNamespace

import numpy as np

from agent.config import load_config
from agent.oneshot import awaited
from agent.starter import PlantMachine, plant_config
from agent.tags import TagTable
from agent.values import models_by_path, plain, shaper, text


def tag(type: str, scale: float = 1.0, offset: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(type=type, scale=scale, offset=offset)


def test_a_float32_prints_its_shortest_round_trip() -> None:
    assert text(806.864013671875, tag("float32")) == "806.864"
    assert plain(806.864013671875, tag("float32")) == 806.864


def test_a_scaled_integer_prints_the_decimals_of_its_scale() -> None:
    assert text(237 * 0.1, tag("int16", scale=0.1)) == "23.7"
    assert plain(237 * 0.1, tag("uint16", scale=0.1)) == 23.7
    assert text(12 * 0.25 + 0.5, tag("uint16", scale=0.25, offset=0.5)) == "3.5"


def test_integers_and_booleans_as_such() -> None:
    assert plain(6.0, tag("uint16")) == 6 and isinstance(plain(6.0, tag("uint16")), int)
    assert text(6.0, tag("uint16")) == "6"
    assert plain(1.0, tag("bool")) is True
    assert text(0.0, tag("bool")) == "false"


def test_a_float64_and_an_untyped_tag_keep_their_value() -> None:
    assert plain(23.700000000000003, tag("float64")) == 23.700000000000003
    assert text(2.5, None) == "2.5"
    assert text(3.0, None) == "3"


def test_no_value_is_a_dash_and_null() -> None:
    assert text(float("nan"), tag("float32")) == "-"
    assert plain(float("inf"), tag("uint16")) is None


def test_read_does_not_wait_for_a_text_tag(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "lineside.toml"
    path.write_text(
        plant_config([PlantMachine("press1", "press", "127.0.0.1", 5020, 1)]), encoding="utf-8"
    )
    config = load_config(path)
    tags = TagTable.from_config(config)
    models = models_by_path(config)
    die_id = next(t for t in tags if t.name == "die_id")
    wanted = awaited(tags, models, die_id.source)
    assert die_id.id not in wanted
    assert {t.id for t in tags if t.name != "die_id"} == wanted


def test_an_integer_tag_scaled_elsewhere_keeps_its_fraction() -> None:
    assert plain(2.5, tag("int16")) == 2.5  # a sink sees the type, not the scale


SHAPED = [tag("float32"), tag("real"), tag("bool"), tag("int16"), tag("UINT32"),
          tag("int16", scale=0.1), tag("int32", scale=0.25), tag("uint16", scale=0.25, offset=0.5),
          tag("int16", scale=2.0), tag("int16", offset=3.0), tag("dint", scale=1e-20)]  # fmt: skip
VALUES = [0.0, -0.0, 1.0, 6.0, 237 * 0.1, 806.864013671875, 2.5, -7.25, 12 * 0.25 + 0.5, 1e18,
          2.0**63, 1e-300, 3.4028235e38, 1e39, math.nan, math.inf, -math.inf]  # fmt: skip


def test_a_shaper_gives_what_plain_gives() -> None:
    for each in SHAPED:
        shape = shaper(each)
        assert shape is not None
        for value in VALUES:
            with np.errstate(over="ignore"):  # 1e39 has no float32: null, as plain says
                got, want = shape(value), plain(value, each)
            assert (got, type(got)) == (want, type(want)), (each, value)
    assert shaper(tag("float64")) is None and shaper(None) is None


def test_tags_shaped_alike_share_one_function() -> None:
    # A closure per tag was ~200 bytes: 4 MB at 20,000 tags with two MQTT sinks.
    assert shaper(tag("float32")) is shaper(tag("real"))
    assert shaper(tag("int16")) is shaper(tag("uint32"))
    assert shaper(tag("int16", scale=0.1)) is shaper(tag("uint16", scale=0.5, offset=0.1))
    assert shaper(tag("int16", scale=0.1)) is not shaper(tag("int16", scale=0.25))

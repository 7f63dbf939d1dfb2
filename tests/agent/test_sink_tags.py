from dataclasses import replace

from agent.runtime import sink_tags
from agent.tags import Tag


def test_the_store_splits_a_path_into_isa95_levels_once() -> None:
    tag = Tag.from_path("suzhou/stamping/line-1/press1/running", id=1)
    assert (tag.site, tag.area, tag.line, tag.machine, tag.name) == (
        "suzhou",
        "stamping",
        "line-1",
        "press1",
        "running",
    )


def test_sinks_see_this_runs_tags_and_the_stores_others() -> None:
    stored = {
        1: Tag.from_path("suzhou/stamping/line-1/press1/running", id=1),
        2: Tag.from_path("suzhou/stamping/line-1/press1/die_temp", id=2, unit="°C"),
        3: Tag.from_path("suzhou/stamping/line-1/press1/retired_tag", id=3),
    }
    configured = [replace(stored[1], type="bool"), replace(stored[2], type="int16")]
    tags = sink_tags(stored, configured)
    assert tags[1].type == "bool"
    assert tags[2].type == "int16"
    assert tags[2].unit == "°C"
    assert tags[3].type == "float64"  # no longer configured: its values are still float64

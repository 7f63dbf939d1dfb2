from agent.runtime import sink_tags
from agent.store import TagInfo


def test_paths_split_into_isa95_levels_with_declared_types() -> None:
    stored = {
        1: TagInfo(path="suzhou/stamping/line-1/press1/running", unit=""),
        2: TagInfo(path="suzhou/stamping/line-1/press1/die_temp", unit="°C"),
        3: TagInfo(path="suzhou/stamping/line-1/press1/retired_tag", unit=""),
    }
    types = {
        "suzhou/stamping/line-1/press1/running": "bool",
        "suzhou/stamping/line-1/press1/die_temp": "int16",
    }
    tags = sink_tags(stored, types)  # type: ignore[arg-type]
    assert (tags[1].site, tags[1].area, tags[1].line, tags[1].machine, tags[1].name) == (
        "suzhou",
        "stamping",
        "line-1",
        "press1",
        "running",
    )
    assert tags[1].type == "bool"
    assert tags[2].type == "int16"
    assert tags[2].unit == "°C"
    assert tags[3].type == "float64"  # no longer configured: its values are still float64

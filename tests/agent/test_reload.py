"""What a config reload changes (agent/reload.py): the difference of two real configs, the
config the agent runs with afterwards, and the tag table that keeps every running id."""

from pathlib import Path

from agent.config import Config, load_config
from agent.reload import audit_data, difference, effective, merged_tags, summary
from agent.starter import PlantMachine, plant_config
from agent.tags import TagTable

PRESSES = [
    PlantMachine("press1", "press", "127.0.0.1", 5020, 1),
    PlantMachine("press2", "press", "127.0.0.1", 5021, 1),
]
TONNAGE = '  { name = "tonnage", address = "hr:12", type = "float32", unit = "t", '


def config(tmp_path: Path, text: str, name: str) -> Config:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def without_first_tonnage(text: str) -> str:
    start = text.index(TONNAGE)
    return text[:start] + text[text.index("\n", start) + 1 :]


def test_a_new_tag_and_sink_are_applied_and_fixed_sections_keep_their_value(
    tmp_path: Path,
) -> None:
    text = plant_config(PRESSES, poll_interval="100ms")
    old = config(tmp_path, without_first_tonnage(text), "old")
    sink = '\n[[sinks]]\nname = "uns"\ntype = "mqtt"\nhost = "127.0.0.1"\n'
    edited = text.replace('id = "demo-edge-1"', 'id = "edge-9"').replace(
        "[[sources]]", '[store]\nmax_size = "10MB"\n\n[[sources]]', 1
    )
    new = config(tmp_path, edited + sink, "new")
    change = difference(old, new)
    assert change.sources_changed == ("press1-plc",)
    assert change.sources_added == change.sources_removed == ()
    assert change.sinks_added == ("uns",)
    assert change.needs_restart == ("agent.id", "store.max_size")
    running = effective(old, new, change)
    assert running.agent == old.agent and running.store == old.store
    assert running.sources == new.sources and running.sinks == new.sinks
    assert running.file == old.file

    tags, added = merged_tags(TagTable.from_config(old), running)
    assert added == 1
    before = TagTable.from_config(old)
    # Every running tag keeps its id; press2's tags were after press1's and still are.
    assert [(t.id, t.path) for t in tags][: len(before)] == [(t.id, t.path) for t in before]
    assert tags.tags[-1].path == "demo/stamping/body-line-1/press1/tonnage"
    line = summary(change, added)
    assert line == "reload: +0 sources, -0, ~1 changed; +1 sink, -0, ~0 changed; 1 tag added"
    data = audit_data(change, added, line)
    assert data["sinks"]["added"] == ["uns"] and data["needs_restart"] == [
        "agent.id",
        "store.max_size",
    ]


def test_a_removed_source_and_machine_need_a_restart_only_for_the_machine(tmp_path: Path) -> None:
    old = config(tmp_path, plant_config(PRESSES, poll_interval="100ms"), "old")
    new = config(tmp_path, plant_config(PRESSES[:1], poll_interval="100ms"), "new")
    change = difference(old, new)
    assert change.sources_removed == ("press2-plc",)
    assert change.needs_restart == ("machines.press2",)
    running = effective(old, new, change)
    assert [m.name for m in running.machines] == ["press1", "press2"]  # kept until a restart
    tags, added = merged_tags(TagTable.from_config(old), running)
    assert added == 0 and len(tags) == len(TagTable.from_config(old))
    # press2's tags keep their ids, polled by nothing until a restart.
    assert {t.source for t in tags if t.machine == "press2"} == {""}
    assert {t.source for t in tags if t.machine == "press1"} == {"press1-plc"}
    line = summary(change, added)
    assert line == "reload: +0 sources, -1, ~0 changed; sinks unchanged; 0 tags added"


def test_a_machine_added_with_its_source_runs_without_kpis_until_a_restart(
    tmp_path: Path,
) -> None:
    old = config(tmp_path, plant_config(PRESSES[:1], poll_interval="100ms"), "old")
    new = config(tmp_path, plant_config(PRESSES, poll_interval="100ms"), "new")
    change = difference(old, new)
    assert change.sources_added == ("press2-plc",) and change.machines_added == ("press2",)
    assert change.needs_restart == ("machines.press2.kpi",)
    running = effective(old, new, change)
    assert running.machines_by_name["press2"].kpi is None
    assert running.machines_by_name["press1"] == old.machines_by_name["press1"]
    assert "1 machine added" in summary(change, 14)


def test_the_same_file_changes_nothing(tmp_path: Path) -> None:
    text = plant_config(PRESSES, poll_interval="100ms")
    change = difference(config(tmp_path, text, "a"), config(tmp_path, text, "b"))
    assert change.empty and change.needs_restart == ()

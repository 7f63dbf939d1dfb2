"""One tag, one id: the store's id is the id a reading carries from the source to the store."""

import tracemalloc
from pathlib import Path

from agent.config import load_config
from agent.model import Quality, ReadingBatch
from agent.runtime import Agent
from agent.starter import starter_config
from agent.store import Store
from agent.tags import Tag, TagTable
from agent.web.state import StateBuilder


def test_a_reading_carries_the_store_id_from_source_to_store(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config("press"), encoding="utf-8")
    config = load_config(path)
    with Store(config.agent.data_dir) as store:  # an earlier config's tag holds the first id
        [old] = store.register_tags([Tag.from_path("old/a/l/m/gone")]).values()
    agent = Agent(config)
    try:
        ids = agent.store.tag_ids()
        assert all(ids[t.path] == t.id for t in agent.tags)
        assert old not in {t.id for t in agent.tags}
        assert agent.tags.size == max(ids.values()) + 1
        first = agent.tags.tags[0]
        batch = ReadingBatch.from_columns(first.source, [first.id], [1.5], Quality.GOOD, 10)
        agent.emit_readings(batch)
        assert agent.writer.flush_blocking(10)
        [stored] = agent.store.read_telemetry(0, 10)
        assert stored.batch.tag_ids.tolist() == [first.id]
        assert agent.latest_values[first.id] == 1.5
        # the store makes a Tag of its own only for the tag this config no longer has
        assert agent.store.tags()[old].machine == "m"
    finally:
        agent.writer.close()
        agent.store.close()


def test_the_table_keeps_no_key_object_per_tag() -> None:
    """Issue 17: the (machine, name) lookup held a tuple per tag (1 MB at 20,000 tags). The table
    of 10,000 tags now costs its tuple and two dicts (~0.7 MB); with a tuple key per tag, 1.2."""
    tags = [
        Tag(id=m * 100 + i, path=f"s/a/l/m{m}/t{i}", machine=f"m{m}", name=f"t{i}")
        for m in range(100)
        for i in range(100)
    ]
    tracemalloc.start()
    try:
        table = TagTable(tags)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.id_of("m42", "t7") == 4207
    assert held < 900_000


def test_the_status_page_keys_its_formats_by_the_tables_paths(tmp_path: Path) -> None:
    """Issue 17: the page's formats held a second string of every tag's path (1.4 MB at
    20,000 tags); they are keyed by the table's own strings now."""
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config("press"), encoding="utf-8")
    agent = Agent(load_config(path))
    try:
        models = StateBuilder(agent)._models
        assert [id(p) for p in models] == [id(t.path) for t in agent.tags]
        assert all(models[t.path] is not None for t in agent.tags)
    finally:
        agent.writer.close()
        agent.store.close()


def test_an_agent_without_kpis_keeps_no_path_to_id_table(tmp_path: Path) -> None:
    """Issue 17: the path -> id table the KPI engine's restart needs was kept without one too."""
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config("press"), encoding="utf-8")
    with_kpi = load_config(path)
    assert any(m.kpi is not None for m in with_kpi.machines)
    without = with_kpi.model_copy(
        update={"machines": tuple(m.model_copy(update={"kpi": None}) for m in with_kpi.machines)}
    )
    for config, kept in ((with_kpi, True), (without, False)):
        agent = Agent(config)
        try:
            assert bool(agent._kpi_ids) is kept
        finally:
            agent.writer.close()
            agent.store.close()


def test_the_snapshot_names_the_machines_of_a_reloaded_table(tmp_path: Path) -> None:
    """The machines are listed once per tag table, not per status tick: a reload that adds a
    machine's tags lists it from then on."""
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config("press"), encoding="utf-8")
    agent = Agent(load_config(path))
    try:
        before = agent.snapshot().machines
        assert before == tuple(dict.fromkeys(t.machine for t in agent.tags))
        oven = Tag.from_path("plant/area/line/oven/temperature", source="oven-plc")
        grown = TagTable.registered([*agent.tags, oven], agent.store.register_tags)
        agent._grow_tags(grown)
        assert agent.snapshot().machines == (*before, "oven")
    finally:
        agent.writer.close()
        agent.store.close()

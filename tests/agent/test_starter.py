"""Starter configs: each profile validates and matches the simulator's profiles and plants."""

import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from agent.config import load_config
from agent.kpi.calendar import planned_intervals
from agent.starter import FIRST_PORT, PROFILES, PlantMachine, plant_config, starter_config
from connectors.modbus.config import ModbusTag, ModbusTcpSourceConfig
from firmware_sim.profile import load_profile

KIND = {"press": "press", "cement": "mill", "loom": "loom"}


def test_profiles() -> None:
    assert PROFILES == ("press", "cement", "loom")
    with pytest.raises(KeyError, match="unknown profile 'lathe'"):
        starter_config("lathe")


@pytest.mark.parametrize("profile", PROFILES)
def test_starter_validates_and_carries_the_profile(tmp_path: Path, profile: str) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(starter_config(profile), encoding="utf-8")
    config = load_config(path)
    machine_profile = load_profile(KIND[profile])
    assert config.machines, "a starter declares its machines"
    for n, machine in enumerate(config.machines):
        assert machine.kind == KIND[profile]
        (source,) = config.sources_of(machine.name)
        assert isinstance(source, ModbusTcpSourceConfig)
        assert (source.host, source.port, source.unit_ids()) == ("127.0.0.1", FIRST_PORT + n, (1,))
        tags = [t for t in config.tags_of(machine.name) if isinstance(t, ModbusTag)]
        assert len(tags) == len(machine_profile.tags)
        for tag, truth in zip(tags, machine_profile.tags, strict=True):
            assert tag.name == truth.name
            assert str(tag.address) == truth.address
            assert (tag.type, tag.order, tag.scale, tag.offset) == (
                truth.type,
                truth.order,
                truth.scale,
                truth.offset,
            )
            assert (tag.unit, tag.description) == (truth.unit, truth.description)
            assert (tag.length or 0) == truth.length


@pytest.mark.parametrize("profile", PROFILES)
def test_starter_matches_the_sim_plant(profile: str) -> None:
    """`lineside sim --plant <profile>` serves the same machines on the same ports."""
    plant_file = resources.files("firmware_sim").joinpath("plants", f"{profile}.toml")
    plant = tomllib.loads(plant_file.read_text("utf-8"))
    starter = tomllib.loads(starter_config(profile))
    assert [(m["name"], m["kind"]) for m in plant["machines"]] == [
        (m["name"], m["kind"]) for m in starter["machines"]
    ]
    assert [m["port"] for m in plant["machines"]] == [s["port"] for s in starter["sources"]]


def test_starter_is_annotated() -> None:
    text = starter_config("press")
    assert text.startswith("# lineside starter config: a press line, 2 presses.")
    assert "lineside sim --plant press" in text
    assert sum(line.lstrip().startswith("#") for line in text.splitlines()) >= 10


def test_a_simulated_plant_is_planned_round_the_clock(tmp_path: Path) -> None:
    """The demo and the tests read OEE at any hour: a simulated plant's calendar plans every
    instant of a week (the starter's two shifts leave nights and Sundays unplanned)."""
    machines = [PlantMachine("press1", "press", "127.0.0.1", FIRST_PORT)]
    week_start = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp()) * 10**9  # a Monday
    week_end = week_start + 7 * 86_400 * 10**9
    planned = {}
    for name, text in (("plant", plant_config(machines)), ("starter", starter_config("press"))):
        path = tmp_path / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        planned[name] = planned_intervals(load_config(path).calendar, week_start, week_end)
    assert planned["plant"] == [(week_start, week_end)]
    assert len(planned["starter"]) > 1

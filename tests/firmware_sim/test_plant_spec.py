from pathlib import Path

import pytest

from firmware_sim.plant import PLANTS, PlantError, load_plant


@pytest.mark.parametrize("name", PLANTS)
def test_shipped_plants_load(name: str) -> None:
    spec = load_plant(name)
    assert spec.name == name
    ids = spec.rtu_unit_ids()
    assert sorted(ids.values()) == list(range(1, len(spec.machines) + 1))


def test_demo_plant_has_every_kind() -> None:
    kinds = [m.kind for m in load_plant("demo").machines]
    assert kinds == ["press", "press", "mill", "loom", "loom"]


def test_ephemeral_ports() -> None:
    spec = load_plant("demo").with_ephemeral_ports()
    assert spec.ephemeral
    assert [m.port for m in spec.machines] == [m.port for m in load_plant("demo").machines]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'x'\n[[machines]]\nname='a'\nkind='lathe'\n", "machines.0.kind: Input should be"),
        (
            "name = 'x'\n[[machines]]\nname='a'\nkind='press'\ncolour=1\n",
            "machines.0.colour: Extra",
        ),
        (
            "name='x'\n[[machines]]\nname='a'\nkind='press'\n[[machines]]\nname='a'\nkind='mill'\n",
            "machine name 'a' is used twice",
        ),
        ("name = 'x'\nmachines = [", "not valid TOML"),
        ("name = 'x'\nmachines = []\n", "machines: Tuple should have at least 1 item"),
    ],
)
def test_bad_plant_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "plant.toml"
    path.write_text(text)
    with pytest.raises(PlantError) as info:
        load_plant(str(path))
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_plant_file_names_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(PlantError, match=r"no such plant file.*demo, press, cement, loom"):
        load_plant(str(tmp_path / "nope.toml"))

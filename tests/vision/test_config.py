"""`[[inspections]]` and `write_allow` in a config: good entries load, bad ones give one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.starter import PlantMachine, plant_config
from vision.config import InspectionConfig, allowed_write

MACHINES = [PlantMachine("press1", "press", "127.0.0.1", 5020)]


def config_with(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "lineside.toml"
    # top-level keys go before the first table
    allow, _, rest = extra.partition("\n[[inspections]]")
    text = allow + "\n" + plant_config(MACHINES) + ("\n[[inspections]]" + rest if rest else "")
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
write_allow = ["press1:co:5", "press1:40011"]

[[inspections]]
name = "panel"
machine = "press1"
source = { type = "folder", path = "frames", watch = true }
trigger = { type = "tag", tag = "part_present", delay = "50ms" }
model = "models/surface.onnx"
roi = [10, 20, 300, 200]
save = { dir = "rejects", max_size = "200MB", retention = "2d", good_sample = 0.05 }
write_back = { address = "co:5" }
"""


def test_a_full_inspection_entry_loads(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, GOOD))
    (spec,) = config.inspections
    assert isinstance(spec, InspectionConfig)
    assert config.write_allow == ("press1:co:5", "press1:hr:10")
    assert spec.source.type == "folder" and spec.source.path == tmp_path / "frames"
    assert spec.trigger.type == "tag" and spec.trigger.delay == 0.05
    assert spec.model == tmp_path / "models/surface.onnx"
    assert (spec.threads, spec.adapter, spec.queue, spec.margin) == (1, "auto", 2, 16)
    assert spec.roi == (10, 20, 300, 200)
    assert spec.save is not None and spec.save.max_size == 200 * 10**6
    assert spec.write_back is not None and str(spec.write_back.address) == "co:5"
    assert (spec.tile, spec.tile_overlap) == (False, 0.2)


def test_tiling_keys(tmp_path: Path) -> None:
    text = GOOD.replace('model = "models/surface.onnx"', 'model = "m.onnx"\ntile = true')
    (spec,) = load_config(config_with(tmp_path, text + "tile_overlap = 0.25\n")).inspections
    assert isinstance(spec, InspectionConfig)
    assert (spec.tile, spec.tile_overlap) == (True, 0.25)
    with pytest.raises(ConfigError, match="tile_overlap"):
        load_config(config_with(tmp_path, text + "tile_overlap = 1.0\n"))


def test_no_inspections_is_the_default(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, ""))
    assert config.inspections == () and config.write_allow == ()


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (
            ('write_allow = ["press1:co:5", "press1:40011"]', 'write_allow = ["press1:40011"]'),
            "inspections[0].write_back.address: press1:co:5 is not on the write_allow list",
        ),
        (
            ('tag = "part_present"', 'tag = "part_here"'),
            "inspections[0].trigger.tag: machine 'press1' has no tag 'part_here'",
        ),
        (
            ('machine = "press1"', 'machine = "press9"'),
            "inspections[0].machine: unknown machine 'press9'",
        ),
        (
            ('address = "co:5"', 'address = "di:0"'),
            "inspections[0].write_back.address: a verdict is written to a coil (co:N) or a "
            "holding register (hr:N), not di:0",
        ),
        (
            ('"press1:co:5", ', '"press1", '),
            'write_allow[0]: expected "machine:address"',
        ),
        (
            ("roi = [10, 20, 300, 200]", "roi = [10, 20, 0, 200]"),
            "inspections[0].roi: expected [x, y, width, height]",
        ),
        (
            ('type = "tag", tag = "part_present", delay = "50ms"', 'type = "fps", fps = 0'),
            "inspections[0].trigger.fps: must be more than 0",
        ),
        (
            (
                '{ type = "folder", path = "frames", watch = true }',
                '{ type = "camera", device = 0 }',
            ),
            "",  # a camera with a tag trigger is fine
        ),
    ],
)
def test_bad_entries_are_one_line_each(tmp_path: Path, change: tuple[str, str], line: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    if not line:
        load_config(config_with(tmp_path, text))
        return
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, text))
    assert any(line in str(p) for p in caught.value.problems), caught.value.problems


def test_a_live_source_needs_a_trigger(tmp_path: Path) -> None:
    text = GOOD.replace('trigger = { type = "tag", tag = "part_present", delay = "50ms" }\n', "")
    text = text.replace(
        '{ type = "folder", path = "frames", watch = true }',
        '{ type = "url", url = "rtsp://cam/1" }',
    )
    with pytest.raises(ConfigError, match=r"inspections\[0\].trigger: a url source is live"):
        load_config(config_with(tmp_path, text))


def test_allowed_write_spellings() -> None:
    assert allowed_write("press1:hr:7") == "press1:hr:7"
    assert allowed_write("press1:00006") == "press1:co:5"
    with pytest.raises(ValueError, match="coil"):
        allowed_write("press1:ir:3")

"""Every shipped example loads, says what it claims, and loading imports no protocol library."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from connectors.modbus.config import ModbusTag

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.toml"))
HEAVY = {
    "pymodbus",
    "asyncua",
    "paho",
    "httpx",
    "onnxruntime",
    "cv2",
    "serial",
    "snap7",
    "pymcprotocol",
}


def test_the_examples_are_there() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"press-line.toml", "cement.toml", "opcua-loom.toml", "mqtt-sinks.toml"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_loads(example: Path) -> None:
    config = load_config(example)
    assert config.machines and config.sources
    for machine in config.machines:
        assert config.tags_of(machine.name), f"{machine.name} has no tags"


def test_press_line_mixes_inline_csv_and_both_address_forms() -> None:
    config = load_config(EXAMPLES_DIR / "press-line.toml")
    press1 = {t.name: t for t in config.tags_of("press1") if isinstance(t, ModbusTag)}
    press2 = {t.name: t for t in config.tags_of("press2") if isinstance(t, ModbusTag)}
    assert str(press1["part_count"].address) == "hr:4"  # written 40005
    assert str(press1["tonnage"].address) == "hr:12"  # written "400013"
    assert str(press2["part_count"].address) == "hr:4"  # from the CSV
    assert len(press2) == 8
    assert config.calendar is not None
    assert [s.name for s in config.calendar.shifts] == ["day", "night"]


def test_loading_every_example_imports_no_protocol_library() -> None:
    probe = (
        "import sys, json\nfrom pathlib import Path\nfrom agent.config import load_config\n"
        f"for p in {[str(p) for p in EXAMPLES]!r}:\n    load_config(Path(p))\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "connectors" in loaded  # the probe did load the config models
    assert not loaded & HEAVY, loaded & HEAVY

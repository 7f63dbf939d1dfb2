"""A feature whose extra is not installed says which one to install, in one line, no traceback.

The fast tests hide a library from a real interpreter the way a missing install does (a
`sys.modules` entry of None makes its import raise ModuleNotFoundError); test_core_install.py
checks the same in a venv that has only the core installed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from agent import registry
from agent.extras import EXTRAS, MissingExtra, needs

ROOT = Path(__file__).resolve().parents[2]

OPCUA_CONFIG = """\
config_version = 1

[agent]
id = "edge-1"
data_dir = "data"

[plant]
site = "s"

[[machines]]
name = "loom2"
area = "weaving"
line = "shed-1"

[[sources]]
name = "loom2-ua"
type = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
machine = "loom2"
mode = "poll"
interval = "2s"
tags = [{ name = "state", node_id = "ns=2;s=loom2.state" }]
"""

OPCUA_LINE = "lineside: OPC UA needs the opcua extra: pip install 'lineside[opcua]'"


def test_a_missing_library_of_an_extra_becomes_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingExtra) as caught, needs("Vision", "vision"):
        import cv2  # noqa: F401
    assert str(caught.value) == "Vision needs the vision extra: pip install 'lineside[vision]'"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_only_the_extras_own_libraries_are_translated() -> None:
    with pytest.raises(ModuleNotFoundError), needs("OPC UA", "opcua"):
        import no_such_library_anywhere  # type: ignore[import-not-found]  # noqa: F401


def test_the_message_names_every_extra_needed() -> None:
    assert str(MissingExtra("OPC UA", ("opcua",))) == (
        "OPC UA needs the opcua extra: pip install 'lineside[opcua]'"
    )
    assert str(MissingExtra("The demo", ("sim", "vision"))) == (
        "The demo needs the sim and vision extras: pip install 'lineside[sim,vision]'"
    )


def test_the_registry_says_which_extra_an_opcua_source_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncua", None)
    for name in [m for m in sys.modules if m.startswith("connectors.opcua.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtra) as caught:
        registry.runtime_class("opcua")
    assert str(caught.value) == OPCUA_LINE.removeprefix("lineside: ")
    # The core's connectors need no extra.
    assert registry.runtime_class("modbus_tcp").__name__ == "ModbusTcpSource"


def test_each_extra_lists_the_libraries_pyproject_installs_with_it() -> None:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    distributions = packages_distributions()
    for extra, modules in EXTRAS.items():
        declared = {r.split(">")[0].split("<")[0].split("=")[0].strip() for r in optional[extra]}
        providing = {d.lower() for m in modules for d in distributions[m]}
        assert providing == {d.lower() for d in declared}, extra
    assert optional["all"] == [f"lineside[{','.join(EXTRAS)}]"]
    assert "lineside[all]" in optional["dev"]


def _lineside(hidden: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`lineside ARGS` in a fresh interpreter where the `hidden` libraries cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {hidden!r}: sys.modules[name] = None\n"
        f"sys.argv = ['lineside', *{list(args)!r}]\n"
        "from agent.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["read", "run"])
def test_opcua_commands_without_the_extra_exit_2_with_one_line(
    tmp_path: Path, command: str
) -> None:
    (tmp_path / "lineside.toml").write_text(OPCUA_CONFIG)
    done = _lineside(["asyncua"], command, "-c", "lineside.toml", cwd=tmp_path)
    assert (done.returncode, done.stderr, done.stdout) == (2, OPCUA_LINE + "\n", "")


def test_inspect_without_the_vision_extra_exits_2_with_one_line(tmp_path: Path) -> None:
    done = _lineside(["cv2"], "inspect", "x.jpg", "--model", "m.onnx", cwd=tmp_path)
    line = "lineside: Vision needs the vision extra: pip install 'lineside[vision]'\n"
    assert (done.returncode, done.stderr) == (2, line)


def test_sim_and_demo_without_their_extras_exit_2_with_one_line(tmp_path: Path) -> None:
    done = _lineside(["asyncua"], "sim", "--duration", "0", cwd=tmp_path)
    line = "lineside: The simulator needs the sim extra: pip install 'lineside[sim]'\n"
    assert (done.returncode, done.stderr) == (2, line)
    done = _lineside(["onnxruntime"], "demo", "--duration", "0", cwd=tmp_path)
    line = "lineside: The demo needs the sim and vision extras: "
    line += "pip install 'lineside[sim,vision]'\n"
    assert (done.returncode, done.stderr) == (2, line)
    assert not (tmp_path / "demo").exists()  # said before anything started


def test_run_with_an_inspection_without_the_vision_extra_stops_at_start_up(tmp_path: Path) -> None:
    from agent.starter import starter_config

    model = ROOT / "vision" / "models" / "lineside-surface.onnx"
    (tmp_path / "frames").mkdir()
    inspection = f"""
[[inspections]]
name = "surface"
machine = "press1"
source = {{ type = "folder", path = "frames" }}
model = "{model}"
"""
    (tmp_path / "lineside.toml").write_text(starter_config("press") + inspection)
    done = _lineside(["cv2"], "run", "-c", "lineside.toml", "--duration", "1", cwd=tmp_path)
    line = "lineside: Vision needs the vision extra: pip install 'lineside[vision]'\n"
    assert (done.returncode, done.stderr) == (2, line)

"""`pip install lineside` (the core alone) in a fresh venv: Modbus configs work, and a command
that needs an extra says which one to install, in one line, exit 2, no traceback.

It builds the wheel and installs the core's dependencies (from pip's cache when it has them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.test_extras import OPCUA_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def _run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a venv with only `pip install lineside-*.whl` in it."""
    where = tmp_path_factory.mktemp("core")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where), str(ROOT)]
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = where.glob("lineside-*.whl")
    venv = where / "venv"
    # No pip of its own and no byte-compiling of what it installs: our pip installs into it
    # (`--python`), and Python compiles the modules a test imports. 14.6 s down to 5.9.
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-compile",
            str(wheel),
        ]
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv / "bin"


@pytest.mark.slow
def test_the_core_install_has_no_library_of_an_extra(core: Path) -> None:
    for module in ("asyncua", "onnxruntime", "cv2", "onnx", "pytest"):
        found = _run([str(core / "python"), "-c", f"import {module}"])
        assert found.returncode == 1 and "ModuleNotFoundError" in found.stderr, module


def test_the_core_checks_a_modbus_config(core: Path) -> None:
    done = _run([str(core / "lineside"), "validate", str(ROOT / "examples" / "press-line.toml")])
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", ["read", "run"])
def test_opcua_on_the_core_says_to_install_the_opcua_extra(
    core: Path, tmp_path: Path, command: str
) -> None:
    (tmp_path / "lineside.toml").write_text(OPCUA_CONFIG)
    done = _run([str(core / "lineside"), command, "-c", "lineside.toml"], cwd=tmp_path)
    line = "lineside: OPC UA needs the opcua extra: pip install 'lineside[opcua]'\n"
    assert (done.returncode, done.stderr, done.stdout) == (2, line, "")


def test_inspect_and_sim_on_the_core_say_which_extra(core: Path, tmp_path: Path) -> None:
    done = _run([str(core / "lineside"), "inspect", "a.jpg", "-m", "m.onnx"], cwd=tmp_path)
    line = "lineside: Vision needs the vision extra: pip install 'lineside[vision]'\n"
    assert (done.returncode, done.stderr) == (2, line)
    done = _run([str(core / "lineside"), "sim", "--duration", "0"], cwd=tmp_path)
    line = "lineside: The simulator needs the sim extra: pip install 'lineside[sim]'\n"
    assert (done.returncode, done.stderr) == (2, line)


def test_an_inspection_on_the_core_says_to_install_the_vision_extra(
    core: Path, tmp_path: Path
) -> None:
    from agent.starter import starter_config

    (tmp_path / "frames").mkdir()
    model = ROOT / "vision" / "models" / "lineside-surface.onnx"
    inspection = (
        '\n[[inspections]]\nname = "surface"\nmachine = "press1"\n'
        f'source = {{ type = "folder", path = "frames" }}\nmodel = "{model}"\n'
    )
    (tmp_path / "lineside.toml").write_text(starter_config("press") + inspection)
    done = _run([str(core / "lineside"), "run", "-c", "lineside.toml"], cwd=tmp_path)
    line = "lineside: Vision needs the vision extra: pip install 'lineside[vision]'\n"
    assert (done.returncode, done.stderr) == (2, line)

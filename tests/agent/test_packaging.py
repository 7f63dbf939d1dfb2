"""The wheel carries everything the agent reads at run time, and builds without a warning."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

from typer.testing import CliRunner

from agent.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_builds_without_warnings_and_holds_the_data_files(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    output = built.stdout + built.stderr
    for warning in ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "is absent from"):
        assert warning not in output
    (wheel,) = tmp_path.glob("lineside-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "agent/web/static/index.html",
        "agent/web/static/app.js",
        "agent/py.typed",
        "vision/models/lineside-surface.onnx",
        "firmware_sim/profiles/press.toml",
        "firmware_sim/plants/demo.toml",
    }
    assert expected <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_version_comes_from_the_installed_metadata() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lineside {version('lineside')}"

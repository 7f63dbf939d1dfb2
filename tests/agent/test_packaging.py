"""The sdist and the wheel carry everything the agent reads at run time, and build without a
warning, the way a release builds them (`python -m build`: the sdist, then the wheel from it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.app import app

ROOT = Path(__file__).resolve().parents[2]

DATA_FILES = {
    "agent/web/static/index.html",
    "agent/web/static/app.js",
    "agent/py.typed",
    "vision/models/lineside-surface.onnx",
    "vision/models/MODEL_CARD.md",
    "firmware_sim/profiles/press.toml",
    "firmware_sim/plants/demo.toml",
}


@pytest.mark.slow
def test_the_sdist_and_the_wheel_build_without_warnings_and_hold_the_data_files(
    tmp_path: Path,
) -> None:
    # A clean copy: a checkout's lineside.egg-info/SOURCES.txt from an earlier build would
    # put files in the sdist that a fresh clone's build leaves out.
    source = tmp_path / "source"
    junk = shutil.ignore_patterns(".*", "*.egg-info", "build", "dist", "__pycache__", "demo")
    shutil.copytree(ROOT, source, ignore=junk)
    # Byte-compiling off (PYTHONDONTWRITEBYTECODE) makes setuptools warn that it skips it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, output[-4000:]
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert not warnings, warnings
    for noise in ("BuildBackendWarning", "Deprecat", "is absent from", "not found"):
        assert noise not in output

    (sdist,) = tmp_path.glob("lineside-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    source_data = {n.replace("firmware_sim/", "firmware-sim/") for n in DATA_FILES}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml"} | source_data <= names

    (wheel,) = tmp_path.glob("lineside-*.whl")  # built from the sdist: it lacks nothing
    names = set(zipfile.ZipFile(wheel).namelist())
    assert names >= DATA_FILES
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_version_comes_from_the_installed_metadata() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lineside {version('lineside')}"

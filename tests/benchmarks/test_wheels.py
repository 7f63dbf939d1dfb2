"""benchmarks/wheels.py: the platform matrix and the offline bundle.

The fast tests check the requirement lists it builds for a target. The soak tests reach the
package index: every dependency of the core and of [vision] has a wheel for aarch64 and x86-64 on
Python 3.11-3.13, and a bundle installs into a fresh venv with the network off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from benchmarks.wheels import PYTHONS, Target, matrix, requirements

ROOT = Path(__file__).resolve().parents[2]


def _names(lines: list[str]) -> set[str]:
    return {line.split(">")[0].split("<")[0].split("=")[0].split("[")[0] for line in lines}


def test_the_core_carries_no_library_of_an_extra() -> None:
    core = _names(requirements((), Target("aarch64", "3.11")))
    assert {"pymodbus", "numpy", "paho-mqtt", "pydantic", "uvloop"} <= core
    assert not {"asyncua", "onnxruntime", "opencv-python-headless", "onnx", "pytest"} & core


def test_extras_expand_through_all_and_markers_hold_for_the_target_not_this_machine() -> None:
    everything = _names(requirements(("all",), Target("x86_64", "3.13")))
    assert {"asyncua", "onnxruntime", "opencv-python-headless", "onnx", "uvloop"} <= everything
    assert "pytest" not in everything
    # uvloop ships no 32-bit ARM wheel and pyproject leaves it out there.
    assert "uvloop" not in _names(requirements((), Target("armv7l", "3.11")))


def test_a_target_accepts_every_older_manylinux() -> None:
    tags = Target("aarch64", "3.12").platforms()
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and Target("aarch64", "3.12").abi == "cp312"


@pytest.mark.soak
def test_core_and_vision_have_wheels_for_aarch64_and_x86_64_on_3_11_to_3_13() -> None:
    outcomes = [
        o for o in matrix(("x86_64", "aarch64"), PYTHONS) if o.variant in ("core", "vision")
    ]
    assert len(outcomes) == 12
    assert [(o.target, o.variant, o.why) for o in outcomes if not o.ok] == []


@pytest.mark.soak
def test_a_bundle_installs_into_a_fresh_venv_with_the_network_off(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to take the network away")
    arch = os.uname().machine
    command = ["python", "-m", "benchmarks.wheels", "bundle", "--arch", arch, "--python", "3.11"]
    made = subprocess.run(
        [*command, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=os.environ | {"PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"},
    )
    assert made.returncode == 0, made.stderr[-2000:]
    tarball = Path(made.stdout.strip())
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (folder,) = (tmp_path / "unpacked").iterdir()
    # Only the bundle's wheels: no pip config, no find-links or index of this machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PYTHON": "/usr/bin/python3.11"}
    venv = tmp_path / "venv"
    example = ROOT / "examples" / "press-line.toml"
    script = f"sh {folder / 'install.sh'} {venv} && {venv / 'bin' / 'lineside'} validate {example}"
    # A new network namespace has only a loopback, down: no route anywhere.
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "installed: lineside 0.1.0" in done.stdout

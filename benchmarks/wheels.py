"""The wheels lineside needs on a target platform: the platform matrix and the offline bundle.

    python -m benchmarks.wheels matrix [--out FILE]      (make wheels-matrix)
    python -m benchmarks.wheels bundle --arch aarch64 --python 3.11 --extras vision --out DIR
                                                         (make bundle)

`matrix` asks pip, for each architecture and Python version, for a binary wheel of every
dependency of the core, of `[vision]` and of `[all]` (`pip download --only-binary=:all:
--platform ...`): a row that passes installs on such a board without a compiler. `bundle`
downloads those wheels for one target, adds lineside's own wheel and an install script, and
packs one tarball that installs with `pip --no-index` on a plant network with no internet.

pip evaluates the environment markers of dependencies for the Python running it, not for the
target (pip issues 6117, 11010). So the markers of lineside's own requirements are evaluated here
for the target, and each downloaded wheel's requirements are checked the same way afterwards: a
dependency the target needs that pip skipped is downloaded in a second round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ARCHES = ("x86_64", "aarch64", "armv7l")  # armv7l: 32-bit Raspberry Pi OS, for the record
PYTHONS = ("3.11", "3.12", "3.13")
VARIANTS: dict[str, tuple[str, ...]] = {"core": (), "vision": ("vision",), "all": ("all",)}
GLIBC_MINOR = 28  # manylinux_2_28: Debian 10+, Ubuntu 20.04+, Raspberry Pi OS bullseye+


@dataclass(frozen=True, slots=True)
class Target:
    arch: str
    python: str  # "3.11"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platforms(self) -> list[str]:
        """Every manylinux tag a glibc-2.28 system of this architecture accepts (pip expands
        only the legacy manylinux2014 alias itself)."""
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(GLIBC_MINOR, 16, -1)]
        return [*tags, f"manylinux2014_{self.arch}"]

    def environment(self) -> dict[str, str]:
        """PEP 508 marker variables of CPython `python` on Linux on `arch`."""
        return {
            "python_version": self.python,
            "python_full_version": f"{self.python}.0",
            "platform_machine": self.arch,
            "platform_system": "Linux",
            "sys_platform": "linux",
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "extra": "",
        }


def requirements(extras: Iterable[str], target: Target) -> list[str]:
    """lineside's requirements with `extras` (self-references like `lineside[opcua]`
    expanded) whose markers hold on `target`, markers stripped."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    wanted: list[str] = list(project["dependencies"])
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in optional[extra]:
            requirement = Requirement(line)
            if canonicalize_name(requirement.name) == "lineside":
                pending.extend(requirement.extras)
            else:
                wanted.append(line)
    return sorted({_without_marker(r) for r in wanted if _holds(Requirement(r), target)})


def _holds(requirement: Requirement, target: Target) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(target.environment())


def _without_marker(line: str) -> str:
    requirement = Requirement(line)
    requirement.marker = None
    return str(requirement)


def wheel_requirements(wheel: Path) -> tuple[str, list[str]]:
    """The distribution name of a wheel and its Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
    return canonicalize_name(metadata["Name"]), metadata.get_all("Requires-Dist") or []


def skipped(folder: Path, target: Target) -> list[str]:
    """Requirements of the wheels in `folder` that hold on `target` but have no wheel there
    (pip judged their marker for the Python running it)."""
    have, needed = set(), []
    for wheel in folder.glob("*.whl"):
        name, lines = wheel_requirements(wheel)
        have.add(name)
        needed += [Requirement(line) for line in lines]
    return sorted(
        {
            _without_marker(str(r))
            for r in needed
            if canonicalize_name(r.name) not in have and _holds(r, target)
        }
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    target: Target
    variant: str
    ok: bool
    wheels: int
    why: str  # pip's reason when not ok


def download(wanted: Sequence[str], target: Target, folder: Path) -> Outcome:
    """Binary wheels of `wanted` and all their dependencies for `target` into `folder`."""
    pending = list(wanted)
    for _ in range(3):  # pip's round, then at most two for dependencies it skipped
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
        command += ["--dest", str(folder), "--implementation", "cp"]
        command += ["--python-version", target.python, "--abi", target.abi]
        for platform in target.platforms():
            command += ["--platform", platform]
        done = subprocess.run(
            [*command, *pending], capture_output=True, text=True, timeout=1800, check=False
        )
        if done.returncode != 0:
            return Outcome(target, "", False, 0, _reason(done.stderr))
        pending = skipped(folder, target)
        if not pending:
            return Outcome(target, "", True, len(list(folder.glob("*.whl"))), "")
    return Outcome(target, "", False, 0, f"still missing after three rounds: {pending}")


def _reason(stderr: str) -> str:
    """pip's one line that says which package has no wheel."""
    found = re.findall(r"No matching distribution found for (\S+)", stderr)
    if found:
        return f"no wheel for {found[-1]}"
    lines = [line for line in stderr.splitlines() if line.startswith("ERROR")]
    return lines[-1] if lines else stderr.strip()[-300:]


def matrix(arches: Sequence[str] = ARCHES, pythons: Sequence[str] = PYTHONS) -> list[Outcome]:
    outcomes = []
    for arch in arches:
        for python in pythons:
            target = Target(arch, python)
            for variant, extras in VARIANTS.items():
                with tempfile.TemporaryDirectory(prefix="lineside-wheels-") as folder:
                    got = download(requirements(extras, target), target, Path(folder))
                outcome = Outcome(target, variant, got.ok, got.wheels, got.why)
                outcomes.append(outcome)
                state = f"ok ({got.wheels} wheels)" if got.ok else f"FAILS: {got.why}"
                print(f"{arch:8} {python:5} {variant:7} {state}", flush=True)
    return outcomes


INSTALL_SCRIPT = """\
#!/bin/sh
# Installs lineside {version}{extras_note} into a new virtual environment from the wheels beside
# this script, with no network: sh install.sh [DIR] (default /opt/lineside).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest=${{1:-/opt/lineside}}
python=${{PYTHON:-python{python}}}
wanted='import sys; sys.exit(sys.version_info[:2] != ({major}, {minor}))'
if ! "$python" -c "$wanted" 2>/dev/null; then
    echo "this bundle is for Python {python} on {arch}; set PYTHON=/path/to/python{python}" >&2
    exit 2
fi
"$python" -m venv "$dest"
"$dest/bin/python" -m pip install --quiet --no-index --find-links "$here/wheels" \\
    "lineside[{extras}]=={version}"
echo "installed: $("$dest/bin/lineside" --version) in $dest; run $dest/bin/lineside --help"
"""


def bundle(arch: str, python: str, extras: Sequence[str], out: Path) -> Path:
    """One tarball: lineside's wheel, every dependency's wheel for (`arch`, `python`), and
    install.sh. Returns its path."""
    target = Target(arch, python)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    label = "-".join(["lineside", version, arch, target.abi, *(extras or ["core"])])
    with tempfile.TemporaryDirectory(prefix="lineside-bundle-") as scratch:
        top = Path(scratch) / label
        wheels = top / "wheels"
        wheels.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "-w",
                str(wheels),
                *[str(ROOT)],
            ],
            check=True,
            timeout=600,
            env=env,
        )
        got = download(requirements(extras, target), target, wheels)
        if not got.ok:
            raise SystemExit(f"bundle for {arch} Python {python}: {got.why}")
        major, minor = python.split(".")
        script = INSTALL_SCRIPT.format(
            version=version,
            extras=",".join(extras),
            extras_note=f" with [{','.join(extras)}]" if extras else "",
            python=python,
            major=major,
            minor=minor,
            arch=arch,
        )
        (top / "install.sh").write_text(script, encoding="utf-8")
        (top / "install.sh").chmod(0o755)
        out.mkdir(parents=True, exist_ok=True)
        tarball = out / f"{label}.tar.gz"
        with tarfile.open(tarball, "w:gz") as archive:
            archive.add(top, arcname=label)
    return tarball


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wheels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("matrix", help="wheels for every architecture and Python")
    check.add_argument("--arch", action="append", choices=ARCHES)
    check.add_argument("--python", action="append", choices=PYTHONS)
    check.add_argument("--out", type=Path, help="write the outcomes here as JSON")
    pack = commands.add_parser("bundle", help="one tarball that installs with no network")
    pack.add_argument("--arch", default=os.uname().machine, choices=ARCHES[:2])
    pack.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    pack.add_argument("--extras", default="", help="comma-separated, e.g. vision or all")
    pack.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        extras = [e for e in args.extras.split(",") if e]
        print(bundle(args.arch, args.python, extras, args.out))
        return 0
    outcomes = matrix(args.arch or ARCHES, args.python or PYTHONS)
    if args.out is not None:
        rows = [
            {"arch": o.target.arch, "python": o.target.python, "variant": o.variant}
            | {"ok": o.ok, "wheels": o.wheels, "why": o.why}
            for o in outcomes
        ]
        args.out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    # 32-bit ARM is reported, not required (docs/install.md says what it can run).
    required = [o for o in outcomes if o.target.arch != "armv7l" and o.variant != "all"]
    return 0 if all(o.ok for o in required) else 1


if __name__ == "__main__":
    raise SystemExit(main())

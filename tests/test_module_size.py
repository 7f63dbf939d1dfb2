"""No module of the code is over 500 lines: past that a module holds more than one concern.

Tests and generated code (the protobuf module) are left out; benchmarks are code and count.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("agent", "connectors", "vision", "firmware-sim", "benchmarks")
LIMIT = 500


def test_no_module_is_over_500_lines() -> None:
    long = {}
    for top in TOP:
        for path in (ROOT / top).rglob("*.py"):
            if "__pycache__" in path.parts or path.name.endswith("_pb2.py"):
                continue
            lines = path.read_text(encoding="utf-8").count("\n")
            if lines > LIMIT:
                long[path.relative_to(ROOT).as_posix()] = lines
    assert long == {}, "split these by what each part owns"

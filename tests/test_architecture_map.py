"""docs/architecture.md names every module of the code: a new module gets its row or its mention.

A row's first backticked path sets its folder (`agent/kpi/states.py` → `agent/kpi/`, `agent/store/`
→ itself; rows of the simulator's table sit in `firmware-sim/`); every other backticked `name.py`
or `name/` in the row is read in that folder. `__init__.py` and `__main__.py` need no mention.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("agent", "connectors", "vision", "firmware-sim")
TICKED = re.compile(r"`([\w./-]+)`")


def modules() -> set[str]:
    found = set()
    for top in TOP:
        for path in (ROOT / top).rglob("*.py"):
            if path.name not in ("__init__.py", "__main__.py") and "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def mentioned(text: str) -> set[str]:
    """Every module path the map's table rows name, resolved against their row's folder."""
    names: set[str] = set()
    section_base = ""
    for line in text.splitlines():
        if line.startswith("#"):
            section_base = "firmware-sim/" if "firmware-sim/" in line else ""
            continue
        if not line.startswith("| `"):
            continue
        first = line.split(" | ")[0]
        ticked = [t for t in TICKED.findall(first) if t.endswith((".py", "/"))]
        if not ticked:
            continue
        lead = ticked[0]
        if lead.startswith(TOP):
            base = lead if lead.endswith("/") else lead.rsplit("/", 1)[0] + "/"
        else:
            base = section_base
        for token in TICKED.findall(line):
            if not token.endswith((".py", "/")):
                continue
            path = token if token.startswith(TOP) else base + token
            names.add(path)
    return names


def test_every_module_is_in_the_architecture_map() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = mentioned(text)
    missing = sorted(m for m in modules() if m not in named)
    assert not missing, "docs/architecture.md does not name: " + ", ".join(missing)


def test_the_map_names_no_module_that_is_gone() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    gone = sorted(m for m in mentioned(text) if m.endswith(".py") and not (ROOT / m).is_file())
    assert not gone, "docs/architecture.md names modules that do not exist: " + ", ".join(gone)

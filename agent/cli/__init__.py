"""The `lineside` command line (agent/cli/app.py puts it together).

`lineside run` loads the run command only (agent/cli/root.py's `run_app`); every other
invocation, and `app`, load the whole CLI.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    """The `lineside` script (pyproject's [project.scripts]) and `python -m agent`."""
    if sys.argv[1:2] == ["run"]:
        from agent.cli.root import run_app

        run_app()()
    else:
        from agent.cli.app import main as whole

        whole()


def __getattr__(name: str) -> Any:
    if name == "app":
        from agent.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

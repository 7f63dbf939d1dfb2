"""The `lineside` command line: agent/cli/app.py puts the whole of it together (`app`).

`lineside run` loads the run command only (agent/cli/root.py's `run_app`); every other
invocation loads the whole CLI.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """The `lineside` script (pyproject's [project.scripts]) and `python -m agent`."""
    if sys.argv[1:2] == ["run"]:
        from agent.cli.root import run_app

        run_app()()
    else:
        from agent.cli.app import app

        app()

"""The `lineside` command line (agent/cli/app.py puts it together).

`lineside run` loads the run command only (agent/cli/root.py's `run_app`); every other
invocation loads the whole CLI. `agent.cli.app` is the typer app, as it always was, whether the
submodule of that name was imported first or not.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for the type checker: the name is the typer app, not the submodule
    from agent.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """The `lineside` script (pyproject's [project.scripts]) and `python -m agent`."""
    if sys.argv[1:2] == ["run"]:
        from agent.cli.root import run_app

        run_app()()
    else:
        from agent.cli.app import app

        app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from agent.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(ModuleType):
    """Importing the submodule agent/cli/app.py sets this package's `app` to the module; keep
    the typer app there instead (`from agent.cli import app` gives the app)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "app" and isinstance(value, ModuleType):
            value = value.app
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

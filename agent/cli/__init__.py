"""The `lineside` command line (agent/cli/app.py puts it together)."""

from agent.cli.app import app, main

__all__ = ["app", "main"]

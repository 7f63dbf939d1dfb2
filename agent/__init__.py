"""lineside agent: the protocol-agnostic runtime (config, model, store, KPIs, forwarding)."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one place the version is written is pyproject.toml; an install records it.
    __version__ = version("lineside")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

"""The optional parts of lineside and the libraries each brings (`pip install 'lineside[...]'`).

The core runs Modbus, the store, the KPIs, MQTT/HTTP upstream and the status page. OPC UA,
vision and the simulator need libraries a board that only polls PLCs should not carry, so they
are extras. Code that imports such a library does it under `needs(...)`, which turns the
ImportError of a missing one into `MissingExtra`: one line naming what to install, shown by the
CLI without a traceback (exit 2) and raised by `Agent(config)` at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

from agent.errors import LinesideError

# Top-level import names of the libraries each extra installs (pyproject.toml's
# [project.optional-dependencies]; tests/agent/test_extras.py keeps the two in step).
EXTRAS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "opcua": frozenset({"asyncua", "cryptography"}),
        "vision": frozenset({"onnxruntime", "cv2", "onnx"}),
        "sim": frozenset({"asyncua", "cryptography", "snap7"}),
        "s7": frozenset({"snap7"}),
    }
)


class MissingExtra(LinesideError):
    """A feature was asked for whose extra is not installed."""

    def __init__(self, feature: str, extras: tuple[str, ...]) -> None:
        self.feature = feature
        self.extras = extras
        noun = "extra" if len(extras) == 1 else "extras"
        super().__init__(
            f"{feature} needs the {' and '.join(extras)} {noun}: "
            f"pip install 'lineside[{','.join(extras)}]'"
        )


def missing_extra(exc: ImportError, feature: str, extras: tuple[str, ...]) -> MissingExtra | None:
    """`MissingExtra` when `exc` is the import of a library one of `extras` brings, else None
    (a missing core library or a bug is not an extra's problem and must not be dressed as one)."""
    top = (exc.name or "").partition(".")[0]
    if isinstance(exc, ModuleNotFoundError) and any(top in EXTRAS[e] for e in extras):
        return MissingExtra(feature, extras)
    return None


@contextmanager
def needs(feature: str, *extras: str) -> Iterator[None]:
    """Run an import of `feature`'s libraries: a missing one raises `MissingExtra`."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown or not extras:
        raise ValueError(f"unknown extras {unknown}; known: {', '.join(EXTRAS)}")
    try:
        yield
    except ImportError as exc:
        missing = missing_extra(exc, feature, extras)
        if missing is None:
            raise
        raise missing from None

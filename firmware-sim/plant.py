"""A simulated plant: machine models, their register images, and the servers that expose them.

A plant is described by a TOML file (`plants/<name>.toml` ships demo, press, cement and loom):
machines with a kind, a seed, a Modbus TCP port and unit id, optional rate overrides and an
optional fault; and whether to serve OPC UA and Modbus RTU too. `Plant` owns the running
pieces: one tick advances every model to the clock's time and re-encodes its registers, so a
request is answered from a ready image and never waits for the model.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


PLANTS = ("demo", "press", "cement", "loom")


class PlantError(Exception):
    """A plant file that cannot be used, or a plant that cannot start (e.g. a port in use)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["press", "mill", "loom"]
    seed: int = 0
    port: int = Field(default=0, ge=0, le=65535)  # Modbus TCP port; 0 picks a free one
    unit_id: int = Field(default=1, ge=0, le=255)  # unit id on its TCP port
    rtu_unit_id: int | None = Field(default=None, ge=1, le=247)  # default: position in the plant
    rates: dict[str, Any] = Field(default_factory=dict)  # model rate overrides, checked by make_machine
    fault: dict[str, Any] | None = None  # a fault active from the start, e.g. {mode="slow"}


class OpcUaSpec(_Strict):
    port: int = Field(default=4840, ge=0, le=65535)
    security: Literal["none", "sign_and_encrypt"] = "none"
    users: dict[str, str] = Field(default_factory=dict)


class RtuSpec(_Strict):
    baudrate: int = Field(default=19200, gt=0)


class PlantSpec(_Strict):
    name: str
    description: str = ""
    machines: tuple[MachineSpec, ...] = Field(min_length=1)
    opcua: OpcUaSpec = OpcUaSpec()
    rtu: RtuSpec = RtuSpec()

    @model_validator(mode="after")
    def _unique(self) -> PlantSpec:
        names = [m.name for m in self.machines]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"machine name {name!r} is used twice")
        endpoints = [(m.port, m.unit_id) for m in self.machines if m.port]
        for port, unit in endpoints:
            if endpoints.count((port, unit)) > 1:
                raise ValueError(f"port {port} unit {unit} is given to two machines")
        rtu_ids = list(self.rtu_unit_ids().values())
        for uid in rtu_ids:
            if rtu_ids.count(uid) > 1:
                raise ValueError(f"RTU unit id {uid} is given to two machines")
        return self

    def rtu_unit_ids(self) -> dict[str, int]:
        """Unit id of each machine on the plant's one RTU bus."""
        return {m.name: m.rtu_unit_id or i + 1 for i, m in enumerate(self.machines)}

    def with_ephemeral_ports(self) -> PlantSpec:
        """The same plant on free ports (tests, and several plants on one host)."""
        machines = tuple(m.model_copy(update={"port": 0}) for m in self.machines)
        opcua = self.opcua.model_copy(update={"port": 0})
        return self.model_copy(update={"machines": machines, "opcua": opcua})


def load_plant(name_or_path: str) -> PlantSpec:
    """A shipped plant by name (demo, press, cement, loom) or a plant TOML file by path."""
    if name_or_path in PLANTS:
        ref = resources.files("firmware_sim").joinpath("plants", f"{name_or_path}.toml")
        source, text = name_or_path, ref.read_text("utf-8")
    else:
        path = Path(name_or_path)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            known = ", ".join(PLANTS)
            raise PlantError(f"{path}: no such plant file (shipped plants: {known})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PlantError(f"{path}: cannot read: {exc}") from None
        source = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlantError(f"{source}: not valid TOML: {exc}") from None
    try:
        return PlantSpec.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {where}: {msg}" if where else f"{source}: {msg}")
        raise PlantError("\n".join(lines)) from None

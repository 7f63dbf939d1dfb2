"""A simulated plant: machine models, their register images, and the servers that expose them.

A plant is described by a TOML file (`plants/<name>.toml` ships demo, press, cement and loom):
machines with a kind, a seed, a Modbus TCP port and unit id, optional rate overrides and an
optional fault; and whether to serve OPC UA and Modbus RTU too. `Plant` owns the running
pieces: one tick advances every model to the clock's time and re-encodes its registers, so a
request is answered from a ready image and never waits for the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from firmware_sim.clock import SimClock
from firmware_sim.encoder import make_encoder
from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage
from firmware_sim.machines import MachineModel, make_machine
from firmware_sim.mc_server import McServer
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_rtu import ModbusRtuServer
from firmware_sim.modbus_tcp import ModbusTcpServer
from firmware_sim.opcua_server import SimOpcUaServer
from firmware_sim.s7_map import make_s7_encoder, s7_map

if TYPE_CHECKING:
    from firmware_sim.s7_server import SimS7Server

PLANTS = ("demo", "press", "cement", "loom")
FIRST_S7_PORT = 10200  # machine n's S7 CPU, unless its s7_port says otherwise
MC_PORT_OFFSET = 1000  # a machine on Modbus port 5020 serves MC on 6020


class PlantError(Exception):
    """A plant file that cannot be used, or a plant that cannot start (e.g. a port in use)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MachineSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    kind: Literal["press", "mill", "loom"]
    seed: int = 0
    port: int = Field(default=0, ge=0, le=65535)  # Modbus TCP port; 0 picks a free one
    s7_port: int = Field(default=0, ge=0, le=65535)  # S7, when served; 0: FIRST_S7_PORT + n
    unit_id: int = Field(default=1, ge=0, le=255)  # unit id on its TCP port
    rtu_unit_id: int | None = Field(default=None, ge=1, le=247)  # default: position in the plant
    # MC protocol (MELSEC) port; 0: the Modbus port + MC_PORT_OFFSET, or a free one without it.
    mc_port: int = Field(default=0, ge=0, le=65535)
    rates: dict[str, Any] = Field(
        default_factory=dict
    )  # model rate overrides, checked by make_machine
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
    # Bind free ports instead of the ones given (machines sharing a port still share one).
    ephemeral: bool = False

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
        return self.model_copy(update={"ephemeral": True})


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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one machine can be reached once the plant runs."""

    machine: str
    kind: str
    modbus_tcp: str  # host:port
    unit_id: int
    rtu_unit_id: int | None  # on the plant's RTU bus, when it runs
    s7: str | None = None  # host:port of its S7 CPU, when the plant serves S7
    mc: str = ""  # host:port of its MC protocol server, when it runs


class Plant:
    """The running plant: models, register images, and the servers in front of them.

    `tick()` advances every model to the clock's time and re-encodes its registers; `start()`
    runs it every `tick_interval` real seconds. A frozen unit (fault `freeze`) keeps its model
    running (the machine goes on, ground truth too) but its registers and nodes stop changing.
    """

    def __init__(
        self,
        spec: PlantSpec,
        clock: SimClock,
        *,
        host: str = "127.0.0.1",
        opcua: bool = True,
        rtu: bool = True,
        mc: bool = True,
        cert_dir: Path | None = None,
        s7: bool = False,
        tick_interval: float = 0.05,
        opcua_interval: float = 0.5,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.host = host
        self.tick_interval = tick_interval
        self.opcua_interval = opcua_interval
        self.machines: dict[str, MachineModel] = {}
        self.units: dict[str, Unit] = {}
        for m in spec.machines:
            try:
                machine = make_machine(m.kind, m.name, m.seed, **m.rates)
                faults = Faults.from_dict(m.fault) if m.fault else Faults(seed=m.seed)
            except ValueError as exc:  # FaultError is a ValueError too
                raise PlantError(f"{spec.name}: machine {m.name!r}: {exc}") from None
            faults.add_reboot_listener(machine.reboot)
            self.machines[m.name] = machine
            self.units[m.name] = Unit(image=RegisterImage(), faults=faults)
        self._encoders = {name: make_encoder(m.profile) for name, m in self.machines.items()}
        # S7: each machine's data blocks (firmware_sim.s7_map), served by its own CPU.
        self.s7_dbs: dict[str, dict[int, bytearray]] = {}
        self.s7_servers: dict[str, SimS7Server] = {}  # python-snap7: loaded only with s7
        self._s7_encoders: dict[str, Callable[[Mapping[str, Any], dict[int, bytearray]], None]] = {}
        if s7:
            for name, machine in self.machines.items():
                sizes = s7_map(machine.profile).db_sizes
                self.s7_dbs[name] = {n: bytearray(size) for n, size in sizes.items()}
                self._s7_encoders[name] = make_s7_encoder(machine.profile)
        self._want_opcua = opcua
        self._want_rtu = rtu
        self._want_mc = mc
        self.mc_servers: dict[str, McServer] = {}  # machine → its MC protocol server
        self._cert_dir = cert_dir
        self.tcp_servers: dict[int, ModbusTcpServer] = {}  # bound port → server
        self.rtu_server: ModbusRtuServer | None = None
        self.rtu_path: str | None = None
        self.opcua_server: SimOpcUaServer | None = None
        self._ports: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.tick()

    def tick(self) -> None:
        """Advance every model to now and publish its values to its register image."""
        now = self.clock.now()
        for name, machine in self.machines.items():
            machine.advance_to(now)
            unit = self.units[name]
            if not unit.faults.frozen:
                values = machine.values()
                self._encoders[name](values, unit.image)
                if name in self._s7_encoders:
                    self._encode_s7(name, values)

    def _encode_s7(self, name: str, values: Mapping[str, Any]) -> None:
        # Into copies first, then one slice copy per DB: a read in snap7's thread sees one
        # tick's values, never half of one.
        dbs = self.s7_dbs[name]
        scratch = {n: bytearray(buf) for n, buf in dbs.items()}
        self._s7_encoders[name](values, scratch)
        for n, buf in dbs.items():
            buf[:] = scratch[n]

    async def start(self) -> list[Endpoint]:
        try:
            await self._start_tcp()
            await self._start_s7()
            if self._want_mc:
                await self._start_mc()
            if self._want_rtu:
                units = {uid: self.units[n] for n, uid in self.spec.rtu_unit_ids().items()}
                self.rtu_server = ModbusRtuServer(units, baudrate=self.spec.rtu.baudrate)
                self.rtu_path = await self.rtu_server.start()
            if self._want_opcua:
                await self._start_opcua()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(), name=f"plant-{self.spec.name}")
        return self.endpoints()

    async def _start_tcp(self) -> None:
        # Machines given the same port share one server (a gateway, by unit id); port 0 means
        # a free port of the machine's own.
        groups: dict[int, list[MachineSpec]] = {}
        for i, m in enumerate(self.spec.machines):
            groups.setdefault(m.port if m.port else -1 - i, []).append(m)
        for key, members in groups.items():
            server = ModbusTcpServer({m.unit_id: self.units[m.name] for m in members})
            try:
                port = await server.start(self.host, 0 if self.spec.ephemeral else max(key, 0))
            except OSError as exc:
                await server.stop()
                raise PlantError(
                    f"cannot serve Modbus TCP on {self.host}:{key}: {exc.strerror}"
                    " (is another plant running? --ephemeral picks free ports)"
                ) from None
            self.tcp_servers[port] = server
            for m in members:
                self._ports[m.name] = port

    async def _start_s7(self) -> None:
        if not self.s7_dbs:
            return
        from firmware_sim.s7_server import SimS7Server  # python-snap7: the optional s7 extra

        for i, m in enumerate(self.spec.machines):
            if m.name not in self.s7_dbs:
                continue
            server = SimS7Server(self.s7_dbs[m.name], self.units[m.name].faults)
            port = 0 if self.spec.ephemeral else (m.s7_port or FIRST_S7_PORT + i)
            try:
                bound = await asyncio.to_thread(server.start_on, self.host, port)
            except Exception as exc:  # snap7 wraps the OSError in its own error
                raise PlantError(f"cannot serve S7 on {self.host}:{port}: {exc}") from None
            self.s7_servers[m.name] = server
            self._ports[f"s7:{m.name}"] = bound

    async def _start_mc(self) -> None:
        # One MC port per machine (a MELSEC CPU answers for itself, not for a unit id).
        ports = [m.port for m in self.spec.machines if m.port]
        shared = {p for p in ports if ports.count(p) > 1}
        for m in self.spec.machines:
            port = m.mc_port or (m.port + MC_PORT_OFFSET if m.port and m.port not in shared else 0)
            server = McServer(self.units[m.name])
            try:
                await server.start(self.host, 0 if self.spec.ephemeral else port)
            except OSError as exc:
                raise PlantError(
                    f"cannot serve MC protocol on {self.host}:{port}: {exc.strerror}"
                    " (is another plant running? --ephemeral picks free ports)"
                ) from None
            self.mc_servers[m.name] = server

    async def _start_opcua(self) -> None:
        spec = self.spec.opcua
        cert_dir = self._cert_dir
        if spec.security != "none" and cert_dir is None:
            cert_dir = Path(tempfile.mkdtemp(prefix="lineside-sim-certs-"))
        server = SimOpcUaServer(
            self.machines.values(),
            host=self.host,
            port=0 if self.spec.ephemeral else spec.port,
            security=spec.security,
            cert_dir=cert_dir,
            users=spec.users or None,
        )
        try:
            await server.start()
        except OSError as exc:
            raise PlantError(
                f"cannot serve OPC UA on {self.host}:{spec.port}: {exc.strerror}"
                " (is another plant running? --ephemeral picks free ports)"
            ) from None
        self.opcua_server = server

    async def _run(self) -> None:
        next_opcua = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self.tick()
            if self.opcua_server is not None and loop.time() >= next_opcua:
                next_opcua = loop.time() + self.opcua_interval
                for name, unit in self.units.items():
                    self.opcua_server.freeze(name, unit.faults.frozen)
                await self.opcua_server.refresh()
            await asyncio.sleep(self.tick_interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for server in self.tcp_servers.values():
            await server.stop()
        self.tcp_servers.clear()
        for s7_server in self.s7_servers.values():
            await asyncio.to_thread(s7_server.stop)
        self.s7_servers.clear()
        for mc_server in self.mc_servers.values():
            await mc_server.stop()
        self.mc_servers.clear()
        if self.rtu_server is not None:
            await self.rtu_server.stop()
            self.rtu_server = None
        if self.opcua_server is not None:
            await self.opcua_server.stop()
            self.opcua_server = None

    async def __aenter__(self) -> Plant:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def endpoints(self) -> list[Endpoint]:
        rtu_ids = self.spec.rtu_unit_ids() if self.rtu_server is not None else {}
        return [
            Endpoint(
                machine=m.name,
                kind=m.kind,
                modbus_tcp=f"{self.host}:{self._ports.get(m.name, m.port)}",
                unit_id=m.unit_id,
                rtu_unit_id=rtu_ids.get(m.name),
                s7=(
                    f"{self.host}:{self._ports[f's7:{m.name}']}"
                    if f"s7:{m.name}" in self._ports
                    else None
                ),
                mc=f"{self.host}:{self.mc_servers[m.name].port}"
                if m.name in self.mc_servers
                else "",
            )
            for m in self.spec.machines
        ]

    @property
    def opcua_endpoint(self) -> str | None:
        return self.opcua_server.endpoint if self.opcua_server is not None else None

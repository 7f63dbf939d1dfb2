"""`lineside demo` (and `make demo`): the demo plant, the agent polling it, live on screen.

The simulated plant (2 presses, a cement mill, 2 looms) starts on free ports; a config for it is
written to `<dir>/lineside.toml`; the agent polls every machine over Modbus TCP into the SQLite
log in `<dir>/data/`, and the screen shows what it reads. Everything stays on this machine.

When mosquitto is installed, the demo starts one of its own on a free loopback port (anonymous,
no persistence, its config in `<dir>/mosquitto.conf`) and adds an MQTT sink, so the status
page's sinks table fills as records are forwarded; without it, readings stay in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.config.loader import load_config
from agent.eventloop import run as run_loop
from agent.model import Quality
from agent.runtime import Agent
from agent.starter import PlantMachine, plant_config, plant_machines
from agent.web.config import WebError


def _machine_panel(agent: Agent, machine: str) -> Table:
    table = Table(title=machine, title_justify="left", min_width=36)
    table.add_column("tag")
    table.add_column("value", justify="right")
    for tag in agent.tags:
        if tag.machine != machine:
            continue
        quality = Quality(int(agent.latest_quality[tag.id]))
        value = float(agent.latest_values[tag.id])
        string = agent.texts.latest.get(tag.id)  # a text tag's string (agent/texts.py)
        if string is not None:
            shown = string.value if string.value is not None else string.quality.name.lower()
            text = Text(shown, style="" if string.quality is Quality.GOOD else "red")
        elif not agent.latest_ts_ns[tag.id]:
            text = Text("not read", style="dim")
        elif quality is Quality.GOOD:
            text = Text(f"{value:,.6g} {tag.unit}".rstrip())
        else:
            text = Text(quality.name.lower(), style="red")
        table.add_row(tag.name, text)
    return table


def _view(agent: Agent, sim_hours: float, rate: float) -> Group:
    writer = agent.writer.statistics()
    links = ", ".join(f"{name}: {link.state}" for name, link in agent.links.items())
    header = Text.assemble(
        ("lineside demo", "bold"),
        f"  simulated time {sim_hours:.2f} h; {rate:,.0f} readings/s polled; ",
        f"{writer.readings_written:,} stored in {agent.store.path}; Ctrl-C stops\n",
        (links, "dim"),
    )
    if agent.web is not None:
        header.append(f"\nstatus page {agent.web.url}")
    header.append(_camera_lines(agent))
    machines = list(dict.fromkeys(t.machine for t in agent.tags))
    return Group(header, Columns([_machine_panel(agent, m) for m in machines]))


BUNDLED_MODEL = "lineside-surface.onnx"  # vision/models/, trained on generated surfaces


def bundled_model() -> str | None:
    """The bundled surface model, if this install has it: the demo's camera inspection needs it
    (nothing is downloaded; without it the demo runs without a camera)."""
    from importlib.resources import files

    path = Path(str(files("vision"))) / "models" / BUNDLED_MODEL
    return str(path) if path.is_file() else None


def _camera_lines(agent: Agent) -> Text:
    """One line per inspection: verdict counts, and the quality they give the machine's OEE."""
    text = Text()
    snapshot = agent.kpi_snapshot() if agent.inspectors else None
    for inspector in agent.inspectors:
        s = inspector.stats
        text.append(
            f"\ncamera {inspector.name}: {s.inspected:,} parts inspected, {s.ok:,} OK, "
            f"{s.not_ok:,} NotOK, {s.not_decidable:,} undecided, {s.dropped:,} dropped"
        )
        machine = (snapshot or {}).get("machines", {}).get(inspector.machine)
        quality = machine["classic"]["quality"] if machine is not None else None
        if quality is not None:
            text.append(f"; {inspector.machine} quality {quality:.1%}")
        if s.last_error:
            text.append(f" ({s.last_error})", style="red")
    return text


BROKER_START = 5.0  # seconds mosquitto has to accept connections


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        return "/usr/sbin/mosquitto"  # Debian's package puts it outside a user's PATH
    return found


def _broker_conf(directory: Path) -> tuple[Path, int]:
    """mosquitto's config for the demo: a free loopback port, anonymous, no persistence."""
    directory.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n", encoding="utf-8"
    )
    return conf, port


@contextlib.asynccontextmanager
async def local_broker(directory: Path) -> AsyncIterator[int | None]:
    """A private mosquitto on loopback for the demo's MQTT sink: its port, or None when
    mosquitto is not installed or does not start (the demo then runs without a sink)."""
    binary = mosquitto_binary()
    if binary is None:
        yield None
        return
    conf, port = _broker_conf(directory)
    process = await asyncio.create_subprocess_exec(
        binary,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        ready = False
        deadline = time.monotonic() + BROKER_START
        while not ready and process.returncode is None and time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                ready = True
        yield port if ready else None
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()


def _write_config(
    directory: Path,
    machines: list[PlantMachine],
    port: int | None = None,
    broker: int | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lineside.toml"
    text = plant_config(machines, camera_model=bundled_model(), camera_save="rejects")
    if broker is not None:
        text += (
            "\n# The demo's own mosquitto (see agent/demo.py): what the agent forwards upstream.\n"
            f'[[sinks]]\nname = "mqtt"\ntype = "mqtt"\nhost = "127.0.0.1"\nport = {broker}\n'
        )
    if port is not None:
        text += f"\n[web]\nport = {port}  # the status page\n"
    path.write_text(text, encoding="utf-8")
    return path


def run_demo(
    *,
    directory: Path = Path("demo"),
    speed: float = 10.0,
    duration: float | None = None,
    console: Console | None = None,
    port: int | None = None,
    broker: bool = True,
) -> None:
    from firmware_sim.clock import ScaledClock, SimulatedWallClock
    from firmware_sim.plant import Plant, load_plant

    console = console or Console()
    spec = load_plant("demo").with_ephemeral_ports()

    async def main() -> None:
        clock = ScaledClock(speed)
        async with (
            Plant(spec, clock, opcua=False, rtu=False) as plant,
            local_broker(directory) if broker else contextlib.nullcontext() as mqtt_port,
        ):
            machines = plant_machines(plant.endpoints())
            # Readings carry simulated time, so KPIs see the plant's pace, not 10x the parts per
            # wall-clock hour; simulated time 0 is now.
            agent_clock = SimulatedWallClock(clock, time.time_ns() - round(clock.now() * 1e9))
            config = load_config(_write_config(directory, machines, port, mqtt_port))
            agent = Agent(config, clock=agent_clock)
            # The page first: a taken port stops the demo here, before anything else shows.
            web = await agent.start_web()
            console.print(f"status page: {web.url}", markup=False, highlight=False)
            if mqtt_port is not None:
                where = f"mqtt://127.0.0.1:{mqtt_port}"
                said = f"forwarding to the demo's mosquitto on {where} (topics lineside/#)"
            elif broker:
                said = "no mosquitto installed: readings stay in the store (no sink)"
            else:
                said = "no sink: readings stay in the store"
            console.print(said, markup=False, highlight=False)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            running = asyncio.create_task(agent.run(stop))
            started = time.monotonic()
            last_samples, last_t = 0, started
            try:
                with Live(_view(agent, 0, 0), console=console, refresh_per_second=2) as live:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), 1.0)
                        now = time.monotonic()
                        rate = (agent.samples - last_samples) / max(now - last_t, 1e-9)
                        last_samples, last_t = agent.samples, now
                        live.update(_view(agent, clock.now() / 3600, rate))
                        if duration is not None and now - started >= duration:
                            break
            finally:
                stop.set()
                await running
            stored = agent.writer.statistics().readings_written
            sent = sum(sum(f.stats.sent.values()) for f in agent.forwarders)
        forwarded = f"; {sent:,} records forwarded over MQTT" if mqtt_port is not None else ""
        console.print(
            f"stored {stored:,} readings in {directory / 'data'}{forwarded}; look at them with:\n"
            f"  lineside oee -c {directory / 'lineside.toml'} --shift current\n"
            f"  lineside export -c {directory / 'lineside.toml'} --tag '*/press1/*' | head",
            markup=False,
            highlight=False,
        )

    try:
        run_loop(main)
    except WebError as exc:
        Console(stderr=True).print(
            f"lineside demo: {exc}", markup=False, highlight=False, soft_wrap=True
        )
        raise SystemExit(1) from None

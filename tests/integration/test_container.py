"""The container image's commands, run here as the image runs them (no container engine here).

The test reads the Dockerfile's ENTRYPOINT, CMD and HEALTHCHECK and runs those exact command
lines: the agent against a generated config and a simulated plant, then the health check
against it. Only the config path and the page's port (0 here: tests bind free ports) change.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agent.config import load_config
from agent.starter import PlantMachine, plant_config
from firmware_sim.clock import ScaledClock
from firmware_sim.plant import Plant, load_plant
from tests.waiting import until

ROOT = Path(__file__).parents[2]
CONFIG_IN_IMAGE = "/etc/lineside/lineside.toml"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(ROOT / "Dockerfile")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def one(stage: list[tuple[str, str]], word: str) -> str:
    (value,) = [rest for w, rest in stage if w == word]
    return value


def exec_form(value: str) -> list[str]:
    words = json.loads(value)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), value
    return words


def healthcheck() -> list[str]:
    value = one(final_stage(), "HEALTHCHECK")
    assert "CMD" in value
    return exec_form(value[value.index("CMD") + 3 :].strip())


async def health(check: list[str]) -> tuple[int, str]:
    """Run the health check command (the plant keeps serving on this loop meanwhile)."""
    process = await asyncio.create_subprocess_exec(*check, stderr=asyncio.subprocess.PIPE)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def test_the_image_is_multi_stage_non_root_from_the_wheel_with_the_store_on_a_volume() -> None:
    steps = instructions(ROOT / "Dockerfile")
    assert sum(word == "FROM" for word, _ in steps) >= 2
    stage = final_stage()
    runs = " ".join(rest for word, rest in stage if word == "RUN")
    assert "pip install --no-cache-dir --no-index --find-links /wheels lineside" in runs
    assert any(w == "COPY" and rest.startswith("--from=build /wheels") for w, rest in stage)
    assert not any(w == "COPY" and "--from" not in rest for w, rest in stage)  # no sources
    assert one(stage, "USER") not in ("root", "0")
    assert exec_form(one(stage, "VOLUME")) == ["/var/lib/lineside"]
    assert exec_form(one(stage, "ENTRYPOINT")) == ["lineside"]
    assert CONFIG_IN_IMAGE in exec_form(one(stage, "CMD"))


@pytest.mark.slow
def test_the_wheel_builds_from_the_files_the_build_stage_copies(tmp_path: Path) -> None:
    steps = instructions(ROOT / "Dockerfile")
    build = steps[: max(i for i, (word, _) in enumerate(steps) if word == "FROM")]
    context = tmp_path / "context"
    context.mkdir()
    for word, rest in build:
        if word == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, context / source,
                                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
                else:
                    shutil.copy(ROOT / source, context / source)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), "."],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=context,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("lineside-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"agent/cli/app.py", "agent/service.py", "connectors/mqtt/sink.py"} <= names


def test_compose_runs_the_image_with_mosquitto_and_the_example_config() -> None:
    compose = (ROOT / "compose.yaml").read_text(encoding="utf-8")
    volume = exec_form(one(final_stage(), "VOLUME"))[0]
    assert "build: ." in compose
    assert f"lineside-data:{volume}" in compose
    assert f"./examples/container.toml:{CONFIG_IN_IMAGE}:ro" in compose
    assert "image: eclipse-mosquitto:2" in compose
    assert "./examples/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in compose
    config = load_config(ROOT / "examples" / "container.toml")
    assert config.agent.data_dir == Path(volume)
    assert [(s.type, s.endpoint) for s in config.sinks] == [("mqtt", "mqtt://mosquitto:1883")]
    assert (config.web.bind, config.web.port) == ("127.0.0.1", 8470)
    assert "http://127.0.0.1:8470/healthz" in " ".join(healthcheck())


async def test_the_entry_command_runs_and_the_healthcheck_answers(tmp_path: Path) -> None:
    command = exec_form(one(final_stage(), "ENTRYPOINT")) + exec_form(one(final_stage(), "CMD"))
    data = tmp_path / "data"
    data.mkdir()
    err_path = tmp_path / "stderr"
    spec = load_plant("press").with_ephemeral_ports()
    async with Plant(spec, ScaledClock(1.0), opcua=False, rtu=False) as plant:
        machines = []
        for e in plant.endpoints():
            host, _, port = e.modbus_tcp.rpartition(":")
            machines.append(PlantMachine(e.machine, e.kind, host, int(port), e.unit_id))
        config = tmp_path / "lineside.toml"
        text = plant_config(machines, data_dir=str(data), poll_interval="200ms")
        config.write_text(text + "\n[web]\nport = 0\n", encoding="utf-8")
        assert command.count(CONFIG_IN_IMAGE) == 1
        command[command.index(CONFIG_IN_IMAGE)] = str(config)
        # The image puts lineside on PATH; here it is the virtual environment's.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        with err_path.open("wb") as err:
            agent = await asyncio.create_subprocess_exec(*command, stderr=err, env=env, cwd=data)

        def page_port() -> int | None:
            found = re.search(r"status page on http://127\.0\.0\.1:(\d+)/", err_path.read_text())
            return int(found.group(1)) if found else None

        try:
            await until(lambda: page_port() is not None)
            page = page_port()
            assert page is not None, err_path.read_text()
            check = healthcheck()
            assert check[0] == "python" and sum("8470" in word for word in check) == 1
            check = [sys.executable, *(w.replace("8470", str(page)) for w in check[1:])]
            code, stderr = await health(check)
            assert code == 0, stderr
            # STOPSIGNAL: docker stop sends it; the agent drains and exits 0.
            stop = one(final_stage(), "STOPSIGNAL")
            agent.send_signal(getattr(signal, stop))
            await asyncio.wait_for(agent.wait(), 60)
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
    assert agent.returncode == 0, err_path.read_text()
    assert "stopped, store drained" in err_path.read_text()
    # With the agent gone the same check fails, so the container would be marked unhealthy.
    code, _ = await health(check)
    assert code != 0

"""A Modbus TCP source in the agent's link loop against faulty simulated units, in real time:
a silent unit behind a gateway, a unit that answers an exception to everything, a unit that
garbles its answers (the link flaps)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.clock import SystemClock
from agent.config import Config, load_config
from agent.model import Event, Quality, ReadingBatch
from agent.poller import LinkStatistics, run_link
from agent.starter import starter_config
from agent.tags import TagTable
from connectors.modbus.config import ModbusTcpSourceConfig
from connectors.modbus.tcp_source import ModbusTcpSource
from firmware_sim.clock import ManualClock
from firmware_sim.plant import MachineSpec, Plant, PlantSpec
from tests.waiting import until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def gateway() -> AsyncIterator[Plant]:
    """press1 (unit 1) and press2 (unit 2) behind one Modbus TCP port, like a gateway."""
    spec = PlantSpec(
        name="gateway",
        machines=(
            MachineSpec(name="press1", kind="press", seed=1, port=5020, unit_id=1),
            MachineSpec(name="press2", kind="press", seed=2, port=5020, unit_id=2),
        ),
        ephemeral=True,
    )
    async with Plant(spec, ManualClock(), opcua=False, rtu=False) as running:
        running.tick()
        yield running


def gateway_config(
    tmp_path: Path, plant: Plant, poll_interval: str = "250ms", **settings: str
) -> Config:
    """The press starter config with both presses' units on one source at the gateway port;
    `settings` are keys of the source."""
    (port,) = {e.modbus_tcp.rsplit(":", 1)[1] for e in plant.endpoints()}
    text = starter_config("press").replace(
        'poll_interval = "1s"', f'poll_interval = "{poll_interval}"'
    )
    for key in settings:
        text = re.sub(rf"^{key} = .*\n", "", text, flags=re.MULTILINE)
    # press2's source goes: its unit joins press1-plc's source, as unit 2.
    text, n = re.subn(
        r'\[\[sources\]\]\nname = "press2-plc"\n(?:.*\n)*?\n(\[\[sources\.units\]\]\n)unit_id = 1',
        r"\1unit_id = 2",
        text,
    )
    assert n == 1
    extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
    text, n = re.subn(r"^port = 5020\n", f"port = {port}\n{extra}", text, flags=re.MULTILINE)
    assert n == 1
    path = tmp_path / "lineside.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    assert [s.name for s in config.sources] == ["press1-plc"]
    return config


def tcp_source(config: Config, **backoff: Any) -> ModbusTcpSource:
    (source,) = config.sources
    assert isinstance(source, ModbusTcpSourceConfig)
    return ModbusTcpSource(source, TagTable.from_config(config), **backoff)


@dataclass
class Link:
    """What one run of the link loop produced."""

    source: ModbusTcpSource
    stats: LinkStatistics = field(default_factory=LinkStatistics)
    batches: list[ReadingBatch] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def good_polls(self, tag_ids: set[int]) -> int:
        """Batches of these tags (one per poll of their unit) that read all good."""
        return sum(
            1
            for b in self.batches
            if set(b.tag_ids.tolist()) <= tag_ids and (b.quality == Quality.GOOD).all()
        )


@contextlib.asynccontextmanager
async def linked(source: ModbusTcpSource, **kw: Any) -> AsyncIterator[Link]:
    link = Link(source)
    task = asyncio.create_task(
        run_link(
            source, SystemClock(), link.batches.append, link.events.append, stats=link.stats, **kw
        )
    )
    try:
        yield link
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def unit_tags(config: Config, machine: str) -> set[int]:
    tags = TagTable.from_config(config)
    return {t.id for t in tags if t.machine == machine}


@pytest.mark.slow
async def test_a_silent_unit_does_not_stall_its_neighbour(tmp_path: Path, gateway: Plant) -> None:
    # The gateway answers in order: while it waits 300 ms for press1 (silent, longer than the
    # 200 ms timeout), press2's requests wait behind it, as on a real gateway's serial bus.
    config = gateway_config(tmp_path, gateway, timeout='"200ms"', retries="1", max_gap="0")
    text = config.sources[0]
    assert isinstance(text, ModbusTcpSourceConfig) and len(text.units) == 2
    gateway.units["press1"].faults.set("slow", delay="300ms")
    window = 4.0
    async with linked(tcp_source(config)) as link:
        await until(lambda: link.stats.polls > 0)
        start, polls_before = len(link.batches), link.stats.polls
        await asyncio.sleep(window)
        seen = Link(link.source, batches=link.batches[start:])
        polls = link.stats.polls - polls_before
    healthy = seen.good_polls(unit_tags(config, "press2"))
    # Before: press1's requests each waited a timeout and a retry, and press2 behind them:
    # none of 16 polls. Now press1 is isolated and asked again on back-off, last in its poll.
    # Counted against the polls that ran, not the clock: a loaded machine runs fewer.
    assert polls >= 4, polls
    assert healthy >= 0.8 * polls, f"{healthy} good polls of press2 in {polls}"
    assert seen.good_polls(unit_tags(config, "press1")) == 0
    stats = link.source.statistics()
    assert stats.extras["isolations"] >= 1 and stats.extras["skipped_requests"] > 0
    assert set(link.source.reasons.summary()) == {"timeout after 200ms"}


@pytest.mark.slow
async def test_a_flapping_plc_backs_off_and_its_events_are_counted(
    tmp_path: Path, gateway: Plant, caplog: pytest.LogCaptureFixture
) -> None:
    # Every answer garbled: each connection is closed again at the first answer.
    caplog.set_level(logging.INFO, logger="lineside")
    config = gateway_config(tmp_path, gateway, timeout='"200ms"', poll_interval="100ms")
    for unit in gateway.units.values():
        unit.faults.set("malformed")
    async with linked(tcp_source(config), repeat_window=2.0) as link:
        await asyncio.sleep(6.0)
    events = [e for e in link.events if e.data["state"] in ("lost", "restored")]
    lines = [r.getMessage() for r in caplog.records if r.name == "lineside.poller"]
    # Before: the back-off was reset by every connect and nothing was held back: 12 connects,
    # 23 lost / restored events and 24 log lines in these 6 s. Now: 5, 6 and 7; the garbling
    # units are isolated on back-off (1 s, 2 s, 4 s) and a repeat within 2 s is held back.
    assert link.stats.connects <= 7, link.stats
    assert len(events) <= 8, [e.data for e in events]
    assert len(lines) <= 9, lines
    # A line or event let through after repeats says how many were held back.
    assert any(e.data.get("repeats", 0) >= 1 for e in link.events), [e.data for e in events]
    assert any("since the last report" in line for line in lines), lines
    stats = link.source.statistics()
    assert stats.malformed <= 6 and stats.extras["isolations"] >= 2
    assert set(link.source.reasons.summary()) <= {"malformed answer"} | {link.stats.last_error}

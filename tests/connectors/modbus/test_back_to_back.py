"""`poll_interval = "0s"`: a Modbus link polled back to back against the simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.config import load_config
from agent.errors import ConfigError
from agent.model import Event, Quality, ReadingBatch
from agent.poller import LinkStatistics, run_link
from agent.tags import TagTable
from connectors.modbus.config import ModbusTcpSourceConfig
from connectors.modbus.tcp_source import ModbusTcpSource
from firmware_sim.faults import Faults
from firmware_sim.image import RegisterImage
from firmware_sim.modbus_pdu import Unit
from firmware_sim.modbus_tcp import ModbusTcpServer
from tests.waiting import until

pytestmark = pytest.mark.timeout(30)


def _config(tmp_path: Path, port: int, poll_interval: str) -> Path:
    path = tmp_path / "lineside.toml"
    path.write_text(
        'config_version = 1\n[agent]\nid = "t"\ndata_dir = "data"\n[plant]\nsite = "s"\n'
        '[[machines]]\nname = "m"\narea = "a"\nline = "l"\n'
        '[[sources]]\nname = "plc"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\n'
        f'port = {port}\ntimeout = "1s"\n'
        f'[[sources.units]]\nunit_id = 1\nmachine = "m"\npoll_interval = "{poll_interval}"\n'
        '[[sources.units.tags]]\nname = "a"\naddress = "hr:0"\ntype = "uint16"\n',
        encoding="utf-8",
    )
    return path


def test_0s_is_back_to_back_and_a_negative_interval_is_refused(tmp_path: Path) -> None:
    (source,) = load_config(_config(tmp_path, 502, "0s")).sources
    assert isinstance(source, ModbusTcpSourceConfig)
    assert source.units[0].poll_interval == 0.0
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, 502, "-1s"))
    assert "poll_interval" in str(caught.value.problems[0])


async def test_a_link_polled_back_to_back_never_overlaps_its_polls(tmp_path: Path) -> None:
    server = ModbusTcpServer({1: Unit(RegisterImage(size=16), Faults())})
    await server.start()
    config = load_config(_config(tmp_path, server.port, "0s"))
    (spec,) = config.sources
    assert isinstance(spec, ModbusTcpSourceConfig)
    source = ModbusTcpSource(spec, TagTable.from_config(config))
    assert dict(source.poll_groups()) == {"0s": 0.0}
    readings: list[ReadingBatch] = []
    events: list[Event] = []
    stats = LinkStatistics()
    # One request per poll and one poll at a time: the requests the server answered are the
    # polls, plus at most the one whose poll was cancelled in flight.
    task = asyncio.ensure_future(
        run_link(source, SystemClock(), readings.append, events.append, stats=stats)
    )
    try:
        await until(lambda: len(readings) >= 200)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
    assert all(int(r.quality[0]) == Quality.GOOD for r in readings)
    assert server.stats.requests - stats.polls in (0, 1)
    assert source.statistics().requests == server.stats.requests

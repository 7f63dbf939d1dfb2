"""The OPC UA benchmark runs end to end (small, never asserting speed), and the simulated
server's bulk path reaches real subscriptions and refuses what it cannot write."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client

from benchmarks import opcua
from firmware_sim.opcua_server import DOUBLES_PER_FOLDER, SimOpcUaServer
from firmware_sim.profile import profile_from_toml


class _Folder:
    name = "bench"
    profile = profile_from_toml('kind = "press"\ndescription = "bench"\ntags = []\n')

    def values(self) -> dict[str, float]:
        return {}


class _Collect:
    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.changed = asyncio.Event()

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        self.seen[node.nodeid.to_string()] = value
        self.changed.set()


@pytest.mark.slow
async def test_write_doubles_reaches_subscriptions_and_reads() -> None:
    names = [f"v{i}" for i in range(DOUBLES_PER_FOLDER + 5)]  # two folders
    async with SimOpcUaServer([_Folder()]) as sim:
        ids = await sim.add_doubles("bench", names)
        assert ids[0] == f"ns={sim.namespace_index};s=bench.v0"
        async with Client(sim.endpoint, timeout=10) as client:
            collect = _Collect()
            sub = await client.create_subscription(50, collect)
            watched = [ids[0], ids[-1]]
            await sub.subscribe_data_change([client.get_node(n) for n in watched])
            await asyncio.wait_for(collect.changed.wait(), 5)  # the initial values
            collect.seen.clear()
            assert await sim.write_doubles(ids, [float(i) + 0.5 for i in range(len(ids))]) == len(
                ids
            )
            while set(collect.seen) != set(watched):
                collect.changed.clear()
                await asyncio.wait_for(collect.changed.wait(), 5)
            assert collect.seen == {ids[0]: 0.5, ids[-1]: len(ids) - 0.5}
            values = await client.read_values([client.get_node(ids[3])])
            assert values == [3.5]


@pytest.mark.slow
async def test_write_doubles_refuses_unknown_nodes_and_mismatched_lengths() -> None:
    async with SimOpcUaServer([_Folder()]) as sim:
        ids = await sim.add_doubles("bench", ["a", "b"])
        with pytest.raises(ValueError):
            await sim.write_doubles(ids, [1.0])
        other = await sim.add_variable("bench", "c", ua.Variant(0.0))
        with pytest.raises(KeyError):
            await sim.write_doubles([ids[0], other], [1.0, 2.0])
    with pytest.raises(Exception, match="not started"):
        await sim.write_doubles(ids, [1.0, 2.0])


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_benchmark_runs_ours_and_naive(tmp_path: Path) -> None:
    out = tmp_path / "opcua.json"
    assert opcua.main(["--items", "300", "--duration", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    figures = result["runs"]["300"]
    for kind in ("ours", "naive"):
        run = figures[kind]
        assert "error" not in run, run
        assert run["notifications"] > 0
        assert run["cpu_s_per_1m_values"] > 0
        assert run["rss_peak_mb"] > 10
        # Values carry their change time: an age is positive and far below the run's length.
        assert 0 < run["age_p50_s"] <= run["age_p99_s"] < 10
        assert run["server_cpu_share"] > 0
    assert figures["ours"]["monitored_items"] == 300
    assert figures["ours"]["records"] > 0
    assert result["target"]["met"] is None  # no 20k run here

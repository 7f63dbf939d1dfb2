"""The acquisition benchmark runs end to end (tiny durations; it never asserts speed), and the
ceiling's own numpy decoding agrees with struct, tag by tag."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest

from benchmarks import acquisition
from benchmarks.ceiling import NumpyBlock
from benchmarks.procstat import cpu_seconds, rss_bytes
from benchmarks.workloads import WORKLOADS, contiguous_float32, read_blocks, scattered_mixed

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f",
            "float64": ">d"}  # fmt: skip


@pytest.mark.parametrize("tags", [contiguous_float32(100), scattered_mixed()])
def test_ceiling_decoding_matches_struct(tags: tuple[object, ...]) -> None:
    rng = random.Random(7)
    for request in read_blocks(tags):  # type: ignore[arg-type]
        payload = bytes(rng.randrange(256) for _ in range(request.payload_bytes))
        got = NumpyBlock(request).decode(payload)
        want = []
        for tag in request.tags:
            at = tag.offset - request.start
            if request.table.is_bits:
                want.append(float((payload[at // 8] >> (at % 8)) & 1))
            else:
                want.append(float(struct.unpack_from(_FORMATS[tag.type], payload, 2 * at)[0]))
        assert got.tolist() == pytest.approx(want, nan_ok=True)


def test_ceiling_decoding_refuses_a_short_payload() -> None:
    request = read_blocks(contiguous_float32(4))[0]
    with pytest.raises(ValueError):
        NumpyBlock(request).decode(b"\0" * (request.payload_bytes - 1))


def test_procstat_reads_this_process() -> None:
    import os

    assert cpu_seconds(os.getpid()) > 0
    assert rss_bytes(os.getpid()) > 1_000_000
    with pytest.raises(FileNotFoundError):
        cpu_seconds(2**22 + 1)  # above the kernel's pid_max: no such process


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_benchmark_runs_tcp_and_rtu_workloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "acquisition.json"
    code = acquisition.main(
        ["--duration", "1", "--workloads", "W1,W4", "--no-rss", "--out", str(out)]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["workloads"]) == {"W1", "W4"}
    for name, w in result["workloads"].items():
        assert set(w["runs"]) == {"agent", "naive", "ceiling"}
        for run in w["runs"].values():
            # Every contender read the plant without errors and was measured.
            assert run["samples"] > 0 and run["errors"] == 0, (name, run)
            assert run["cpu_s"] > 0 and run["rss_bytes"] > 0
            assert run["samples"] % len(WORKLOADS[name].tags) == 0
        assert w["runs"]["agent"]["readings_stored"] > 0
        assert w["ratios"]["rate_agent_over_ceiling"] is not None
    printed = capsys.readouterr().out
    assert "| W4 | ceiling |" in printed and "results:" in printed


def test_unknown_workload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        acquisition.main(["--workloads", "W9", "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "x.json").exists()

"""`lineside oee` and `lineside report` end to end, in a subprocess, on a store the real Agent
filled from the simulated plant (tests/agent/kpi/test_replay.py: a 2 h shift on 2026-11-23)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.model import EventKind
from agent.store import Store


def lineside(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "240", "PATH": "/usr/bin:/bin", "PYTHONPATH": "."},
    )


@pytest.fixture(scope="module")
def config_path(shift_store: Path) -> Path:
    return shift_store


def live_shift_oee(config_path: Path) -> dict[str, Any]:
    """The live engine's classic OEE of shift A, per machine or line (latest revision)."""
    out: dict[str, tuple[int, Any]] = {}
    with Store(config_path.parent / "data") as store:
        for e in store.read_events(0, 100_000):
            d = e.data
            if e.kind is not EventKind.KPI or d["definition"] != "classic":
                continue
            who = str(d["machine"] or d["line"] or d.get("area") or d.get("site"))
            if d["window"]["name"] == "2026-11-23/A" and d["revision"] >= out.get(who, (-1,))[0]:
                out[who] = (d["revision"], d["kpis"]["oee"])
    return {k: v for k, (_, v) in out.items()}


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_oee_json_gives_both_definitions_as_the_live_engine_computed(config_path: Path) -> None:
    result = lineside("oee", "-c", config_path, "--shift", "2026-11-23/A", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["no_readings"] == []
    rows = {(r["machine"] or r["line"] or r["area"] or r["site"]): r for r in data["windows"]}
    site = load_config(config_path).plant.site
    assert sorted(rows) == sorted([
        "grinding/cement-mill-1", "mill1", "press1", "press2", "stamping/body-line-1",
        "grinding", "stamping", site,  # the areas and the site
    ])  # fmt: skip
    live = live_shift_oee(config_path)
    for who, row in rows.items():
        assert row["window"]["name"] == "2026-11-23/A" and row["complete"]
        assert row["kpis"]["classic"]["oee"] == pytest.approx(live[who], rel=1e-9)
        assert row["kpis"]["iso22400"]["oee_index"] == pytest.approx(live[who], rel=1e-9)
        assert set(row) >= {"components", "flags", "losses", "pareto"}


@pytest.mark.slow
def test_oee_table_for_one_machine_and_for_one_line(config_path: Path) -> None:
    result = lineside("oee", "-c", config_path, "--shift", "2026-11-23", "--machine", "press1")
    assert result.returncode == 0, result.stderr
    assert "shift 2026-11-23/A (2026-11-23 06:00 – 2026-11-23 08:00)" in result.stdout
    assert "press1" in result.stdout
    assert result.stdout.rstrip().endswith("times in Asia/Shanghai")  # the calendar's zone
    assert "press2" not in result.stdout and "mill1" not in result.stdout
    assert re.search(r"press1 .*\d+\.\d %", result.stdout)
    # The agent stopped before the night shift: its planned time is unknown, not 0 % OEE.
    night = result.stdout.split("shift 2026-11-23/N")[1]
    row, time = [line for line in night.splitlines() if line.lstrip().startswith("press1")][:2]
    assert row.count("—") == 4 and "0.0 %" not in row
    assert "4h 00m" in time  # unknown
    assert "press1: unknown time" in night
    hourly = lineside(
        "oee",
        "-c",
        config_path,
        "--shift",
        "2026-11-23/A",
        "--line",
        "cement-mill-1",
        "--window",
        "hour",
    )
    assert hourly.returncode == 0, hourly.stderr
    assert hourly.stdout.count("hour 2026-11-23T0") == 2
    assert "mill1" in hourly.stdout and "line cement-mill-1" in hourly.stdout
    assert "press" not in hourly.stdout


def test_report_writes_the_html_file_and_prints_its_path(config_path: Path) -> None:
    out = config_path.parent / "shift.html"
    result = lineside("report", "-c", config_path, "--shift", "2026-11-23", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert "shift 2026-11-23/A: 2026-11-23 06:00 – 2026-11-23 08:00" in html
    kinds = re.findall(r'<svg [^>]*class="(\w+)"', html)
    # per shift (A and N): the machine states, a waterfall and a stop Pareto per machine and
    # line (5 rows), the hourly trend, OEE per machine; no shift before to compare with
    assert sorted(kinds) == sorted(2 * ["gantt", "trend", "bars", *5 * ["waterfall", "pareto"]])
    assert "<script" not in html
    assert len(re.findall(r'<rect class="segment"', html)) > 3, "the states are traced"
    for name in ("press1", "press2", "mill1", "line stamping/body-line-1"):
        assert name in html
    # The hourly trend: a point per machine and line for each of the two hours of A; none for
    # the hours of N, which had no readings (undefined, not 0).
    assert len(re.findall(r'<circle class="point"', html)) == 2 * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--machine", "press9"], "unknown machine 'press9'; the machines with KPIs: press1, "),
        (["--line", "shed-9"], "unknown line 'shed-9'; the lines: grinding/cement-mill-1, "),
        (["--shift", "2026-11-22"], "no shift on 2026-11-22 (Sunday)"),
        (["--shift", "2026-11-24"], "no shift on 2026-11-24 (Tuesday) (a day off)"),
        (["--shift", "last week"], "--shift 'last week': expected today, yesterday, current"),
        (["--window", "week"], "unknown window 'week'; choose shift, day or hour"),
    ],
)
def test_oee_refuses_bad_selections_with_exit_2(
    config_path: Path, args: list[str], message: str
) -> None:
    result = lineside("oee", "-c", config_path, *args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_no_store_and_no_kpi_section_exit_2(config_path: Path, tmp_path: Path) -> None:
    text = config_path.read_text(encoding="utf-8")
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(
        re.sub(r'data_dir = ".*?"', f'data_dir = "{tmp_path / "empty"}"', text), encoding="utf-8"
    )
    result = lineside("oee", "-c", elsewhere, "--shift", "2026-11-23")
    assert result.returncode == 2
    assert "no store here" in result.stderr
    assert not (tmp_path / "empty" / "lineside.db").exists()
    bare = tmp_path / "bare.toml"
    bare.write_text(
        'config_version = 1\n[agent]\nid = "e"\n[plant]\nsite = "s"\n', encoding="utf-8"
    )
    for command in (["oee"], ["report", "--out", tmp_path / "r.html"]):
        result = lineside(*command, "-c", bare, "--shift", "2026-11-23")
        assert result.returncode == 2
        assert "no machine has a [machines.kpi] section" in result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("config_version = 1\n", encoding="utf-8")
    assert lineside("oee", "-c", bad).returncode == 2


def test_an_unreadable_store_exits_1(config_path: Path, tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "lineside.db").write_bytes(b"not a database" * 100)
    text = config_path.read_text(encoding="utf-8")
    path = tmp_path / "broken.toml"
    path.write_text(
        re.sub(r'data_dir = ".*?"', f'data_dir = "{tmp_path / "broken"}"', text), encoding="utf-8"
    )
    result = lineside("oee", "-c", path, "--shift", "2026-11-23")
    assert result.returncode == 1
    assert result.stderr.startswith("lineside: ") and "the store is damaged" in result.stderr


def test_report_into_a_missing_directory_exits_2(config_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "r.html"
    result = lineside("report", "-c", config_path, "--shift", "2026-11-23", "--out", out)
    assert result.returncode == 2
    assert "no such directory" in result.stderr


def test_report_compares_the_shift_with_the_shifts_before(config_path: Path) -> None:
    out = config_path.parent / "night.html"
    result = lineside("report", "-c", config_path, "--shift", "2026-11-23/N", "--out", out)
    assert result.returncode == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    trends = re.findall(r'<svg [^>]*class="trend".*?</svg>', html, flags=re.S)
    [days] = [t for t in trends if "<title>OEE by shift</title>" in t]
    # shift A of the same date is the one before with figures; the night saw nothing ("—",
    # no point); the days before have no readings
    # the points, not the dashed target lines (the starter config sets targets)
    shown = r'class="(?:point|outlier)"[^>]*data-series="([^"]+)" data-value="([^"]+)"'
    points = dict(re.findall(shown, days))
    live = live_shift_oee(config_path)
    assert float(points["press1"]) == pytest.approx(live["press1"], abs=1e-9)
    assert float(points["line stamping/body-line-1"]) == pytest.approx(
        live["stamping/body-line-1"], abs=1e-9
    )
    assert "11-23/A" in days and "11-23/N" in days

"""`lineside service install`: the unit's content, and systemd's own check of it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli.app import app
from agent.service import UnitSpec, unit_text
from tests.agent.test_cli import HEAVY, imported_after

LINESIDE = Path(sys.executable).parent / "lineside"


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "etc" / "lineside.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        'config_version = 1\n[agent]\nid = "edge-7"\ndata_dir = "../var/data"\n'
        '[plant]\nsite = "s"\n' + extra,
        encoding="utf-8",
    )
    return path


def keys(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_the_unit_is_a_hardened_notify_service_with_a_watchdog() -> None:
    spec = UnitSpec(Path("/opt/lineside/bin/lineside"), Path("/etc/lineside/a b.toml"),
                    writable=(Path("/var/lib/lineside"), Path("/var/log/lineside")))  # fmt: skip
    unit = keys(unit_text(spec))
    assert unit["Type"] == ["notify"]
    assert unit["ExecStart"] == ['/opt/lineside/bin/lineside run --config "/etc/lineside/a b.toml"']
    assert unit["WatchdogSec"] == ["30"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP reloads the config
    assert unit["TimeoutStartSec"] == ["300"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["/var/lib/lineside /var/log/lineside"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["User"] == unit["Group"] == ["lineside"]
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == [""]
    assert unit["StandardError"] == ["journal"]
    assert unit["PrivateTmp"] == ["yes"]
    assert "SupplementaryGroups" not in unit


def test_a_data_directory_in_tmp_keeps_the_real_tmp() -> None:
    spec = UnitSpec(Path("/opt/lineside/bin/lineside"), Path("/etc/lineside/lineside.toml"),
                    writable=(Path("/tmp/trial/data"),))  # fmt: skip
    assert "PrivateTmp" not in keys(unit_text(spec))


def test_print_gives_a_unit_systemd_analyze_accepts(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    result = CliRunner().invoke(
        app, ["service", "install", "--print", "--config", str(config(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    unit = tmp_path / "lineside.service"
    unit.write_text(result.stdout, encoding="utf-8")
    assert (
        f"ExecStart={LINESIDE} run --config {tmp_path / 'etc' / 'lineside.toml'}" in result.stdout
    )
    assert f"ReadWritePaths={(tmp_path / 'var' / 'data').resolve()}" in result.stdout
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys too, naming them on stderr: both must be clean.
    assert verify.returncode == 0, verify.stderr
    assert "lineside.service" not in verify.stderr, verify.stderr


def test_systemd_analyze_would_catch_a_bad_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = unit_text(UnitSpec(LINESIDE, tmp_path / "c.toml", writable=(tmp_path,)))
    unit = tmp_path / "lineside.service"
    unit.write_text(text.replace("WatchdogSec=", "WatchdogSecs="), encoding="utf-8")
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key 'WatchdogSecs'" in verify.stderr


def test_install_writes_the_unit_and_says_what_to_do_next(tmp_path: Path) -> None:
    serial = (
        '[[machines]]\nname = "m1"\narea = "a"\nline = "l"\n'
        '[[sources]]\ntype = "modbus_rtu"\nname = "rtu"\nport = "/dev/ttyUSB0"\n'
        '[[sources.units]]\nunit_id = 1\nmachine = "m1"\n'
        '[[sources.units.tags]]\nname = "t"\naddress = "hr:0"\n'
        '[log]\nfile = "../var/log/lineside.log"\n'
    )
    out = tmp_path / "units"
    out.mkdir()
    result = CliRunner().invoke(
        app,
        ["service", "install", "--config", str(config(tmp_path, serial)), "--user", "plc",
         "--unit-dir", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    unit = keys((out / "lineside.service").read_text())
    assert unit["User"] == ["plc"]
    assert unit["SupplementaryGroups"] == ["dialout"]
    data, logs = (tmp_path / "var" / "data").resolve(), (tmp_path / "var" / "log").resolve()
    assert unit["ReadWritePaths"] == [f"{data} {logs}"]
    assert "useradd --system" in result.stderr
    assert "systemctl daemon-reload && systemctl enable --now lineside" in result.stderr


@pytest.mark.parametrize("user", ["root", "Bad User", "x;rm"])
def test_install_refuses_root_and_odd_user_names(tmp_path: Path, user: str) -> None:
    result = CliRunner().invoke(
        app, ["service", "install", "--print", "--config", str(config(tmp_path)), "--user", user]
    )
    assert result.exit_code == 2
    assert "--user: expected an unprivileged user name" in result.stderr


def test_install_into_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["service", "install", "--config", str(config(tmp_path)),
         "--unit-dir", str(tmp_path / "missing")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot write: No such file or directory (run as root, or use --print)" in result.stderr


def test_service_install_loads_no_protocol_library(tmp_path: Path) -> None:
    path = config(tmp_path)
    loaded = imported_after(
        "import sys\nsys.argv=['lineside','service','install','--print','-c',"
        f"{str(path)!r}]\nfrom agent.cli.app import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)

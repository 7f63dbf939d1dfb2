"""What the running agent keeps in memory: modules only some uses need are not imported.

Each probe runs in a fresh interpreter, so what an earlier test imported cannot hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def modules_after(code: str) -> set[str]:
    """Every module (full dotted names) imported by running `code` in a fresh interpreter."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_alarm_book_does_not_load_numpy_ma() -> None:
    # np.unique imports numpy.ma (1.3 MB) to look for masked arrays; the book never needs it.
    loaded = modules_after("from agent.alarms import AlarmBook\nAlarmBook([], 0)")
    assert "numpy" in loaded
    assert "numpy.ma" not in loaded


def test_the_status_page_loads_prometheus_client_only_for_a_scrape() -> None:
    loaded = modules_after("import agent.web.server")
    assert "agent.web.server" in loaded
    assert "prometheus_client" not in loaded


def test_the_run_path_does_not_load_rich() -> None:
    # rich is ~1.6 MB of a running agent's RSS; only commands that print tables use it. The
    # CLI, the runtime, the status page and the fleet status message load none of it.
    loaded = modules_after(
        "import agent.cli.app, agent.cli.run, agent.runtime, agent.web.server, agent.kpi.view\n"
        "from agent.cli.output import console, err_console\n"
        "from agent.fleet import agent_status\n"
        "agent_status({}, version='1', uptime_s=1.0)"
    )
    assert "agent.cli.app" in loaded
    assert "agent.fleet" in loaded
    assert not {m for m in loaded if m == "rich" or m.startswith("rich.")}


def test_the_console_is_made_on_first_use() -> None:
    loaded = modules_after("from agent.cli.output import console\nconsole.print('x', markup=False)")
    assert "rich.console" in loaded


def test_a_config_without_inspections_does_not_load_their_models() -> None:
    # vision/config.py's models cost ~0.6 MB of RSS: loaded for [[inspections]] or write_allow.
    root = Path(__file__).resolve().parents[2]
    loaded = modules_after(
        "from agent.config.loader import load_config\n"
        f"assert load_config({str(root / 'examples' / 'mqtt-sinks.toml')!r}).inspections == ()"
    )
    assert "agent.config.loader" in loaded
    assert "vision.config" not in loaded


def test_rich_takes_the_deferred_consoles() -> None:
    # Live and Progress enter the console they are given: the deferred one behaves as rich's.
    loaded = modules_after(
        "from rich.live import Live\nfrom rich.progress import Progress\n"
        "from agent.cli.output import console, err_console\n"
        "with Live('x', console=console, auto_refresh=False, transient=True):\n    pass\n"
        "with Progress(console=err_console, transient=True) as bar:\n"
        "    bar.add_task('t', total=1)\n"
    )
    assert "rich.live" in loaded


def test_the_running_agents_store_connections_keep_a_small_page_cache(tmp_path: Path) -> None:
    # SQLite's default cache (2,000 KiB a connection) filled with appended pages never read
    # again: ~1.8 MB of a W1 agent's RSS within 15 s. The store's two connections and the
    # writer's are made by schema.connect with 256 KiB (a negative cache_size is in KiB).
    from agent.store import Store, StoreWriter

    with Store(tmp_path) as store:
        writer = StoreWriter(tmp_path)
        try:
            connections = [store._conn, store._read, writer._conn]
            sizes = [c.execute("PRAGMA cache_size").fetchone()[0] for c in connections]
        finally:
            writer.close()
    assert sizes == [-256] * 3


def test_lineside_run_builds_the_click_command_of_run_only(tmp_path: Path) -> None:
    # typer makes click objects of every command of the app it runs, kept while the agent runs
    # (~0.5 MB); `lineside run` runs an app of that one command. The probe records what the
    # real typer builds for `run` and for another command.
    probe = (
        "import sys, typer.main\n"
        "built = []\n"
        "real = typer.main.get_command\n"
        "def recording(app):\n"
        "    built.append(real(app))\n"
        "    return built[-1]\n"
        "typer.main.get_command = recording\n"
        "from agent.cli import main\n"
        "for argv in (['run', '-c', sys.argv[1]], ['validate', sys.argv[1]]):\n"
        "    sys.argv = ['lineside', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(built[0].commands), len(built[1].commands))\n"
    )
    missing = str(tmp_path / "missing.toml")
    out = subprocess.run(
        [sys.executable, "-c", probe, missing], capture_output=True, text=True, timeout=60
    )
    assert "file not found" in out.stderr  # both commands ran, and said so
    only_run, every = out.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert only_run == "['run']"
    assert int(every) > 10


def test_the_run_only_app_answers_as_the_whole_cli(tmp_path: Path) -> None:
    # Same help, usage errors and exit codes for `lineside run ...` from either app.
    from typer.testing import CliRunner

    from agent.cli.app import app
    from agent.cli.root import run_app

    config = tmp_path / "lineside.toml"
    config.write_text("config_version = 1\n", encoding="utf-8")
    cases = [
        ["run", "--help"],
        ["run"],
        ["run", "--bogus"],
        ["run", "-c", str(config), "--duration", "abc"],
        ["run", "-c", str(config), "extra"],
        ["run", "-c", str(tmp_path / "missing.toml")],
        ["run", "-c", str(config)],
    ]
    for args in cases:
        whole = CliRunner().invoke(app, args, prog_name="lineside")
        only = CliRunner().invoke(run_app(), args, prog_name="lineside")
        assert (only.exit_code, only.output) == (whole.exit_code, whole.output), args
        assert whole.exit_code != 0 or args == ["run", "--help"]


def test_lineside_run_loads_no_other_commands_module(tmp_path: Path) -> None:
    # The other commands' modules (discover, opcua, plan, store ...) are ~0.4 MB of code.
    loaded = modules_after(
        "import sys\n"
        f"sys.argv = ['lineside', 'run', '-c', {str(tmp_path / 'missing.toml')!r}]\n"
        "from agent.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 2\n"
    )
    assert "agent.cli.run" in loaded
    assert not {"agent.cli.app", "agent.cli.discover", "agent.cli.opcua", "agent.cli.plan"} & loaded


def test_the_running_agent_loads_html_only_for_a_report_page() -> None:
    # `html` loads `html.entities` (0.3 MB of RSS); only the shift report pages escape text.
    loaded = modules_after("import agent.cli.run, agent.runtime, agent.web.server")
    assert "agent.web.reports" in loaded
    assert not {"html", "html.entities"} & loaded


def test_logging_without_a_file_does_not_load_logging_handlers() -> None:
    # logging.handlers (0.15 MB) is needed only for `[log] file`.
    loaded = modules_after(
        "import agent.cli.run, agent.runtime\n"
        "from agent.logs import LogSection, configure\n"
        "configure(LogSection())"
    )
    assert "agent.logs" in loaded
    assert "logging.handlers" not in loaded


def test_lineside_run_keeps_what_the_agent_is_built_of_out_of_the_collectors_passes(
    tmp_path: Path,
) -> None:
    # A full collection walks every object the collector tracks: with the modules, the config
    # and the tags in sight it held the loop 44 ms at 200 PLCs. `lineside run` freezes them.
    config = tmp_path / "lineside.toml"
    config.write_text(
        f'config_version = 1\n[agent]\nid = "t"\ndata_dir = "{tmp_path / "data"}"\n'
        '[web]\nenabled = false\n[plant]\nsite = "s"\n'
        '[[machines]]\nname = "m"\narea = "a"\nline = "l"\n'
        '[[sources]]\nname = "plc"\ntype = "modbus_tcp"\nhost = "127.0.0.1"\nport = 1\n'
        '[[sources.units]]\nunit_id = 1\nmachine = "m"\npoll_interval = "100ms"\n'
        '[[sources.units.tags]]\nname = "a"\naddress = "hr:0"\ntype = "uint16"\n',
        encoding="utf-8",
    )
    probe = (
        "import gc, sys\n"
        "from agent.cli import main\n"
        "sys.argv = ['lineside', 'run', '-c', sys.argv[1], '--duration', '0.5']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_freeze_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=60
    )
    assert int(out.stdout.strip().splitlines()[-1]) > 10_000, out.stderr[-2000:]  # 0 unfrozen

"""The CLI as a user runs it: a real `lineside` process, its exit code and its output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pymodbus", "asyncua", "onnxruntime", "cv2", "paho", "httpx", "serial", "snap7")
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.toml"))


def lineside(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def imported_after(code: str) -> set[str]:
    """Top-level modules imported by running `code` in a fresh interpreter."""
    names = "sorted({m.split('.')[0] for m in sys.modules})"
    probe = f"{code}\nimport sys, json\nprint(json.dumps({names}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_lists_commands_and_loads_no_protocol_library() -> None:
    result = lineside("--help")
    assert result.returncode == 0
    for command in ("validate", "init", "sim", "demo"):
        assert command in result.stdout
    loaded = imported_after(
        "import sys\nsys.argv=['lineside','--help']\nfrom agent.cli.app import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_validate_examples_loads_no_protocol_library(example: Path) -> None:
    loaded = imported_after(
        "import sys\nsys.argv=['lineside','validate',"
        f"{str(example)!r}]\nfrom agent.cli.app import app\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


def test_validate_bad_file_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"config_version = 1\n[agent\n")
    result = lineside("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: ")


def test_validate_missing_file(tmp_path: Path) -> None:
    result = lineside("validate", str(tmp_path / "none.toml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "none.toml") in result.stderr


def test_validate_refuses_http_secrets_without_showing_them(tmp_path: Path) -> None:
    path = tmp_path / "mes.toml"
    path.write_text(
        'config_version = 1\n[agent]\nid = "edge-1"\n[plant]\nsite = "suzhou"\n'
        '[[sinks]]\nname = "mes"\ntype = "http"\n'
        'url = "https://op:hunter2-pw@mes.local/api?apikey=key-in-url"\n'
        'headers = { X-Api-Key = "key-in-header" }\n'
        '[[sinks]]\nname = "mes2"\ntype = "http"\nurl = "https://mes.local/api?token=t0k3n-q"\n',
        encoding="utf-8",
    )
    result = lineside("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: sinks[0].url: a user name or password in the url is refused: set username "
        "with password_env or password_file (basic auth), or token_env (bearer token)",
        f"{path}: sinks[0].headers.X-Api-Key: the header X-Api-Key looks like a secret and is "
        "refused in the config file: read it from an environment variable: header_env = { "
        'X-Api-Key = "ENV_VAR" }',
        f"{path}: sinks[1].url: the query parameter 'token' looks like a secret and is refused: "
        "send it as a header from an environment variable, header_env = { X-Api-Key = "
        '"MES_API_KEY" }, or use token_env (bearer token)',
    ]
    for secret in ("hunter2-pw", "key-in-url", "key-in-header", "t0k3n-q"):
        assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize("profile", ["press", "cement", "loom"])
def test_init_writes_a_config_that_validates(tmp_path: Path, profile: str) -> None:
    out = tmp_path / f"{profile}.toml"
    result = lineside("init", "--profile", profile, "--out", str(out))
    assert result.returncode == 0, result.stderr
    checked = lineside("validate", str(out), "--json")
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)
    assert summary  # the summary names machines and tags; test_starter checks the contents


def test_init_refuses_to_overwrite_and_unknown_profile(tmp_path: Path) -> None:
    out = tmp_path / "x.toml"
    out.write_text("keep me")
    result = lineside("init", "--profile", "press", "--out", str(out))
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert out.read_text() == "keep me"
    result = lineside("init", "--profile", "lathe")
    assert result.returncode == 2
    assert "unknown profile 'lathe'; choose one of: press, cement, loom" in result.stderr


def test_init_to_stdout() -> None:
    result = lineside("init", "--profile", "cement")
    assert result.returncode == 0
    assert "config_version = 1" in result.stdout


def test_init_for_mc_writes_a_config_whose_plan_uses_mc_reads(tmp_path: Path) -> None:
    out = tmp_path / "press-mc.toml"
    result = lineside("init", "--profile", "press", "--protocol", "mc", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert 'type = "mc"' in out.read_text()
    plan = lineside("plan", "-c", str(out), "--json")
    assert plan.returncode == 0, plan.stderr
    rows = json.loads(plan.stdout)
    assert [r["source"] for r in rows] == ["press1-plc", "press2-plc"]
    assert all(r["requests"] == 1 and r["reads"][0].startswith("0403") for r in rows)
    wrong = lineside("init", "--profile", "press", "--protocol", "profinet")
    assert wrong.returncode == 2
    assert "unknown protocol 'profinet'; choose one of: modbus, s7, mc" in wrong.stderr


def test_validate_takes_the_config_as_c_too(tmp_path: Path) -> None:
    example = next(e for e in EXAMPLES if e.name == "press-line.toml")
    by_option = lineside("validate", "-c", str(example), "--json")
    by_position = lineside("validate", str(example), "--json")
    assert by_option.returncode == 0, by_option.stderr
    assert json.loads(by_option.stdout) == json.loads(by_position.stdout)
    neither = lineside("validate")
    both = lineside("validate", str(example), "-c", str(example))
    for result in (neither, both):
        assert result.returncode == 2
        assert result.stderr.strip() == (
            "give the config file once: lineside validate -c FILE (or validate FILE)"
        )


def test_help_shows_flags_without_a_type_and_brackets_as_written() -> None:
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    helps = [
        subprocess.run(
            [sys.executable, "-m", "agent", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        ).stdout
        for args in ([], ["discover", "opcua"], ["run"], ["read"])
    ]
    assert all("<bool>" not in text for text in helps), helps
    assert "connect as this [[sources]] entry does" in helps[1]
    assert "(default: [log] level)" in helps[2]
    assert 'DURATION  Stop after this long ("30s").' in helps[2]


def test_a_duration_on_the_command_line_is_written_as_in_the_config() -> None:
    result = lineside("sim", "--ephemeral", "--no-opcua", "--no-rtu", "--duration", "1x")
    assert result.returncode == 2
    assert "Invalid value for '--duration': bad duration '1x'" in result.stderr
    result = lineside("sim", "--ephemeral", "--no-opcua", "--no-rtu", "--duration", "200ms")
    assert result.returncode == 0, result.stderr

"""`lineside certs create`, `lineside discover opcua` and secrets, as a user runs them."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agent.config import load_config
from firmware_sim.opcua_server import SimOpcUaServer
from firmware_sim.profile import profile_from_toml
from tests.connectors.opcua.sim import Pki, TableMachine, make_pki

module_loop = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "Cli-pw-8842-never-shown"
KEY_PASSPHRASE = "Cli-kp-1234-never-shown"

PROFILE = profile_from_toml(
    'kind = "press"\ndescription = "d"\n'
    '[[tags]]\nname = "count"\naddress = "hr:0"\ntype = "uint16"\n'
    '[[tags]]\nname = "power"\naddress = "hr:1"\ntype = "float64"\n'
    '[[tags]]\nname = "die"\naddress = "hr:4"\ntype = "string"\nlength = 4\n'
)


def machine(name: str) -> TableMachine:
    return TableMachine(name, PROFILE, {"count": 7, "power": 1.25, "die": "D7"})


async def lineside(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **(env or {})},
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[SimOpcUaServer]:
    async with SimOpcUaServer([machine("press1")]) as s:
        yield s


HEAD = (
    "config_version = 1\n[agent]\nid = 'edge-1'\n[plant]\nsite = 'test'\n"
    "[[machines]]\nname = 'press1'\narea = 'a'\nline = 'l'\nkind = 'press'\n"
)


def source(endpoint: str, extra: str = "") -> str:
    return (
        f"[[sources]]\nname = 'ua'\ntype = 'opcua'\nendpoint = '{endpoint}'\n"
        f"machine = 'press1'\n{extra}"
    )


# -- certs create ---------------------------------------------------------------------------


@module_loop
async def test_certs_create_writes_a_private_key_and_prints_the_uri(tmp_path: Path) -> None:
    uri = "urn:acme:lineside:edge-1"
    out_dir = tmp_path / "pki" / "own"
    code, out, err = await lineside(
        "certs", "create", "--out", str(out_dir), "--uri", uri, "--days", "30"
    )
    assert code == 0, err
    assert out.strip() == uri
    assert "thumbprint" in err and str(out_dir / "cert.der") in err
    assert stat.S_IMODE((out_dir / "key.pem").stat().st_mode) == 0o600
    assert (out_dir / "cert.der").stat().st_size > 500

    code, out, err = await lineside("certs", "create", "--out", str(out_dir), "--uri", uri)
    assert (code, out) == (2, "")
    assert err.strip() == f"{out_dir / 'cert.der'} exists; pass --force to replace it"

    code, _, err = await lineside("certs", "create", "--out", str(tmp_path), "--uri", "edge 1")
    assert code == 2 and "is not a URI" in err and len(err.strip().splitlines()) == 1


@module_loop
async def test_certs_create_encrypts_the_key_with_a_passphrase_from_the_environment(
    tmp_path: Path,
) -> None:
    code, _, err = await lineside(
        "certs",
        "create",
        "--out",
        str(tmp_path),
        "--uri",
        "urn:x:y",
        "--key-password-env",
        "KP",
        env={"KP": KEY_PASSPHRASE},
    )
    assert code == 0, err
    assert KEY_PASSPHRASE not in err
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "key.pem").read_bytes()
    code, _, err = await lineside(
        "certs",
        "create",
        "--out",
        str(tmp_path / "b"),
        "--uri",
        "urn:x:y",
        "--key-password-env",
        "KP",
    )
    assert code == 2 and "KP is unset" in err


# -- discover opcua -------------------------------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_discover_writes_a_csv_that_loads_straight_into_a_config(
    server: SimOpcUaServer, tmp_path: Path
) -> None:
    code, out, err = await lineside(
        "discover", "opcua", server.endpoint, "--out", str(tmp_path / "tags.csv")
    )
    assert code == 0, err
    assert "3 variables" in out and "2 tags" in out and "left out: 1 type String" in out
    config = tmp_path / "lineside.toml"
    config.write_text(HEAD + source(server.endpoint, "tags_file = 'tags.csv'\n"))
    code, out, err = await lineside("validate", str(config), "--json")
    assert code == 0, err
    loaded = load_config(config)
    (src,) = loaded.sources
    ns = server.namespace_index
    assert [(t.name, t.node_id, t.type) for t in src.tags] == [  # type: ignore[attr-defined]
        ("press1_count", f"ns={ns};s=press1.count", "uint16"),
        ("press1_power", f"ns={ns};s=press1.power", "float64"),
    ]


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_discover_writes_one_csv_per_machine(tmp_path: Path) -> None:
    async with SimOpcUaServer([machine("press1"), machine("press2")]) as two:
        code, out, err = await lineside(
            "discover", "opcua", two.endpoint, "--out", str(tmp_path / "tags.csv")
        )
        ns = two.namespace_index
    assert code == 0, err
    assert names_in(tmp_path) == ["tags_press1.csv", "tags_press2.csv"]
    for name in ("press1", "press2"):
        rows = list(csv.DictReader((tmp_path / f"tags_{name}.csv").open(encoding="utf-8")))
        assert [r["node_id"] for r in rows] == [
            f"ns={ns};s={name}.count",
            f"ns={ns};s={name}.power",
        ]
        assert f"wrote {tmp_path / f'tags_{name}.csv'}: 2 tags" in out


@module_loop
async def test_discover_toml_pastes_under_a_source(server: SimOpcUaServer, tmp_path: Path) -> None:
    ns = server.namespace_index
    out_file = tmp_path / "tags.toml"
    code, out, err = await lineside(
        "discover",
        "opcua",
        server.endpoint,
        "--root",
        f"ns={ns};s=press1",
        "--depth",
        "1",
        "--format",
        "toml",
        "--out",
        str(out_file),
        "--json",
    )
    assert code == 0, err
    assert err == ""  # no progress bar with --json
    report = json.loads(out)
    assert report["tags"] == 2 and len(report["variables"]) == 3
    config = tmp_path / "lineside.toml"
    config.write_text(HEAD + source(server.endpoint) + out_file.read_text())
    (src,) = load_config(config).sources
    assert [t.name for t in src.tags] == ["count", "power"]  # type: ignore[attr-defined]


@module_loop
async def test_discover_a_dead_endpoint_exits_1_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code, out, err = await lineside("discover", "opcua", f"opc.tcp://127.0.0.1:{port}")
    assert (code, out) == (1, "")
    (line,) = err.strip().splitlines()
    assert line.startswith(f"lineside: cannot connect to opc.tcp://127.0.0.1:{port}: ")


@module_loop
@pytest.mark.slow
async def test_discover_a_silent_endpoint_times_out_with_exit_1() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, _, err = await lineside(
            "discover", "opcua", f"opc.tcp://127.0.0.1:{port}", "--timeout", "500ms"
        )
    assert code == 1
    assert err.strip().splitlines() == [
        f"lineside: cannot connect to opc.tcp://127.0.0.1:{port}: timed out"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["host"], 'expected an endpoint like "opc.tcp://host:4840"'),
        (["opc.tcp://h:1", "--root", "press1"], "--root: expected a node id"),
        (["opc.tcp://h:1", "--depth", "0"], "--depth must be between 1 and"),
        (["opc.tcp://h:1", "--format", "xml"], "--format must be csv or toml"),
        (["opc.tcp://h:1", "--out", "/no/such/dir/t.csv"], "no such directory"),
    ],
)
@module_loop
@pytest.mark.slow
async def test_bad_discover_arguments_exit_2(args: list[str], message: str) -> None:
    code, out, err = await lineside("discover", "opcua", *args)
    assert (code, out) == (2, "")
    assert message in err and len(err.strip().splitlines()) == 1


# -- discover opcua through a source's security -----------------------------------------------

UA_PASSWORD = "Disc-cli-pw-7310-never-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "urn:lineside:test:cli", KEY_PASSPHRASE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(pki: Pki) -> AsyncIterator[SimOpcUaServer]:
    """Basic256Sha256 SignAndEncrypt only: no None endpoint, no anonymous login."""
    server = SimOpcUaServer(
        [machine("press1")],
        security="sign_and_encrypt",
        cert_dir=pki.dir / "server",
        users={"operator": UA_PASSWORD},
    )
    async with server:
        yield server


def secure_config(folder: Path, server: SimOpcUaServer, pki: Pki, tags: str, trust: bool) -> Path:
    """A config whose source `ua` reaches `server` as the agent would: certificate, key, login."""
    (folder / "kp").write_text(KEY_PASSPHRASE)
    (folder / "trusted").mkdir(exist_ok=True)
    if trust:  # the plant engineer copied the server's certificate into the trust folder
        assert server.server_certificate is not None
        (folder / "trusted" / "server.der").write_bytes(server.server_certificate.read_bytes())
    extra = (
        "security_policy = 'Basic256Sha256'\nsecurity_mode = 'SignAndEncrypt'\n"
        f"certificate = '{pki.cert}'\nprivate_key = '{pki.key}'\n"
        "private_key_password_file = 'kp'\ntrust_dir = 'trusted'\n"
        "username = 'operator'\npassword_env = 'UA_PASSWORD'\n" + tags  # subscribe mode
    )
    config = folder / "lineside.toml"
    config.write_text(
        HEAD
        + source(server.endpoint, extra)
        + "[[sources]]\nname = 'plc'\ntype = 'modbus_tcp'\nhost = '127.0.0.1'\n"
        "[[sources.units]]\nunit_id = 1\nmachine = 'press1'\n"
        "[[sources.units.tags]]\nname = 'state'\naddress = 'hr:0'\n"
    )
    return config


# Until its tags are discovered a source declares one: the server's clock (CurrentTime).
CLOCK = "[[sources.tags]]\nname = 'clock'\nnode_id = 'i=2258'\n"


@module_loop
@pytest.mark.slow
async def test_discover_through_a_secure_source_writes_tags_the_agent_then_reads(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    config = secure_config(tmp_path, secured, pki, CLOCK, trust=True)
    env = {"UA_PASSWORD": UA_PASSWORD}
    code, out, err = await lineside("discover", "opcua", secured.endpoint, env=env)
    assert code == 1  # anonymous, policy None: this server offers neither
    outputs = [out + err]
    code, out, err = await lineside(
        "discover",
        "opcua",
        "-c",
        str(config),
        "--source",
        "ua",
        "-o",
        "tags.csv",
        env=env,
        cwd=tmp_path,
    )
    assert code == 0, err
    outputs.append(out + err)
    assert out.startswith(f"{secured.endpoint} (Basic256Sha256/SignAndEncrypt): 3 variables")
    assert "2 tags; left out: 1 type String" in out
    csv_text = (tmp_path / "tags.csv").read_text()
    outputs.append(csv_text)

    # The tag list replaces the placeholder: the config loads, and the agent reads through it.
    config = secure_config(tmp_path, secured, pki, "tags_file = 'tags.csv'\n", trust=True)
    (src, _) = load_config(config).sources
    ns = secured.namespace_index
    assert [(t.name, t.node_id) for t in src.tags] == [  # type: ignore[attr-defined]
        ("press1_count", f"ns={ns};s=press1.count"),
        ("press1_power", f"ns={ns};s=press1.power"),
    ]
    code, out, err = await lineside(
        "read", "-c", str(config), "--tag", "*press1_*", "--json", env=env
    )
    assert code == 0, err
    outputs.append(out + err)
    readings = {r["path"].rsplit("/", 1)[-1]: r["value"] for r in json.loads(out)["readings"]}
    assert readings == {"press1_count": 7, "press1_power": 1.25}

    code, out, err = await lineside(
        "discover", "opcua", "-c", str(config), "--source", "ua", "--json", env=env
    )
    assert code == 0, err
    outputs.append(out + err)
    report = json.loads(out)
    assert (report["source"], report["security"]) == ("ua", "Basic256Sha256/SignAndEncrypt")
    for text in outputs:
        assert UA_PASSWORD not in text and KEY_PASSPHRASE not in text


@module_loop
@pytest.mark.slow
async def test_discover_refuses_an_untrusted_server_like_the_agent(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    config = secure_config(tmp_path, secured, pki, CLOCK, trust=False)
    env = {"UA_PASSWORD": UA_PASSWORD}
    code, out, err = await lineside(
        "discover", "opcua", "-c", str(config), "--source", "ua", env=env
    )
    assert (code, out) == (1, "")
    (line,) = err.strip().splitlines()
    assert line.startswith("lineside: server certificate not trusted: urn:lineside:sim:server, ")
    assert f"put it in {tmp_path / 'trusted'}" in line
    assert not any((tmp_path / "trusted").iterdir())  # never trusted behind the user's back

    # A wrong password: the agent's refusal, and the password nowhere in what is shown.
    config = secure_config(tmp_path, secured, pki, CLOCK, trust=True)
    wrong = "Wrong-cli-pw-4040-never-shown"
    code, out, err = await lineside(
        "discover", "opcua", "-c", str(config), "--source", "ua", env={"UA_PASSWORD": wrong}
    )
    assert (code, out) == (1, "")
    assert err.strip() == (
        f"lineside: ua ({secured.endpoint}): the server refused user operator "
        "(BadUserAccessDenied): wrong user name or password?"
    )
    assert wrong not in err and KEY_PASSPHRASE not in err


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def strict(pki: Pki) -> AsyncIterator[SimOpcUaServer]:
    """Trusts no client certificate yet: the normal first day with strict trust."""
    (pki.dir / "strict-trusts").mkdir()
    server = SimOpcUaServer(
        [machine("press1")],
        security="sign_and_encrypt",
        cert_dir=pki.dir / "strict",
        users={"operator": UA_PASSWORD},
        trusted_clients=pki.dir / "strict-trusts",
    )
    async with server:
        yield server


@module_loop
@pytest.mark.slow
async def test_read_and_discover_say_the_server_rejected_our_certificate_in_one_line(
    strict: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    config = secure_config(tmp_path, strict, pki, CLOCK, trust=True)
    env = {"UA_PASSWORD": UA_PASSWORD}
    why = (
        f"ua ({strict.endpoint}): the server rejected our certificate (it refused the secure "
        f"channel): have it trust {pki.cert}"
    )
    code, out, err = await lineside("read", "-c", str(config), "--tag", "clock", env=env)
    assert code == 1
    assert err.strip() == f"ua: {why}"
    assert "bad" in out  # the tag, read bad
    code, out, err = await lineside(
        "discover", "opcua", "-c", str(config), "--source", "ua", env=env
    )
    assert (code, out) == (1, "")
    assert err.strip() == f"lineside: {why}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "nope"], "--source: no source named 'nope'; its OPC UA sources: ua"),
        (
            ["--source", "plc"],
            "--source plc: a modbus_tcp source, not OPC UA; its OPC UA sources: ua",
        ),
        (["--source", "ua", "host:4840"], 'expected an endpoint like "opc.tcp://host:4840"'),
    ],
)
@module_loop
@pytest.mark.slow
async def test_bad_source_arguments_exit_2(
    args: list[str], message: str, pki: Pki, tmp_path: Path
) -> None:
    config = tmp_path / "lineside.toml"
    config.write_text(
        HEAD
        + source("opc.tcp://127.0.0.1:4840", CLOCK)
        + "[[sources]]\nname = 'plc'\ntype = 'modbus_tcp'\nhost = '127.0.0.1'\n"
        "[[sources.units]]\nunit_id = 1\nmachine = 'press1'\n"
        "[[sources.units.tags]]\nname = 'state'\naddress = 'hr:0'\n"
    )
    code, out, err = await lineside("discover", "opcua", "-c", str(config), *args)
    assert (code, out) == (2, "")
    (line,) = err.strip().splitlines()
    assert message in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["opcua", "--source", "ua"], "--config and --source go together"),
        (["opcua", "-c", "lineside.toml"], "--config and --source go together"),
        (["opcua"], 'give an endpoint ("opc.tcp://host:4840") or -c CONFIG --source NAME'),
        (["opcua", "-c", "/no/such.toml", "--source", "ua"], "/no/such.toml: file not found"),
        (["modbus"], "discover modbus needs a target"),
        (["modbus", "h", "-c", "x.toml"], "--config and --source are for discover opcua"),
    ],
)
@module_loop
@pytest.mark.slow
async def test_source_options_misused_exit_2(args: list[str], message: str) -> None:
    code, out, err = await lineside("discover", *args)
    assert (code, out) == (2, "")
    (line,) = err.strip().splitlines()
    assert message in line


# -- secrets stay secret --------------------------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_passwords_appear_in_no_output_of_validate_or_a_failing_read(
    tmp_path: Path,
) -> None:
    made_code, _, err = await lineside(
        "certs",
        "create",
        "--out",
        str(tmp_path / "own"),
        "--uri",
        "urn:lineside:test:cli",
        "--key-password-env",
        "KP",
        env={"KP": KEY_PASSPHRASE},
    )
    assert made_code == 0, err
    (tmp_path / "kp").write_text(KEY_PASSPHRASE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        extra = (
            "security_policy = 'Basic256Sha256'\nsecurity_mode = 'SignAndEncrypt'\n"
            "certificate = 'own/cert.der'\nprivate_key = 'own/key.pem'\n"
            "private_key_password_file = 'kp'\nusername = 'operator'\n"
            "password_env = 'UA_PASSWORD'\n"
            "[[sources.tags]]\nname = 'count'\nnode_id = 'ns=2;s=press1.count'\n"
        )
        config = tmp_path / "lineside.toml"
        config.write_text(HEAD + source(f"opc.tcp://127.0.0.1:{port}", extra))
        env = {"UA_PASSWORD": PASSWORD}
        outputs = []
        for args in (["validate", str(config)], ["validate", str(config), "--json"]):
            code, out, err = await lineside(*args, env=env)
            assert code == 0, err
            outputs.append(out + err)
        code, out, err = await lineside("read", "-c", str(config), env=env)
        assert code == 1  # nobody listens: the read fails
        outputs.append(out + err)
    for text in outputs:
        assert PASSWORD not in text and KEY_PASSPHRASE not in text
    assert os.environ.get("UA_PASSWORD") is None

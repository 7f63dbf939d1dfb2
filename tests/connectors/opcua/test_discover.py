"""`connectors.opcua.discover`: browsing the simulated server, and the tag list it makes."""

from __future__ import annotations

import asyncio
import socket
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua

from agent.config import load_config
from agent.errors import ConnectError, RequestTimeout
from connectors.opcua import discover as d
from connectors.opcua.config import OpcUaSourceConfig, OpcUaTag
from connectors.opcua.trust import UntrustedCertificate
from firmware_sim.opcua_server import SimOpcUaServer
from firmware_sim.profile import profile_from_toml
from tests.connectors.opcua.sim import Pki, TableMachine, make_pki

module_loop = pytest.mark.asyncio(loop_scope="module")

PROFILE = profile_from_toml(
    'kind = "press"\ndescription = "d"\n'
    '[[tags]]\nname = "count"\naddress = "hr:0"\ntype = "uint16"\nunit = "pcs"\n'
    '[[tags]]\nname = "power"\naddress = "hr:1"\ntype = "float32"\n'
    '[[tags]]\nname = "running"\naddress = "co:0"\n'
    '[[tags]]\nname = "die"\naddress = "hr:4"\ntype = "string"\nlength = 4\n'
)


def machine(name: str) -> TableMachine:
    return TableMachine(name, PROFILE, {"count": 1, "power": 2.5, "running": True, "die": "D7"})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[SimOpcUaServer]:
    async with SimOpcUaServer([machine("press1"), machine("press2")]) as s:
        await s.add_variable("press1", "profile", ua.Variant([1.0, 2.0], ua.VariantType.Double))
        yield s


@module_loop
@pytest.mark.slow
async def test_discover_finds_every_variable_with_type_access_and_path(
    server: SimOpcUaServer,
) -> None:
    seen: list[tuple[str, int, int | None]] = []
    result = await d.discover(server.endpoint, time_limit=5.0, progress=lambda *a: seen.append(a))
    ns = server.namespace_index
    by_id = {v.node_id: v for v in result.variables}
    # Profile tags of both machines and the added array; no Server diagnostics (namespace 0),
    # no EngineeringUnits properties.
    assert set(by_id) == {
        f"ns={ns};s=press{m}.{t}" for m in (1, 2) for t in ("count", "power", "running", "die")
    } | {f"ns={ns};s=press1.profile"}
    count = by_id[f"ns={ns};s=press1.count"]
    assert (count.path, count.data_type, count.access) == (("press1", "count"), "UInt16", "read")
    assert by_id[f"ns={ns};s=press2.power"].data_type == "Float"
    assert by_id[f"ns={ns};s=press1.running"].data_type == "Boolean"
    assert by_id[f"ns={ns};s=press1.profile"].array
    assert seen[0][0].startswith("connecting") and seen[-1] == ("done", 9, 9)

    rows, left_out = d.tag_rows(result.variables)
    assert left_out == Counter({"type String": 2, "array of unknown length": 1})
    names = {r["name"]: r for r in rows}
    assert set(names) == {f"press{m}_{t}" for m in (1, 2) for t in ("count", "power", "running")}
    assert names["press1_count"] == {
        "name": "press1_count",
        "node_id": f"ns={ns};s=press1.count",
        "type": "uint16",
        "array_length": "",
        "description": "press1/count (UInt16, read)",
    }
    for row in rows:  # every row is a valid tag as the config reads it
        OpcUaTag.model_validate({k: v for k, v in row.items() if v})


@module_loop
async def test_root_and_depth_limit_the_browse(server: SimOpcUaServer) -> None:
    ns = server.namespace_index
    one = await d.discover(server.endpoint, root=f"ns={ns};s=press2", depth=1, time_limit=5.0)
    assert {v.path for v in one.variables} == {("count",), ("power",), ("running",), ("die",)}
    shallow = await d.discover(server.endpoint, depth=1, time_limit=5.0)
    assert shallow.variables == ()  # depth 1 below Objects: the machine folders only


@module_loop
async def test_a_dead_endpoint_is_a_clear_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(ConnectError, match=f"cannot connect to opc.tcp://127.0.0.1:{port}"):
            await d.discover(f"opc.tcp://127.0.0.1:{port}", time_limit=2.0)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a stalled server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@module_loop
async def test_a_silent_server_times_out(silent_listener: int) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(RequestTimeout, match="timed out"):
        await d.discover(f"opc.tcp://127.0.0.1:{silent_listener}", time_limit=0.5)
    assert loop.time() - start < 3.0


@pytest.mark.parametrize("bad", ["press1", "ns=x;s=a", ""])
def test_bad_root_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--root"):
        d.parse_node_id(bad)


def test_root_names_and_depth_bounds() -> None:
    assert d.parse_node_id("Objects") == ua.NodeId(ua.Int32(85))
    assert d.parse_node_id("i=2253") == ua.NodeId(ua.Int32(2253))
    for bad in (0, d.MAX_DEPTH + 1):
        with pytest.raises(ValueError, match="--depth"):
            d.check_depth(bad)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (("press1", "count"), "press1_count"),
        (("Line 1", "Motor.Speed (rpm)"), "Line_1_Motor_Speed_rpm"),
        (("..",), "tag"),
    ],
)
def test_tag_name(path: tuple[str, ...], name: str) -> None:
    assert d.tag_name(path) == name


def test_variable_from_attributes() -> None:
    v = d.variable_from("ns=2;s=a", ("a",), ua.NodeId(ua.Int32(11)), 3, 1, [4])
    assert (v.data_type, v.readable, v.writable, v.array_length, v.access) == (
        "Double",
        True,
        True,
        4,
        "read/write",
    )
    unreadable = d.variable_from("ns=2;s=b", ("b",), ua.NodeId(ua.Int32(6)), 2, -1, None)
    assert d.why_left_out(unreadable) == "not readable"
    custom = d.variable_from(
        "ns=2;s=c", ("c",), ua.NodeId(ua.Int32(3001), ua.Int16(2)), 1, -1, None
    )
    assert d.why_left_out(custom) == "type ns=2;i=3001"


def test_rows_keep_names_unique_and_arrays_declared() -> None:
    a = d.variable_from("ns=2;s=a.b", ("a", "b"), ua.NodeId(ua.Int32(6)), 1, -1, None)
    b = d.variable_from("ns=2;s=a_b", ("a_b",), ua.NodeId(ua.Int32(6)), 1, -1, None)
    arr = d.variable_from("ns=2;s=arr", ("arr",), ua.NodeId(ua.Int32(10)), 1, 1, [3])
    rows, left_out = d.tag_rows([a, b, arr])
    assert [r["name"] for r in rows] == ["a_b", "a_b_2", "arr"]
    assert rows[2]["array_length"] == "3" and rows[2]["type"] == "float32"
    assert not left_out


def test_toml_output_parses_to_the_same_rows() -> None:
    v = d.variable_from('ns=2;s=q"uote\\d', ("q",), ua.NodeId(ua.Int32(1)), 1, -1, None)
    rows, _ = d.tag_rows([v])
    text = d.to_toml(rows, "heading\nsecond line")
    assert text.startswith("# heading\n# second line\n")
    (tag,) = tomllib.loads(text)["sources"]["tags"]
    assert tag == {k: v for k, v in rows[0].items() if v}


# -- through a source's security (the agent's session) --------------------------------------

USER, PASSWORD = "operator", "Disc-pw-5521-not-shown"
KEY_PASSPHRASE = "Disc-kp-9090-not-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "urn:lineside:test:discover", KEY_PASSPHRASE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(pki: Pki) -> AsyncIterator[SimOpcUaServer]:
    """Basic256Sha256 SignAndEncrypt only (no None endpoint), user logins only."""
    server = SimOpcUaServer(
        [machine("press1")],
        security="sign_and_encrypt",
        cert_dir=pki.dir / "server",
        users={USER: PASSWORD},
    )
    async with server:
        yield server


@pytest.fixture
def password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINESIDE_TEST_DISCOVER_PASSWORD", PASSWORD)


def secure_source(
    server: SimOpcUaServer, pki: Pki, trust: Path, **changes: Any
) -> OpcUaSourceConfig:
    fields: dict[str, Any] = {
        "type": "opcua",
        "name": "press",
        "endpoint": server.endpoint,
        "machine": "press1",
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": pki.cert,
        "private_key": pki.key,
        "private_key_password_file": pki.passphrase_file,
        "trust_dir": trust,
        "username": USER,
        "password_env": "LINESIDE_TEST_DISCOVER_PASSWORD",
        "timeout": "5s",
        "tags": [{"name": "clock", "node_id": "i=2258"}],
    }
    fields.update(changes)
    return OpcUaSourceConfig.model_validate(fields)


def trusting(server: SimOpcUaServer, folder: Path) -> Path:
    """A trust folder holding the server's certificate, as a plant engineer would set it up."""
    assert server.server_certificate is not None
    folder.mkdir(parents=True)
    (folder / "server.der").write_bytes(server.server_certificate.read_bytes())
    return folder


@module_loop
@pytest.mark.slow
async def test_discover_through_a_secure_source_with_a_login(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path, password_env: None
) -> None:
    with pytest.raises(ConnectError):  # anonymous and policy None: nothing to browse with
        await d.discover(secured.endpoint, time_limit=5.0)
    source = secure_source(secured, pki, trusting(secured, tmp_path / "trusted"))
    seen: list[str] = []
    result = await d.discover_source(source, progress=lambda what, *_: seen.append(what))
    ns = secured.namespace_index
    assert {v.node_id for v in result.variables} == {
        f"ns={ns};s=press1.{t}" for t in ("count", "power", "running", "die")
    }
    assert result.security == "Basic256Sha256/SignAndEncrypt"
    assert seen[0] == f"connecting to {secured.endpoint} as source press"
    line = d.summary(result, 3, Counter())
    assert line.startswith(f"{secured.endpoint} (Basic256Sha256/SignAndEncrypt): 4 variables")


@module_loop
async def test_discover_source_refuses_as_the_agent_does(
    secured: SimOpcUaServer,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    password_env: None,
) -> None:
    empty = tmp_path / "trusted"
    with pytest.raises(UntrustedCertificate, match=r"^server certificate not trusted: "):
        await d.discover_source(secure_source(secured, pki, empty))
    trusted = trusting(secured, tmp_path / "pki" / "trusted")
    monkeypatch.setenv("LINESIDE_TEST_DISCOVER_PASSWORD", "wrong")
    with pytest.raises(ConnectError) as caught:
        await d.discover_source(secure_source(secured, pki, trusted))
    assert str(caught.value) == (
        f"press ({secured.endpoint}): the server refused user {USER} (BadUserAccessDenied): "
        "wrong user name or password?"
    )


def test_pick_source_names_the_opcua_sources(tmp_path: Path) -> None:
    config = tmp_path / "lineside.toml"
    config.write_text(
        "config_version = 1\n[agent]\nid = 'edge-1'\n[plant]\nsite = 's'\n"
        "[[machines]]\nname = 'press1'\narea = 'a'\nline = 'l'\nkind = 'press'\n"
        "[[sources]]\nname = 'plc'\ntype = 'modbus_tcp'\nhost = '127.0.0.1'\n"
        "[[sources.units]]\nunit_id = 1\nmachine = 'press1'\n"
        "[[sources.units.tags]]\nname = 'count'\naddress = 'hr:0'\n"
        "[[sources]]\nname = 'ua'\ntype = 'opcua'\nendpoint = 'opc.tcp://h:4840'\n"
        "machine = 'press1'\n[[sources.tags]]\nname = 'clock'\nnode_id = 'i=2258'\n"
    )
    sources = load_config(config).sources
    assert d.pick_source(sources, "ua").endpoint == "opc.tcp://h:4840"
    with pytest.raises(ValueError) as caught:
        d.pick_source(sources, "plc")
    assert (
        str(caught.value) == "--source plc: a modbus_tcp source, not OPC UA; its OPC UA sources: ua"
    )
    with pytest.raises(ValueError) as caught:
        d.pick_source(sources, "UA")
    assert str(caught.value) == "--source: no source named 'UA'; its OPC UA sources: ua"
    with pytest.raises(ValueError, match=r"it has no OPC UA source$"):
        d.pick_source(sources[:1], "ua")

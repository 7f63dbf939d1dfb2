"""The simulated plant's OPC UA server, read by a real asyncua Client over real sockets on port 0.

Servers are module fixtures on one module event loop: asyncua's server takes over a second to
load its standard address space, and the 2048-bit certificates are made once.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from firmware_sim.certs import create_certificate
from firmware_sim.machines import make_machine
from firmware_sim.opcua_nodes import Value, coerce
from firmware_sim.opcua_server import OpcUaServerError, SimOpcUaServer
from firmware_sim.profile import opcua_type, profile_from_toml
from tests.connectors.opcua.sim import PROFILE_TOML, VALUES, TableMachine

# Async tests share the module loop that the server fixtures live on.
module_loop = pytest.mark.asyncio(loop_scope="module")

NS = "urn:lineside:sim"
CLIENT_URI = "urn:lineside:test:client"

# One tag of every served data type, plus a scaled integer (served as Double).
PROFILE = profile_from_toml(
    PROFILE_TOML
    + """
[[tags]]
name = "temp"
address = "hr:20"
type = "int16"
scale = 0.1
unit = "degC"
"""
)

GOOD_VALUES: dict[str, Value] = {**VALUES, "temp": 21.7}

VARIANT_OF = {
    "flag": ua.VariantType.Boolean,
    "i16": ua.VariantType.Int16,
    "u16": ua.VariantType.UInt16,
    "i32": ua.VariantType.Int32,
    "u32": ua.VariantType.UInt32,
    "i64": ua.VariantType.Int64,
    "u64": ua.VariantType.UInt64,
    "f32": ua.VariantType.Float,
    "f64": ua.VariantType.Double,
    "temp": ua.VariantType.Double,
    "text": ua.VariantType.String,
}


@dataclass(frozen=True)
class Certs:
    dir: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    cert, key = d / "client-cert.der", d / "client-key.pem"
    asyncio.run(create_certificate(cert, key, CLIENT_URI, socket.gethostname()))
    return Certs(d, cert, key)


def machines() -> list[TableMachine]:
    return [TableMachine("m1", PROFILE, dict(GOOD_VALUES)), TableMachine("m2", PROFILE, {})]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain() -> AsyncIterator[SimOpcUaServer]:
    async with SimOpcUaServer(machines()) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(certs: Certs) -> AsyncIterator[SimOpcUaServer]:
    server = SimOpcUaServer(machines(), security="sign_and_encrypt", cert_dir=certs.dir / "srv")
    async with server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def with_users() -> AsyncIterator[SimOpcUaServer]:
    async with SimOpcUaServer(machines(), users={"operator": "s3cret"}) as server:
        yield server


def table(server: SimOpcUaServer, name: str) -> dict[str, Value]:
    machine = server._machines[name]
    assert isinstance(machine, TableMachine)
    return machine.table


def served(value: Value, tag: str) -> Value:
    """What a client reads back for a value: Float tags carry 32-bit precision."""
    if VARIANT_OF[tag] is ua.VariantType.Float:
        return float(struct.unpack("<f", struct.pack("<f", float(value)))[0])
    return value


async def secure_client(server: SimOpcUaServer, certs: Certs) -> Client:
    client = Client(server.endpoint)
    client.application_uri = CLIENT_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(certs.client_cert),
        str(certs.client_key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    return client


# -- the pure core -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_name", "raw", "expected"),
    [
        ("Boolean", True, True),
        ("Boolean", 0, False),
        ("Int16", -32768, -32768),
        ("UInt16", 65535, 65535),
        ("UInt32", 4.0, 4),
        ("UInt64", 2**64 - 1, 2**64 - 1),
        ("Float", 0.1, struct.unpack("<f", struct.pack("<f", 0.1))[0]),
        ("Float", math.inf, math.inf),
        ("Double", 3, 3.0),
        ("String", "P.O 42.5", "P.O 42.5"),
    ],
)
def test_coerce_accepts_values_that_fit(type_name: str, raw: object, expected: object) -> None:
    got = coerce(type_name, raw)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    ("type_name", "raw", "error"),
    [
        ("Boolean", 2, TypeError),
        ("Boolean", "yes", TypeError),
        ("Int16", 32768, ValueError),
        ("UInt16", -1, ValueError),
        ("UInt32", 2**32, ValueError),
        ("Int64", 2**63, ValueError),
        ("UInt32", 1.5, ValueError),
        ("UInt32", math.nan, ValueError),
        ("Int32", True, TypeError),
        ("Int32", "12", TypeError),
        ("Float", 1e39, ValueError),
        ("Double", None, TypeError),
        ("String", 12, TypeError),
    ],
)
def test_coerce_refuses_values_that_do_not_fit(
    type_name: str, raw: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        coerce(type_name, raw)


def test_bad_arguments_are_refused_before_start(tmp_path: Path) -> None:
    with pytest.raises(OpcUaServerError, match="needs cert_dir"):
        SimOpcUaServer(machines(), security="sign_and_encrypt")
    with pytest.raises(OpcUaServerError, match="at least one machine"):
        SimOpcUaServer([])
    with pytest.raises(OpcUaServerError, match="nobody could log in"):
        SimOpcUaServer(machines(), users={})
    with pytest.raises(OpcUaServerError, match="unknown security"):
        SimOpcUaServer(machines(), security="basic128")  # type: ignore[arg-type]
    server = SimOpcUaServer(machines())
    with pytest.raises(OpcUaServerError, match="not started"):
        _ = server.endpoint


@module_loop
async def test_update_before_start_is_an_error() -> None:
    with pytest.raises(OpcUaServerError, match="not started"):
        await SimOpcUaServer(machines()).refresh()


@module_loop
async def test_create_certificate_reuses_a_valid_pair_and_checks_suffixes(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.der", tmp_path / "k.pem"
    await create_certificate(cert, key, "urn:a", "host-a")
    first = cert.read_bytes(), key.read_bytes()
    await create_certificate(cert, key, "urn:a", "host-a")
    assert (cert.read_bytes(), key.read_bytes()) == first
    # Another application URI cannot use this certificate: it is remade, the key kept.
    await create_certificate(cert, key, "urn:b", "host-a")
    assert cert.read_bytes() != first[0]
    assert key.read_bytes() == first[1]
    with pytest.raises(ValueError, match=r"\.der"):
        await create_certificate(tmp_path / "c.pem", key, "urn:a", "host-a")


# -- address space and values --------------------------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_endpoint_has_the_bound_port(plain: SimOpcUaServer) -> None:
    assert plain.endpoint.startswith("opc.tcp://127.0.0.1:")
    assert not plain.endpoint.endswith(":0/")
    async with Client(plain.endpoint) as client:
        endpoints = await client.get_endpoints()
    assert [e.EndpointUrl for e in endpoints] == [plain.endpoint]
    assert [e.SecurityMode for e in endpoints] == [ua.MessageSecurityMode.None_]


@module_loop
@pytest.mark.slow
async def test_a_port_in_use_is_a_clear_error(plain: SimOpcUaServer) -> None:
    port = int(plain.endpoint.rstrip("/").rsplit(":", 1)[1])
    second = SimOpcUaServer(machines(), port=port)
    with pytest.raises(OpcUaServerError, match=f"cannot listen on 127.0.0.1:{port}"):
        await second.start()
    with pytest.raises(OpcUaServerError, match="not started"):
        _ = second.endpoint
    await second.stop()  # harmless when nothing runs


@module_loop
async def test_browse_objects_shows_one_folder_per_machine_with_every_tag(
    plain: SimOpcUaServer,
) -> None:
    async with Client(plain.endpoint) as client:
        ns = await client.get_namespace_index(NS)
        assert ns == plain.namespace_index
        folders = {}
        for child in await client.nodes.objects.get_children():
            name = await child.read_browse_name()
            if name.NamespaceIndex == ns:
                folders[name.Name] = child
        assert sorted(folders) == ["m1", "m2"]
        for machine, folder in folders.items():
            assert folder.nodeid == ua.NodeId(ua.String(machine), ua.Int16(ns))
            assert await folder.read_node_class() == ua.NodeClass.Object
            variables = await folder.get_children(nodeclassmask=ua.NodeClass.Variable)
            names = [(await v.read_browse_name()).Name for v in variables]
            assert names == list(PROFILE.tag_names)
            assert [v.nodeid for v in variables] == [
                ua.NodeId(ua.String(f"{machine}.{t}"), ua.Int16(ns)) for t in PROFILE.tag_names
            ]


@module_loop
async def test_every_node_reads_the_machine_value_with_the_profile_type(
    plain: SimOpcUaServer,
) -> None:
    table(plain, "m1").update(GOOD_VALUES)
    await plain.refresh()
    async with Client(plain.endpoint) as client:
        ns = plain.namespace_index
        for tag in PROFILE.tags:
            node = client.get_node(f"ns={ns};s=m1.{tag.name}")
            dv = await node.read_data_value()
            assert dv.StatusCode is not None and dv.StatusCode.is_good()
            assert dv.Value is not None
            assert dv.Value.VariantType is VARIANT_OF[tag.name], tag.name
            assert dv.Value.VariantType.name == opcua_type(tag)
            assert await node.read_data_type_as_variant_type() is VARIANT_OF[tag.name]
            assert dv.Value.Value == served(GOOD_VALUES[tag.name], tag.name), tag.name
            assert dv.SourceTimestamp is not None


@module_loop
async def test_values_change_after_update_and_only_changed_nodes_are_written(
    plain: SimOpcUaServer,
) -> None:
    values = table(plain, "m1")
    values.update(GOOD_VALUES)
    await plain.refresh()
    assert await plain.refresh() == 0  # nothing changed
    values["u32"] = 7
    values["f32"] = 2.25
    values["text"] = "DIE-8"
    assert await plain.refresh() == 3
    async with Client(plain.endpoint) as client:
        ns = plain.namespace_index
        got = [
            await client.get_node(f"ns={ns};s=m1.{t}").read_value() for t in ("u32", "f32", "text")
        ]
    assert got == [7, 2.25, "DIE-8"]
    # A change below Float precision is no change on the wire.
    values["f32"] = 2.25 + 1e-12
    assert await plain.refresh() == 0


@module_loop
async def test_update_takes_values_the_caller_already_has(plain: SimOpcUaServer) -> None:
    await plain.update({"m1": {**GOOD_VALUES, "i16": 12}})
    async with Client(plain.endpoint) as client:
        node = client.get_node(f"ns={plain.namespace_index};s=m1.i16")
        assert await node.read_value() == 12
    with pytest.raises(KeyError, match="nope"):
        await plain.update({"nope": {}})


@module_loop
async def test_a_frozen_machine_keeps_serving_its_last_values(plain: SimOpcUaServer) -> None:
    values = table(plain, "m1")
    values.update(GOOD_VALUES)
    await plain.refresh()
    plain.freeze("m1")
    try:
        assert plain.is_frozen("m1")
        values["u16"] = 1
        assert await plain.refresh() == 0
        assert await plain.update({"m1": {**GOOD_VALUES, "u16": 2}}) == 0
        async with Client(plain.endpoint) as client:
            node = client.get_node(f"ns={plain.namespace_index};s=m1.u16")
            assert await node.read_value() == 65535
            plain.freeze("m1", frozen=False)
            assert await plain.refresh() == 1
            assert await node.read_value() == 1
    finally:
        plain.freeze("m1", frozen=False)
    with pytest.raises(KeyError):
        plain.freeze("nope")


@module_loop
async def test_missing_and_unfit_values_are_served_as_bad_not_invented(
    plain: SimOpcUaServer,
) -> None:
    values = table(plain, "m1")
    values.update(GOOD_VALUES)
    await plain.refresh()
    values["i16"] = 40000  # does not fit Int16
    values["text"] = 12  # not text
    del values["u16"]
    await plain.refresh()
    try:
        async with Client(plain.endpoint) as client:
            ns = plain.namespace_index

            async def status(tag: str) -> ua.StatusCode:
                node = client.get_node(f"ns={ns};s=m1.{tag}")
                dv = await node.read_data_value(raise_on_bad_status=False)
                assert dv.StatusCode is not None
                return dv.StatusCode

            assert (await status("i16")).value == StatusCodes.BadOutOfRange
            assert (await status("text")).value == StatusCodes.BadTypeMismatch
            assert (await status("u16")).value == StatusCodes.BadNoData
            assert (await status("i32")).is_good()
            # m2 never reported anything: every node of it is bad, none reads 0.
            assert (await status("i32")).is_good()
            m2 = client.get_node(f"ns={ns};s=m2.i32")
            dv = await m2.read_data_value(raise_on_bad_status=False)
            assert dv.StatusCode is not None
            assert dv.StatusCode.value == StatusCodes.BadNoData
            # Recovery: a good value again makes the node good again.
            values.update(GOOD_VALUES)
            await plain.refresh()
            assert (await status("i16")).is_good()
    finally:
        values.update(GOOD_VALUES)
        await plain.refresh()


@module_loop
async def test_nodes_are_read_only_for_clients(plain: SimOpcUaServer) -> None:
    async with Client(plain.endpoint) as client:
        node = client.get_node(f"ns={plain.namespace_index};s=m1.u16")
        access = await node.read_attribute(AttributeIds.UserAccessLevel)
        assert access.Value is not None
        assert access.Value.Value & ua.AccessLevel.CurrentWrite.mask == 0
        # asyncua answers a write to a node without CurrentWrite with BadUserAccessDenied.
        with pytest.raises(UaStatusCodeError) as caught:
            await node.write_value(ua.DataValue(ua.Variant(3, ua.VariantType.UInt16)))
        assert caught.value.code == StatusCodes.BadUserAccessDenied
        assert await node.read_value() == GOOD_VALUES["u16"]


@module_loop
async def test_units_and_descriptions_come_from_the_profile(plain: SimOpcUaServer) -> None:
    async with Client(plain.endpoint) as client:
        node = client.get_node(f"ns={plain.namespace_index};s=m1.f32")
        assert (await node.read_description()).Text == "Motor power"
        eu = await (await node.get_child(f"{plain.namespace_index}:EngineeringUnits")).read_value()
        assert eu.DisplayName.Text == "kW"
        bare = client.get_node(f"ns={plain.namespace_index};s=m1.u16")
        assert await bare.get_properties() == []


@module_loop
async def test_garbage_from_a_client_does_not_take_the_server_down(plain: SimOpcUaServer) -> None:
    host, port = plain.endpoint.removeprefix("opc.tcp://").rstrip("/").rsplit(":", 1)
    # A zero header is malformed: the server hangs up at once.
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x00" * 64)
    await writer.drain()
    assert await reader.read(1024) == b""
    writer.close()
    await writer.wait_closed()
    # Unknown message type, truncated hello, message before any hello, a hello that never ends:
    # asyncua logs these and keeps the socket until its activation watchdog; meanwhile a well
    # behaved client must be served as usual.
    junk = (
        b"XYZF" + struct.pack("<I", 16) + b"\x00" * 8,
        b"HELF" + struct.pack("<I", 12) + b"\x00" * 4,
        b"MSGF" + struct.pack("<I", 40) + b"\x01" * 32,
        b"HELF" + struct.pack("<I", 0x7FFFFFFF),
    )
    writers = []
    try:
        for data in junk:
            _, writer = await asyncio.open_connection(host, int(port))
            writers.append(writer)
            writer.write(data)
            await writer.drain()
        async with Client(plain.endpoint) as client:
            node = client.get_node(f"ns={plain.namespace_index};s=m1.text")
            assert await node.read_value() == GOOD_VALUES["text"]
    finally:
        for writer in writers:
            writer.close()
            await writer.wait_closed()


@module_loop
@pytest.mark.slow
async def test_real_machines_are_served_and_move_with_time() -> None:
    real = [make_machine("press", "press1", seed=1), make_machine("mill", "mill1", seed=2)]
    async with SimOpcUaServer(real) as server, Client(server.endpoint) as client:
        ns = server.namespace_index

        async def read_all() -> dict[tuple[str, str], object]:
            out: dict[tuple[str, str], object] = {}
            for machine in real:
                for tag in machine.profile.tags:
                    node = client.get_node(f"ns={ns};s={machine.name}.{tag.name}")
                    dv = await node.read_data_value()
                    assert dv.Value is not None
                    assert dv.Value.VariantType.name == opcua_type(tag), tag.name
                    out[machine.name, tag.name] = dv.Value.Value
            return out

        def expected() -> dict[tuple[str, str], object]:
            return {
                (m.name, t.name): coerce(opcua_type(t), m.values()[t.name])
                for m in real
                for t in m.profile.tags
            }

        before = await read_all()
        assert before == expected()
        for machine in real:
            machine.advance_to(900.0)
        assert await server.refresh() > 0
        after = await read_all()
        assert after == expected()
        assert after != before
        assert after["press1", "part_count"] != before["press1", "part_count"]


# -- security ------------------------------------------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_secure_server_offers_only_basic256sha256_sign_and_encrypt(
    secure: SimOpcUaServer,
) -> None:
    endpoints = await Client(secure.endpoint, timeout=5).connect_and_get_server_endpoints()
    assert [(e.SecurityPolicyUri, e.SecurityMode, e.EndpointUrl) for e in endpoints] == [
        (
            SecurityPolicyBasic256Sha256.URI,
            ua.MessageSecurityMode.SignAndEncrypt,
            secure.endpoint,
        )
    ]


@module_loop
async def test_client_without_security_is_refused(secure: SimOpcUaServer) -> None:
    with pytest.raises(UaError):
        async with Client(secure.endpoint, timeout=5) as client:
            await client.nodes.server_state.read_value()


@module_loop
async def test_a_none_channel_session_gets_no_service(secure: SimOpcUaServer) -> None:
    # Skip the client's own endpoint check and talk to the server as a careless peer would.
    client = Client(secure.endpoint, timeout=5)
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        params = ua.CreateSessionParameters()
        params.ClientNonce = b"n" * 32
        params.ClientDescription = ua.ApplicationDescription()
        params.ClientDescription.ApplicationUri = CLIENT_URI
        params.SessionName = "careless"
        params.RequestedSessionTimeout = 10_000
        params.MaxResponseMessageSize = 0
        params.EndpointUrl = secure.endpoint
        await client.uaclient.create_session(params)
        activate = ua.ActivateSessionParameters()
        activate.UserIdentityToken = ua.AnonymousIdentityToken(PolicyId="anonymous")
        await client.uaclient.activate_session(activate)
        with pytest.raises(UaStatusCodeError) as caught:
            await client.get_node(f"ns={secure.namespace_index};s=m1.u16").read_value()
        assert caught.value.code == StatusCodes.BadUserAccessDenied
    finally:
        client.disconnect_socket()


@module_loop
async def test_basic256sha256_client_with_a_certificate_connects_and_reads(
    secure: SimOpcUaServer, certs: Certs
) -> None:
    table(secure, "m1").update(GOOD_VALUES)
    await secure.refresh()
    client = await secure_client(secure, certs)
    async with client:
        node = client.get_node(f"ns={secure.namespace_index};s=m1.text")
        assert await node.read_value() == GOOD_VALUES["text"]
    assert secure.server_certificate is not None and secure.server_certificate.is_file()


# -- users ---------------------------------------------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_right_password_is_accepted(with_users: SimOpcUaServer) -> None:
    client = Client(with_users.endpoint, timeout=5)
    client.set_user("operator")
    client.set_password("s3cret")
    async with client:
        node = client.get_node(f"ns={with_users.namespace_index};s=m1.u32")
        assert await node.read_value() == GOOD_VALUES["u32"]


@pytest.mark.parametrize(("user", "password"), [("operator", "wrong"), ("intruder", "s3cret")])
@module_loop
async def test_wrong_credentials_are_refused(
    with_users: SimOpcUaServer, user: str, password: str
) -> None:
    client = Client(with_users.endpoint, timeout=5)
    client.set_user(user)
    client.set_password(password)
    with pytest.raises(UaStatusCodeError) as caught:
        async with client:
            pass
    assert caught.value.code == StatusCodes.BadUserAccessDenied


@module_loop
@pytest.mark.slow
async def test_anonymous_is_refused_when_users_are_configured(with_users: SimOpcUaServer) -> None:
    with pytest.raises(UaStatusCodeError) as caught:
        async with Client(with_users.endpoint, timeout=5):
            pass
    assert caught.value.code == StatusCodes.BadIdentityTokenRejected

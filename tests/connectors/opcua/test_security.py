"""`connectors.opcua.security` against the simulated server over real sockets (port 0).

Every refusal fails closed with its own one-line message; the positive cases read values over
each policy and mode. Connections go through `session.open_session`, the agent's own path.
Servers are module fixtures: an asyncua server takes seconds to start on a shared machine.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from agent.errors import ConnectError
from connectors.opcua import certs
from connectors.opcua.config import OpcUaSourceConfig
from connectors.opcua.security import POLICIES, check_password_protected, refusal, secure
from connectors.opcua.session import close_session, open_session
from connectors.opcua.trust import UntrustedCertificate, thumbprint
from firmware_sim.opcua_server import SimOpcUaServer
from firmware_sim.profile import profile_from_toml
from tests.connectors.opcua.sim import Pki, TableMachine, make_pki

module_loop = pytest.mark.asyncio(loop_scope="module")

CLIENT_URI = "urn:lineside:test:edge"
SERVER_URI = "urn:lineside:sim:server"  # SimOpcUaServer's default namespace + ":server"
USER, PASSWORD = "operator", "Pw-9f3!never-logged"
KEY_PASSPHRASE = "kp-4711-never-logged"

PROFILE = profile_from_toml(
    'kind = "press"\ndescription = "one tag"\n'
    '[[tags]]\nname = "count"\naddress = "hr:0"\ntype = "uint16"\n'
)


def one_tag(name: str) -> TableMachine:
    return TableMachine(name, PROFILE, {"count": 4242})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), CLIENT_URI, KEY_PASSPHRASE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secured(pki: Pki) -> AsyncIterator[SimOpcUaServer]:
    """Three secure endpoints (never None), logins only."""
    server = SimOpcUaServer(
        [one_tag("m1")],
        security="sign_and_encrypt",
        cert_dir=pki.dir / "server",
        users={USER: PASSWORD},
        policies=(
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
            ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
        ),
    )
    async with server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plain() -> AsyncIterator[SimOpcUaServer]:
    async with SimOpcUaServer([one_tag("m1")]) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def expired(pki: Pki) -> AsyncIterator[SimOpcUaServer]:
    """A secure server serving a certificate that expired in 2020."""
    from datetime import UTC, datetime

    cert_dir = pki.dir / "expired-server"
    old = certs.create(cert_dir, SERVER_URI, days=1, now=datetime(2020, 1, 1, tzinfo=UTC))
    old.certificate.rename(cert_dir / "server-cert.der")
    old.private_key.rename(cert_dir / "server-key.pem")
    server = SimOpcUaServer(
        [one_tag("m1")],
        security="sign_and_encrypt",
        cert_dir=cert_dir,
        keep_certificate=True,
    )
    async with server:
        yield server


def config(server: SimOpcUaServer, pki: Pki, trust: Path, **changes: Any) -> OpcUaSourceConfig:
    fields: dict[str, Any] = {
        "type": "opcua",
        "name": "press",
        "endpoint": server.endpoint,
        "machine": "m1",
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "certificate": pki.cert,
        "private_key": pki.key,
        "private_key_password_file": pki.passphrase_file,
        "trust_dir": trust,
        "trust_on_first_use": True,
        "username": USER,
        "password_env": "LINESIDE_TEST_OPCUA_PASSWORD",
        "timeout": "5s",
        "tags": [{"name": "count", "node_id": "ns=2;s=m1.count"}],
    }
    fields.update(changes)
    return OpcUaSourceConfig.model_validate(fields)


@pytest.fixture(autouse=True)
def password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINESIDE_TEST_OPCUA_PASSWORD", PASSWORD)


def pinned(folder: Path) -> list[Path]:
    return list(folder.glob("*.der"))


def status_error(code: int) -> UaStatusCodeError:
    return UaStatusCodeError(code)  # type: ignore[no-untyped-call]


async def read_count(cfg: OpcUaSourceConfig, server: SimOpcUaServer) -> object:
    client = await open_session(cfg, lambda why: None)
    try:
        node = client.get_node(f"ns={server.namespace_index};s=m1.count")
        return await node.read_value()
    finally:
        await close_session(client, 2.0, [])


async def connect_error(cfg: OpcUaSourceConfig) -> str:
    with pytest.raises(ConnectError) as caught:
        await open_session(cfg, lambda why: None)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the positive secure case ---------------------------------------------------------------


@module_loop
@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "Sign"),
    ],
)
@pytest.mark.slow
async def test_each_policy_and_mode_reads_values(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path, policy: str, mode: str
) -> None:
    cfg = config(secured, pki, tmp_path / "trusted", security_policy=policy, security_mode=mode)
    assert await read_count(cfg, secured) == 4242
    client = Client(secured.endpoint)
    await secure(client, cfg)
    assert client.security_policy.URI == POLICIES[policy].URI
    assert client.security_policy.Mode == getattr(ua.MessageSecurityMode, mode)
    assert client.application_uri == CLIENT_URI


@module_loop
async def test_passphrase_from_env_works_too(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_KEY_PASSPHRASE", KEY_PASSPHRASE)
    cfg = config(
        secured,
        pki,
        tmp_path,
        private_key_password_file=None,
        private_key_password_env="LINESIDE_TEST_KEY_PASSPHRASE",
    )
    assert await read_count(cfg, secured) == 4242


# -- no fallback to None --------------------------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_a_server_offering_only_none_is_refused(
    plain: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    message = await connect_error(config(plain, pki, tmp_path))
    assert message == (
        "server offers no endpoint with Basic256Sha256/SignAndEncrypt (it offers: None/None)"
    )


@module_loop
async def test_the_mode_must_match_too(secured: SimOpcUaServer, pki: Pki, tmp_path: Path) -> None:
    cfg = config(secured, pki, tmp_path, security_policy="Aes256_Sha256_RsaPss")
    message = await connect_error(cfg)
    assert message.startswith("server offers no endpoint with Aes256_Sha256_RsaPss/SignAndEncrypt")
    assert "Aes256_Sha256_RsaPss/Sign," in message or "Aes256_Sha256_RsaPss/Sign)" in message


# -- the server's certificate ---------------------------------------------------------------


@module_loop
async def test_unknown_server_certificate_is_refused_without_trust_on_first_use(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    trusted = tmp_path / "pki" / "trusted"
    cfg = config(secured, pki, trusted, trust_on_first_use=False)
    with pytest.raises(UntrustedCertificate) as caught:
        await open_session(cfg, lambda why: None)
    assert secured.server_certificate is not None
    print_ = thumbprint(secured.server_certificate.read_bytes())
    message = str(caught.value)
    assert message.startswith(
        f"server certificate not trusted: {SERVER_URI}, thumbprint {print_}; to trust it, "
        f"put it in {trusted}"
    )
    assert not trusted.exists()
    # Trusting it is moving the saved file: then it connects.
    (saved,) = (tmp_path / "pki" / "rejected").iterdir()
    trusted.mkdir()
    saved.rename(trusted / saved.name)
    assert await read_count(cfg, secured) == 4242


@module_loop
async def test_trust_on_first_use_pins_then_refuses_a_different_certificate(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    trusted = tmp_path / "trusted"
    cfg = config(secured, pki, trusted, trust_on_first_use=True)
    assert await read_count(cfg, secured) == 4242
    (pin,) = trusted.iterdir()
    assert secured.server_certificate is not None
    assert pin.read_bytes() == secured.server_certificate.read_bytes()
    assert await read_count(cfg.model_copy(update={"trust_on_first_use": False}), secured) == 4242
    # The server comes back with another certificate for the same application URI.
    pin.write_bytes(certs.create(tmp_path / "imposter", SERVER_URI).certificate.read_bytes())
    message = await connect_error(cfg)
    assert message.startswith(f"server certificate of {SERVER_URI} changed: thumbprint ")
    assert str(pin) in message


@module_loop
async def test_a_pinned_server_certificate_file_must_match(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    assert secured.server_certificate is not None
    good = config(secured, pki, tmp_path, server_certificate=secured.server_certificate)
    assert await read_count(good, secured) == 4242
    other = certs.create(tmp_path / "other", SERVER_URI).certificate
    message = await connect_error(good.model_copy(update={"server_certificate": other}))
    assert "is not the one pinned by server_certificate" in message


@module_loop
@pytest.mark.slow
async def test_an_expired_server_certificate_is_refused(
    expired: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    message = await connect_error(config(expired, pki, tmp_path, username=None, password_env=None))
    assert message.startswith(f"server certificate of {SERVER_URI} (thumbprint ")
    assert message.endswith("expired on 2020-01-02 00:00 UTC")
    assert not pinned(tmp_path)  # never pinned, even with trust on first use


# -- our own identity -----------------------------------------------------------------------


@module_loop
async def test_an_expired_client_certificate_is_refused(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    old = certs.create(tmp_path / "old", CLIENT_URI, days=1, now=datetime(2021, 3, 1, tzinfo=UTC))
    cfg = config(
        secured,
        pki,
        tmp_path,
        certificate=old.certificate,
        private_key=old.private_key,
        private_key_password_file=None,
    )
    message = await connect_error(cfg)
    assert message == (
        f"client certificate {old.certificate} expired on 2021-03-02 00:00 UTC; "
        "make a new one with `lineside certs create`"
    ) or message.startswith(f"client certificate {old.certificate} expired on 2021-03-02")


@module_loop
async def test_the_application_uri_must_match_the_certificate(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    cfg = config(secured, pki, tmp_path, application_uri="urn:lineside:test:other")
    message = await connect_error(cfg)
    assert message == (
        f"application_uri urn:lineside:test:other does not match the client certificate "
        f"{pki.cert}, which names {CLIENT_URI}; make one with "
        "`lineside certs create --uri urn:lineside:test:other`"
    )
    same = cfg.model_copy(update={"application_uri": CLIENT_URI})
    assert await read_count(same, secured) == 4242


@module_loop
@pytest.mark.slow
async def test_key_passphrase_errors_are_distinct(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it")
    assert await connect_error(config(secured, pki, tmp_path, private_key_password_file=wrong)) == (
        f"wrong passphrase for the private key {pki.key}"
    )
    missing = config(secured, pki, tmp_path, private_key_password_file=None)
    assert await connect_error(missing) == (
        f"the private key {pki.key} is encrypted: set private_key_password_env or "
        "private_key_password_file"
    )
    unset = config(
        secured, pki, tmp_path, private_key_password_file=None, private_key_password_env="NOPE_X"
    )
    assert await connect_error(unset) == (
        "private key passphrase: the password environment variable NOPE_X is not set"
    )
    plain_key = certs.create(tmp_path / "plain", CLIENT_URI)
    not_encrypted = config(
        secured, pki, tmp_path, certificate=plain_key.certificate, private_key=plain_key.private_key
    )
    assert await connect_error(not_encrypted) == (
        f"the private key {plain_key.private_key} is not encrypted, but a passphrase is configured"
    )
    mixed = config(secured, pki, tmp_path, private_key=plain_key.private_key)
    mixed = mixed.model_copy(update={"private_key_password_file": None})
    assert await connect_error(mixed) == (
        f"the private key {plain_key.private_key} does not belong to the client certificate "
        f"{pki.cert}"
    )


# -- the login, and secrets kept out of logs ------------------------------------------------


@module_loop
@pytest.mark.slow
async def test_a_wrong_password_fails_with_its_own_error_and_is_never_logged(
    secured: SimOpcUaServer,
    pki: Pki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong_password = "Wrong-pw-31337-never-logged"
    monkeypatch.setenv("LINESIDE_TEST_OPCUA_PASSWORD", wrong_password)
    cfg = config(secured, pki, tmp_path)
    caplog.set_level(logging.DEBUG)
    message = await connect_error(cfg)
    assert "BadUserAccessDenied" in message
    # The raw refusal, explained for whoever connects (the session, `discover`).
    client = Client(secured.endpoint, timeout=5)
    await secure(client, cfg)
    client.set_user(USER)
    client.set_password(wrong_password)
    with pytest.raises(UaStatusCodeError) as caught:
        await client.connect()
    assert refusal(caught.value, cfg) == (
        f"the server refused user {USER} (BadUserAccessDenied): wrong user name or password?"
    )
    logged = caplog.text
    assert logged  # asyncua did log at debug level: the check below is not vacuous
    for secret in (wrong_password, PASSWORD, KEY_PASSPHRASE):
        assert secret not in logged
        assert secret not in message


@module_loop
async def test_secrets_never_appear_in_logs_of_a_good_connection(
    secured: SimOpcUaServer, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await read_count(config(secured, pki, tmp_path), secured) == 4242
    assert "trusting urn:lineside:sim:server on first use" in caplog.text
    assert PASSWORD not in caplog.text and KEY_PASSPHRASE not in caplog.text


def test_refusal_leaves_other_errors_alone(pki: Pki, tmp_path: Path) -> None:
    cfg = OpcUaSourceConfig.model_validate(
        {
            "type": "opcua",
            "name": "p",
            "endpoint": "opc.tcp://127.0.0.1:1",
            "machine": "m1",
            "tags": [{"name": "a", "node_id": "i=2258"}],
        }
    )
    assert refusal(status_error(StatusCodes.BadNodeIdUnknown), cfg) is None
    assert refusal(OSError("boom"), cfg) is None
    login = refusal(status_error(StatusCodes.BadIdentityTokenRejected), cfg)
    assert login == (
        "the server refused anonymous login (BadIdentityTokenRejected): "
        "wrong user name or password?"
    )


def test_a_password_in_clear_over_a_sign_only_channel_is_refused() -> None:
    from asyncua.crypto.security_policies import SecurityPolicyNone

    def endpoint(token_policy_uri: str | None) -> ua.EndpointDescription:
        token = ua.UserTokenPolicy(TokenType=ua.UserTokenType.UserName)
        token.SecurityPolicyUri = token_policy_uri
        return ua.EndpointDescription(UserIdentityTokens=[token])

    with pytest.raises(ConnectError, match="unencrypted over a Sign-only channel"):
        check_password_protected(endpoint(SecurityPolicyNone.URI))
    check_password_protected(endpoint(None))  # empty: the endpoint's policy encrypts it
    check_password_protected(endpoint(POLICIES["Basic256Sha256"].URI))


# -- a server that does not trust our certificate -------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def strict(pki: Pki) -> AsyncIterator[SimOpcUaServer]:
    """Trusts only the client certificates in its folder (none yet): strict trust, day one."""
    folder = pki.dir / "server-trusts"
    folder.mkdir()
    server = SimOpcUaServer(
        [one_tag("m1")],
        security="sign_and_encrypt",
        cert_dir=pki.dir / "strict-server",
        trusted_clients=folder,
    )
    async with server:
        yield server


@module_loop
@pytest.mark.slow
async def test_a_server_rejecting_our_certificate_is_one_line_until_it_trusts_it(
    strict: SimOpcUaServer, pki: Pki, tmp_path: Path
) -> None:
    # The server answers OpenSecureChannel with BadSecurityChecksFailed, which asyncua turns
    # into a bare AssertionError: still a ConnectError with the one line saying what to do.
    cfg = config(strict, pki, tmp_path, username=None, password_env=None)
    message = await connect_error(cfg)
    assert message == (
        f"press ({strict.endpoint}): the server rejected our certificate (it refused the secure "
        f"channel): have it trust {pki.cert}"
    )
    assert strict.trusted_clients is not None
    (strict.trusted_clients / "lineside.der").write_bytes(pki.cert.read_bytes())
    assert await read_count(cfg, strict) == 4242


@pytest.mark.slow
def test_a_refused_certificate_status_says_which() -> None:
    cfg = OpcUaSourceConfig.model_validate(
        {
            "type": "opcua",
            "name": "p",
            "endpoint": "opc.tcp://127.0.0.1:1",
            "machine": "m1",
            "security_policy": "Basic256Sha256",
            "security_mode": "SignAndEncrypt",
            "certificate": "pki/own/cert.der",
            "private_key": "pki/own/key.pem",
            "tags": [{"name": "a", "node_id": "i=2258"}],
        }
    )
    assert refusal(status_error(StatusCodes.BadCertificateUntrusted), cfg) == (
        f"the server rejected our certificate (BadCertificateUntrusted): have it trust "
        f"{cfg.certificate}"
    )
    assert refusal(AssertionError(), cfg) is None  # not raised while opening the channel

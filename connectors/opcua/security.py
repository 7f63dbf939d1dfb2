"""Securing an OPC UA client before it connects: policy, mode, our identity, the server's trust.

`secure` is called with a fresh asyncua client whenever the configured policy is not None. It
fails closed: every check below raises `ConnectError` (or its `UntrustedCertificate`) with one
line saying what is wrong and what to do, and nothing ever falls back to policy None.

1. Our identity: the certificate must be valid now and name the application URI we announce
   (servers match the two); the private key must open with the configured passphrase and
   belong to the certificate.
2. The endpoint: GetEndpoints is asked over a None channel (the one service the spec allows
   there), and the server must offer the configured policy *and* mode.
3. The server's certificate, taken from that endpoint: valid now, and either equal to the
   configured `server_certificate` or accepted by the trust folder (`trust.py`).
4. The client is switched to the secure policy with that certificate, so the secure channel
   is encrypted to it; asyncua then refuses a session whose certificate differs from it.

No secret is ever put in a message or a log line: passphrases and passwords are read here and
handed straight to the crypto library. asyncua logs every request it sends at debug level,
ActivateSession included, whose user token holds the password in clear when the channel itself
encrypts (SignAndEncrypt); `keep_secrets_out_of_logs` makes that one line say less. And under
Sign mode a server that asks for the password unencrypted is refused: Sign alone does not hide
it on the wire.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies as sp
from asyncua.crypto.uacrypto import CertProperties
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_private_key,
    load_pem_private_key,
)

from agent.config import Credentials
from agent.errors import ConnectError
from agent.secrets import read_password
from connectors.opcua.config import OpcUaSourceConfig
from connectors.opcua.trust import (
    application_uris,
    check_server_certificate,
    read_certificate,
    thumbprint,
)

POLICIES: dict[str, type[sp.SecurityPolicy]] = {
    "Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": sp.SecurityPolicyAes256Sha256RsaPss,
}
MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}
# Status codes a server answers ActivateSession with when the user name or password is wrong.
_LOGIN_REFUSED = {
    StatusCodes.BadUserAccessDenied,
    StatusCodes.BadIdentityTokenInvalid,
    StatusCodes.BadIdentityTokenRejected,
}
_OUR_CERT_REFUSED = {
    StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadCertificateInvalid,
    StatusCodes.BadCertificateUriInvalid,
    StatusCodes.BadCertificateTimeInvalid,
    StatusCodes.BadSecurityChecksFailed,
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Our certificate (DER), private key (file bytes) and the application URI we announce."""

    certificate: bytes
    private_key: bytes
    key_suffix: str  # "pem" or "der": how asyncua decodes the key
    passphrase: str | None
    application_uri: str


async def secure(client: Client, config: OpcUaSourceConfig) -> None:
    """Make `client` connect with the configured policy and mode, or raise `ConnectError`.

    Call before `client.connect()`; it opens (and closes) one None channel for GetEndpoints.
    """
    policy = POLICIES.get(config.security_policy)
    mode = MODES.get(config.security_mode)
    if policy is None or mode is None:
        # The config model pairs them; reaching here means a caller skipped it. Fail closed.
        raise ConnectError(
            f"no secure connection with {config.security_policy}/{config.security_mode}"
        )
    keep_secrets_out_of_logs()
    identity = load_identity(config)
    client.application_uri = identity.application_uri
    endpoints = await client.connect_and_get_server_endpoints()
    endpoint = pick_endpoint(endpoints, config.security_policy, config.security_mode)
    if config.username is not None and config.security_mode == "Sign":
        check_password_protected(endpoint)
    server_der = first_certificate(endpoint.ServerCertificate)
    check_server(server_der, config)
    await client.set_security(
        policy,
        certificate=CertProperties(identity.certificate, "der"),
        private_key=CertProperties(identity.private_key, identity.key_suffix, identity.passphrase),
        server_certificate=CertProperties(server_der, "der"),
        mode=mode,
    )


def load_identity(config: OpcUaSourceConfig, now: datetime | None = None) -> Identity:
    """Our certificate, key and application URI from the config, each checked; or ConnectError."""
    if config.certificate is None or config.private_key is None:
        raise ConnectError("a secure connection needs a certificate and a private_key")
    cert_path, key_path = config.certificate, config.private_key
    cert = _read_cert(cert_path)
    check_validity(cert, f"client certificate {cert_path}", now)
    uris = application_uris(cert)
    if not uris:
        raise ConnectError(
            f"client certificate {cert_path} names no application URI (subjectAltName URI); "
            "make one with `lineside certs create`"
        )
    uri = config.application_uri or uris[0]
    if uri not in uris:
        raise ConnectError(
            f"application_uri {uri} does not match the client certificate {cert_path}, which "
            f"names {', '.join(uris)}; make one with `lineside certs create --uri {uri}`"
        )
    passphrase = key_passphrase(config)
    try:
        key_bytes = key_path.read_bytes()
    except OSError as exc:
        raise ConnectError(f"cannot read the private key {key_path}: {exc.strerror}") from None
    key = open_private_key(key_bytes, passphrase, key_path)
    if _public(key) != cert.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    ):
        raise ConnectError(
            f"the private key {key_path} does not belong to the client certificate {cert_path}"
        )
    suffix = "pem" if _is_pem(key_bytes) else "der"
    return Identity(cert.public_bytes(Encoding.DER), key_bytes, suffix, passphrase, uri)


def key_passphrase(config: OpcUaSourceConfig) -> str | None:
    """The private key's passphrase from its environment variable or file, or None."""
    source = Credentials(
        username="private_key",
        password_env=config.private_key_password_env,
        password_file=config.private_key_password_file,
    )
    try:
        return read_password(source)
    except ConnectError as exc:
        raise ConnectError(f"private key passphrase: {exc}") from None


def open_private_key(data: bytes, passphrase: str | None, path: Path) -> PrivateKeyTypes:
    """The key in `data` (PEM or DER), opened with `passphrase`; a distinct error per failure."""
    secret = passphrase.encode("utf-8") if passphrase is not None else None
    try:
        if _is_pem(data):
            return load_pem_private_key(data, password=secret)
        return load_der_private_key(data, password=secret)
    except TypeError:
        # cryptography says TypeError for "encrypted, no password" and the reverse.
        if secret is None:
            raise ConnectError(
                f"the private key {path} is encrypted: set private_key_password_env or "
                "private_key_password_file"
            ) from None
        raise ConnectError(
            f"the private key {path} is not encrypted, but a passphrase is configured"
        ) from None
    except ValueError:
        if secret is not None:
            raise ConnectError(f"wrong passphrase for the private key {path}") from None
        raise ConnectError(f"the private key {path} is not a PEM or DER private key") from None


def pick_endpoint(
    endpoints: Sequence[ua.EndpointDescription], policy: str, mode: str
) -> ua.EndpointDescription:
    """The server's endpoint with exactly `policy` and `mode`, or ConnectError naming the offer."""
    uri = POLICIES[policy].URI
    wanted = MODES[mode]
    for ep in endpoints:
        if ep.SecurityPolicyUri == uri and ep.SecurityMode == wanted:
            return ep
    offered = sorted({_describe(ep) for ep in endpoints}) or ["nothing"]
    raise ConnectError(
        f"server offers no endpoint with {policy}/{mode} (it offers: {', '.join(offered)})"
    )


def check_password_protected(endpoint: ua.EndpointDescription) -> None:
    """ConnectError when the endpoint wants a user's password in clear over a Sign-only channel.

    An empty token policy URI means "the endpoint's policy", which encrypts the password; the
    None URI means the password travels as it is, which only SignAndEncrypt would hide.
    """
    for token in endpoint.UserIdentityTokens or []:
        if token.TokenType == ua.UserTokenType.UserName:
            if token.SecurityPolicyUri == sp.SecurityPolicyNone.URI:
                raise ConnectError(
                    "the server would take the password unencrypted over a Sign-only channel; "
                    "use security_mode SignAndEncrypt"
                )
            return


_SENDING_LOGGER = "asyncua.client.ua_client.UASocketProtocol"


class _HideUserTokens(logging.Filter):
    """Replaces the logged ActivateSessionRequest (user name, password) with its name only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, ua.ActivateSessionRequest) for a in args):
            record.msg = "Sending: %s"
            record.args = ("ActivateSessionRequest (user identity token not logged)",)
        return True


def keep_secrets_out_of_logs() -> None:
    """Install (once) the filter that keeps user passwords out of asyncua's debug log."""
    logger = logging.getLogger(_SENDING_LOGGER)
    if not any(isinstance(f, _HideUserTokens) for f in logger.filters):
        logger.addFilter(_HideUserTokens())


def check_server(der: bytes, config: OpcUaSourceConfig, now: datetime | None = None) -> None:
    """The server certificate: valid now, and pinned by `server_certificate` or trusted."""
    if not der:
        raise ConnectError("the server's endpoint carries no certificate")
    try:
        cert = read_certificate(der)
    except ValueError:
        raise ConnectError("the server's certificate cannot be decoded") from None
    uris = application_uris(cert)
    name = uris[0] if uris else cert.subject.rfc4514_string()
    check_validity(cert, f"server certificate of {name} (thumbprint {thumbprint(der)})", now)
    if config.server_certificate is not None:
        pinned = _read_cert(config.server_certificate).public_bytes(Encoding.DER)
        if pinned != der:
            raise ConnectError(
                f"server certificate of {name} (thumbprint {thumbprint(der)}) is not the one "
                f"pinned by server_certificate {config.server_certificate} "
                f"(thumbprint {thumbprint(pinned)})"
            )
        return
    check_server_certificate(der, config.trust_dir, config.trust_on_first_use)


def check_validity(cert: x509.Certificate, what: str, now: datetime | None = None) -> None:
    """ConnectError when `cert` has expired or is not valid yet at `now` (default: the clock)."""
    at = now or datetime.now(UTC)
    if cert.not_valid_after_utc < at:
        raise ConnectError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > at:
        raise ConnectError(
            f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(check the clock)"
        )


def refusal(exc: BaseException, config: OpcUaSourceConfig) -> str | None:
    """One line for a server's refusal that security explains (login, our certificate), or None.

    For the code that connects: a `UaStatusCodeError` from `connect()` means more here than its
    status name alone. A server that answers OpenSecureChannel with a bad status (as strict
    servers do for a certificate they do not trust) makes asyncua fail a bare assertion instead,
    the status only logged: any failure raised from inside opening the secure channel of a
    secured connection is that refusal.
    """
    secured = config.security_policy != "None"
    if not isinstance(exc, UaStatusCodeError):
        if (
            secured
            and not isinstance(exc, TimeoutError | OSError | UaError)
            and _in_secure_channel(exc)
        ):
            return our_certificate_refused(config, "it refused the secure channel")
        return None
    code = exc.code
    name = ua.StatusCode(code).name
    if code in _LOGIN_REFUSED:
        who = f"user {config.username}" if config.username else "anonymous login"
        return f"the server refused {who} ({name}): wrong user name or password?"
    if code in _OUR_CERT_REFUSED and secured:
        return our_certificate_refused(config, name)
    return None


def our_certificate_refused(config: OpcUaSourceConfig, why: str) -> str:
    return f"the server rejected our certificate ({why}): have it trust {config.certificate}"


def _in_secure_channel(exc: BaseException) -> bool:
    """Whether `exc` was raised while asyncua opened the secure channel."""
    return any(
        frame.f_code.co_name == "open_secure_channel"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def first_certificate(data: bytes | None) -> bytes:
    """The leaf certificate of a DER chain (servers may send the chain concatenated)."""
    if not data:
        return b""
    try:
        x509.load_der_x509_certificate(data)
        return data
    except ValueError:
        pass
    # A DER SEQUENCE: 0x30, then its length in short or long form; the leaf comes first.
    if len(data) < 4 or data[0] != 0x30:
        return data
    if data[1] < 0x80:
        return data[: 2 + data[1]]
    n = data[1] & 0x7F
    length = int.from_bytes(data[2 : 2 + n], "big")
    return data[: 2 + n + length]


def _describe(ep: ua.EndpointDescription) -> str:
    policy = str(ep.SecurityPolicyUri).rsplit("#", 1)[-1] or "None"
    mode = ep.SecurityMode.name.rstrip("_")
    return f"{policy}/{mode}"


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return read_certificate(path.read_bytes())
    except OSError as exc:
        raise ConnectError(f"cannot read the certificate {path}: {exc.strerror}") from None
    except ValueError:
        raise ConnectError(f"{path} is not a DER or PEM certificate") from None


def _public(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")

"""The simulated OPC UA server's security: endpoints, certificate, users, trusted clients.

Security is either policy None with anonymous access, or Basic256Sha256 SignAndEncrypt only.
asyncua 2.1 still lets a client open a None secure channel and activate a session on a server
that offers no None endpoint (the channel falls back to its initial None policy), so in
sign_and_encrypt mode a None channel is given a permission ruleset that refuses every service
after the handshake: such a client can ask for endpoints but cannot browse, read or subscribe.
With `users`, only those user names and passwords are accepted (anonymous is refused); with
security "none" the password then crosses the wire in clear, as OPC UA allows: fine on a test
bench, which is all this server is for. With `trusted_clients` (a folder of DER certificates),
a secure channel from a client whose certificate is not in the folder is refused as strict
servers refuse it: an OpenSecureChannel response with BadSecurityChecksFailed. The folder is
read at each channel, so trusting a client is copying its certificate there.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from asyncua import ua
from asyncua.crypto.permission_rules import PermissionRuleset, User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone
from asyncua.server import binary_server_asyncio
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary

from firmware_sim.certs import create_certificate
from firmware_sim.opcua_nodes import status_code

Security = Literal["none", "sign_and_encrypt"]


class PasswordUsers(UserManager):
    """Accepts only the configured user names with their passwords (constant-time compare)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is None or password is None or username not in self._users:
            return None
        if not hmac.compare_digest(password.encode(), self._users[username].encode()):
            return None
        return User(role=UserRole.User, name=username)


class _RefuseAll(PermissionRuleset):
    def check_validity(self, user: Any, action_type: Any, body: Any) -> bool:
        return False


class _StrictProcessor(UaProcessor):
    """asyncua's per-connection processor, refusing secure channels from untrusted clients.

    Only for servers that set `lineside_trusted_clients` on their internal server (a folder);
    every other server in the process behaves as asyncua's own.
    """

    def open_secure_channel(self, algohdr: Any, seqhdr: Any, body: Any) -> None:
        folder: Path | None = getattr(self.iserver, "lineside_trusted_clients", None)
        sender = bytes(algohdr.SenderCertificate or b"")
        if folder is None or not sender or _trusted(folder, sender):
            super().open_secure_channel(algohdr, seqhdr, body)  # type: ignore[no-untyped-call]
            return
        request = struct_from_binary(ua.OpenSecureChannelRequest, body)
        self._connection.select_policy(
            algohdr.SecurityPolicyURI, algohdr.SenderCertificate, request.Parameters.SecurityMode
        )
        response = ua.OpenSecureChannelResponse()
        response.ResponseHeader.ServiceResult = status_code(StatusCodes.BadSecurityChecksFailed)
        self.send_response(  # type: ignore[no-untyped-call]
            request.RequestHeader.RequestHandle, seqhdr, response, ua.MessageType.SecureOpen
        )


def _trusted(folder: Path, certificate: bytes) -> bool:
    return any(p.read_bytes() == certificate for p in folder.glob("*.der") if p.is_file())


async def secure(
    server: Server,
    *,
    security: Security,
    users: Mapping[str, str] | None,
    cert_dir: Path | None,
    application_uri: str,
    keep_certificate: bool,
    policies: Sequence[ua.SecurityPolicyType],
    trusted_clients: Path | None,
) -> None:
    """Set `server`'s identity tokens, security policies, certificate and client trust.

    The server is made with `PasswordUsers(users)` as its user manager when `users` is given.
    """
    if users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    else:
        server.set_identity_tokens([ua.AnonymousIdentityToken])
    if security == "none":
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        return
    assert cert_dir is not None
    await _load_certificate(server, cert_dir, application_uri, keep_certificate)
    server.set_security_policy(list(policies))
    # asyncua builds its policy list at start by appending, so this entry survives; it
    # matches None channels (no endpoint is advertised for it) and refuses their services.
    server._policies.append(
        SecurityPolicyFactory(  # type: ignore[no-untyped-call]
            SecurityPolicyNone,
            ua.MessageSecurityMode.None_,
            permission_ruleset=_RefuseAll(),
        )
    )
    if trusted_clients is not None:
        server.iserver.lineside_trusted_clients = trusted_clients  # type: ignore[attr-defined]
        binary_server_asyncio.UaProcessor = _StrictProcessor  # type: ignore[attr-defined]


async def _load_certificate(
    server: Server, cert_dir: Path, application_uri: str, keep_certificate: bool
) -> None:
    cert = cert_dir / "server-cert.der"
    key = cert_dir / "server-key.pem"
    if not (keep_certificate and cert.exists() and key.exists()):
        await create_certificate(cert, key, application_uri, socket.gethostname())
    await server.load_certificate(cert)
    await server.load_private_key(key)

"""Self-signed application certificates for the simulated plant's OPC UA server and test clients.

OPC UA SignAndEncrypt needs an application instance certificate on both ends: the certificate's
URI subject-alt-name must equal the application URI the peer announces, so the URI is a
parameter, not a constant. This is deliberately small and only for the simulator; the agent's
own certificates come from `lineside certs create`.

Files: the certificate is DER (what OPC UA puts on the wire), the key is PKCS#8 PEM. asyncua
picks the decoder from the file suffix, so keep `.der` for the certificate and `.pem` for the key.
"""

from __future__ import annotations

from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography.x509.oid import ExtendedKeyUsageOID

SUBJECT = {"organizationName": "lineside simulator"}


async def create_certificate(path_cert: Path, path_key: Path, app_uri: str, hostname: str) -> None:
    """Write a self-signed certificate and key for `app_uri` on `hostname` unless usable ones exist.

    An existing pair is reused when the certificate still names `app_uri` and `hostname` and has
    not expired (a 2048-bit key takes a noticeable fraction of a second to make); otherwise the
    missing or stale part is regenerated. Valid for 365 days, for both client and server use.
    """
    if path_cert.suffix != ".der" or path_key.suffix != ".pem":
        raise ValueError(
            f"certificate must end in .der and key in .pem (got {path_cert.name}, {path_key.name})"
        )
    path_cert.parent.mkdir(parents=True, exist_ok=True)
    path_key.parent.mkdir(parents=True, exist_ok=True)
    await cert_gen.setup_self_signed_certificate(
        path_key,
        path_cert,
        app_uri,
        hostname,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        SUBJECT,
    )

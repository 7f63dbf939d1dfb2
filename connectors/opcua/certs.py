"""The agent's OPC UA application instance certificate: a self-signed RSA certificate and key.

What OPC UA Part 6 (6.2.2) asks of an application certificate, and what servers check: the
application URI as a URI in the subjectAltName (servers compare it with the URI the client
announces), the host name as a DNS name, key usages for signing and encrypting, and both the
client and server extended key usages (some servers insist on clientAuth). RSA 2048 with
SHA-256 suits Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss alike.

The certificate is written as DER (what goes on the wire), the key as PKCS#8 PEM, created with
mode 0600 from the first byte (never world-readable, not even briefly), optionally encrypted
with a passphrase. Existing files are never overwritten unless asked.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connectors.opcua.trust import thumbprint

CERT_FILE = "cert.der"
KEY_FILE = "key.pem"
KEY_BITS = 2048
MAX_DAYS = 3650 * 2  # a typo like 36500 days is refused, not silently honoured

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


class CertificateError(Exception):
    """The certificate cannot be created as asked (bad URI or days, files exist, no access)."""


@dataclass(frozen=True, slots=True)
class CertFiles:
    """What `create` wrote."""

    certificate: Path
    private_key: Path
    application_uri: str
    thumbprint: str
    not_after: datetime


def check_uri(uri: str) -> str:
    """`uri` if it is an absolute URI (urn:..., http://...), else CertificateError."""
    if not _URI.fullmatch(uri):
        raise CertificateError(
            f"application URI {uri!r} is not a URI: use a form like urn:<company>:lineside:<host>"
        )
    return uri


def build_certificate(
    key: rsa.RSAPrivateKey, uri: str, hostname: str, days: int, now: datetime
) -> x509.Certificate:
    """A self-signed OPC UA application certificate for `uri` on `hostname`, from `now`."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"lineside@{hostname}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lineside"),
        ]
    )
    public = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # A few minutes of slack for peers whose clock runs a little behind ours.
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName(hostname)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def create(
    out: Path,
    uri: str,
    *,
    days: int = 365,
    hostname: str | None = None,
    passphrase: str | None = None,
    overwrite: bool = False,
    now: datetime | None = None,
) -> CertFiles:
    """Write `out/cert.der` and `out/key.pem` (mode 0600) for `uri`; CertificateError if not."""
    check_uri(uri)
    if not 1 <= days <= MAX_DAYS:
        raise CertificateError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    host = hostname or socket.gethostname()
    cert_path, key_path = out / CERT_FILE, out / KEY_FILE
    if not overwrite:
        for path in (cert_path, key_path):
            if path.exists():
                raise CertificateError(f"{path} exists; pass --force to replace it")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    cert = build_certificate(key, uri, host, days, now or datetime.now(UTC))
    encryption = (
        BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase else NoEncryption()
    )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption)
    der = cert.public_bytes(Encoding.DER)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_private(key_path, key_pem)
        cert_path.write_bytes(der)
    except OSError as exc:
        raise CertificateError(f"cannot write to {out}: {exc.strerror}") from None
    return CertFiles(cert_path, key_path, uri, thumbprint(der), cert.not_valid_after_utc)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 by open(2) itself: a chmod after writing would leave a readable window.
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

"""The trust list of OPC UA server certificates: a folder of certificate files, plus pinning.

A server certificate is trusted when a file in the trust folder holds exactly it (same SHA-1
thumbprint, the form OPC UA tools and Windows show). With trust on first use, a server whose
application URI no trusted certificate names yet is trusted once and its certificate written
to the folder: from then on it is pinned like any other, and a different certificate for the
same URI is refused (a swapped server, or a man in the middle, until an operator says
otherwise by replacing the file).

A refused certificate is saved to the `rejected` folder next to the trust folder (the layout
OPC UA stacks use) so that trusting it is one `mv`, not a copy from a packet capture.

`decide` is the pure core; `check_server_certificate` reads and writes the folders.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from agent.errors import ConnectError

log = logging.getLogger("lineside.opcua")

CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class UntrustedCertificate(ConnectError):
    """The server's certificate is not in the trust list (or differs from the pinned one)."""


@dataclass(frozen=True, slots=True)
class Trusted:
    """One certificate of the trust folder."""

    path: Path
    thumbprint: str
    uris: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a server certificate: trust it, pin it (first use), or refuse it."""

    action: str  # "trusted" | "pin" | "refuse"
    reason: str = ""
    pinned: Trusted | None = None  # refuse: the trusted certificate the server's URI maps to


def thumbprint(der: bytes) -> str:
    """The SHA-1 thumbprint of a DER certificate, upper-case hex (as OPC UA tools show it)."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def application_uris(cert: x509.Certificate) -> tuple[str, ...]:
    """The URIs in a certificate's subjectAltName (OPC UA puts the application URI there)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def decide(der: bytes, uris: Sequence[str], trusted: Iterable[Trusted], tofu: bool) -> Verdict:
    """Trust, pin or refuse the certificate `der` naming `uris`, given the trust list. Pure."""
    print_ = thumbprint(der)
    same_uri: Trusted | None = None
    for entry in trusted:
        if entry.thumbprint == print_:
            return Verdict("trusted")
        if same_uri is None and set(entry.uris) & set(uris):
            same_uri = entry
    if same_uri is not None:
        return Verdict("refuse", "changed", same_uri)
    if tofu and uris:
        return Verdict("pin")
    return Verdict("refuse", "unknown")


def load_trusted(folder: Path) -> list[Trusted]:
    """Every readable certificate file in `folder` (DER or PEM); others are skipped with a log."""
    if not folder.is_dir():
        return []
    out: list[Trusted] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in CERT_SUFFIXES or not path.is_file():
            continue
        try:
            cert = read_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("skipping %s in the trust folder: %s", path, exc)
            continue
        der = cert.public_bytes(Encoding.DER)
        out.append(Trusted(path, thumbprint(der), application_uris(cert)))
    return out


def read_certificate(data: bytes) -> x509.Certificate:
    """A certificate from DER or PEM bytes; ValueError when it is neither."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def file_name(uri: str, print_: str) -> str:
    """A file name for a certificate: the URI made safe, and the start of the thumbprint."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri).strip("_") or "server"
    return f"{safe[:80]}_{print_[:16]}.der"


def check_server_certificate(der: bytes, trust_dir: Path, trust_on_first_use: bool) -> None:
    """Accept the server certificate `der` per the trust folder, or raise UntrustedCertificate.

    With `trust_on_first_use` an unknown server is pinned: its certificate is written to
    `trust_dir` (created, mode 0700) before the connection goes on.
    """
    cert = read_certificate(der)
    uris = application_uris(cert)
    print_ = thumbprint(der)
    name = uris[0] if uris else cert.subject.rfc4514_string()
    verdict = decide(der, uris, load_trusted(trust_dir), trust_on_first_use)
    if verdict.action == "trusted":
        return
    if verdict.action == "pin":
        path = trust_dir / file_name(uris[0], print_)
        try:
            trust_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.write_bytes(der)
        except OSError as exc:
            raise UntrustedCertificate(
                f"cannot pin the server certificate of {name} in {trust_dir}: {exc.strerror}"
            ) from None
        log.warning("trusting %s on first use: certificate %s pinned as %s", name, print_, path)
        return
    saved = _save_rejected(der, trust_dir, uris[0] if uris else "server", print_)
    where = f" (saved as {saved})" if saved is not None else ""
    if verdict.pinned is not None:
        raise UntrustedCertificate(
            f"server certificate of {name} changed: thumbprint {print_}, but "
            f"{verdict.pinned.path} pins {verdict.pinned.thumbprint}; if the change is expected, "
            f"replace that file with the new certificate{where}"
        )
    raise UntrustedCertificate(
        f"server certificate not trusted: {name}, thumbprint {print_}; to trust it, put it in "
        f"{trust_dir}{where}"
    )


def _save_rejected(der: bytes, trust_dir: Path, uri: str, print_: str) -> Path | None:
    """Best effort: the refused certificate in `<trust_dir>/../rejected`, for the operator."""
    folder = trust_dir.parent / "rejected"
    path = folder / file_name(uri, print_)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_bytes(der)
    except OSError:
        return None
    return path

"""`connectors.opcua.certs`: the agent's application certificate, as OPC UA peers check it."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from connectors.opcua import certs
from connectors.opcua.trust import application_uris, thumbprint

URI = "urn:acme:lineside:edge-1"


def test_create_writes_a_der_certificate_naming_the_uri_and_a_private_key(tmp_path: Path) -> None:
    made = certs.create(tmp_path / "pki", URI, days=30, hostname="edge-1.plant")
    assert made.certificate == tmp_path / "pki" / "cert.der"
    assert made.private_key == tmp_path / "pki" / "key.pem"
    der = made.certificate.read_bytes()
    cert = x509.load_der_x509_certificate(der)
    assert application_uris(cert) == (URI,)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge-1.plant"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    # What asyncua's EXT validation and stricter servers demand of an application certificate.
    assert usage.digital_signature and usage.content_commitment
    assert usage.key_encipherment and usage.data_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH in eku
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=30) <= lifetime <= timedelta(days=30, minutes=6)
    assert made.thumbprint == thumbprint(der)
    key = load_pem_private_key(made.private_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_the_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    made = certs.create(tmp_path, URI)
    assert stat.S_IMODE(made.private_key.stat().st_mode) == 0o600


def test_an_encrypted_key_opens_with_its_passphrase_only(tmp_path: Path) -> None:
    made = certs.create(tmp_path, URI, passphrase="correct horse")
    data = made.private_key.read_bytes()
    assert b"ENCRYPTED" in data
    load_pem_private_key(data, password=b"correct horse")
    with pytest.raises(ValueError):
        load_pem_private_key(data, password=b"wrong")


def test_the_clock_can_be_injected_to_make_an_expired_certificate(tmp_path: Path) -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    made = certs.create(tmp_path, URI, days=1, now=past)
    cert = x509.load_der_x509_certificate(made.certificate.read_bytes())
    assert cert.not_valid_after_utc == past + timedelta(days=1)


def test_existing_files_are_kept_unless_overwrite(tmp_path: Path) -> None:
    first = certs.create(tmp_path, URI)
    with pytest.raises(certs.CertificateError, match="exists; pass --force"):
        certs.create(tmp_path, URI)
    assert first.certificate.read_bytes() == (tmp_path / "cert.der").read_bytes()
    second = certs.create(tmp_path, URI, overwrite=True)
    assert second.thumbprint != first.thumbprint
    assert stat.S_IMODE(second.private_key.stat().st_mode) == 0o600


@pytest.mark.parametrize("uri", ["", "lineside", "urn:has space", "1urn:x"])
def test_a_uri_that_is_not_one_is_refused(tmp_path: Path, uri: str) -> None:
    with pytest.raises(certs.CertificateError, match="is not a URI"):
        certs.create(tmp_path, uri)
    assert not (tmp_path / "key.pem").exists()


@pytest.mark.parametrize("days", [0, -1, certs.MAX_DAYS + 1])
def test_days_out_of_range_are_refused(tmp_path: Path, days: int) -> None:
    with pytest.raises(certs.CertificateError, match="days must be between"):
        certs.create(tmp_path, URI, days=days)


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(certs.CertificateError, match="cannot write to"):
        certs.create(blocker / "pki", URI)

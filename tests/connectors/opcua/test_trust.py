"""`connectors.opcua.trust`: the trust folder, trust on first use and pinning."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connectors.opcua import certs
from connectors.opcua.trust import (
    Trusted,
    UntrustedCertificate,
    check_server_certificate,
    decide,
    file_name,
    load_trusted,
    thumbprint,
)

SERVER = "urn:plant:plc-7"


@pytest.fixture(scope="module")
def server_certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, bytes]:
    """Two certificates for the same server URI (a replaced or spoofed server), one for another."""
    d = tmp_path_factory.mktemp("servers")
    a = certs.create(d / "a", SERVER).certificate.read_bytes()
    b = certs.create(d / "b", SERVER).certificate.read_bytes()
    other = certs.create(d / "c", "urn:plant:plc-8").certificate.read_bytes()
    return a, b, other


def test_thumbprint_is_upper_case_sha1_hex() -> None:
    assert thumbprint(b"abc") == "A9993E364706816ABA3E25717850C26C9CD0D89D"


def test_decide(server_certs: tuple[bytes, bytes, bytes]) -> None:
    a, b, other = server_certs
    pinned_a = Trusted(Path("a.der"), thumbprint(a), (SERVER,))
    pinned_other = Trusted(Path("c.der"), thumbprint(other), ("urn:plant:plc-8",))
    assert decide(a, (SERVER,), [pinned_other, pinned_a], tofu=False).action == "trusted"
    assert decide(a, (SERVER,), [pinned_other], tofu=False).action == "refuse"
    assert decide(a, (SERVER,), [pinned_other], tofu=True).action == "pin"
    assert decide(a, (SERVER,), [], tofu=True).action == "pin"
    changed = decide(b, (SERVER,), [pinned_a], tofu=True)
    assert (changed.action, changed.reason, changed.pinned) == ("refuse", "changed", pinned_a)
    # A certificate naming no URI cannot be pinned to a server: never trusted on first use.
    assert decide(a, (), [], tofu=True).action == "refuse"


def test_unknown_certificate_is_refused_with_its_thumbprint_and_where_to_put_it(
    tmp_path: Path, server_certs: tuple[bytes, bytes, bytes]
) -> None:
    a, _, _ = server_certs
    trusted = tmp_path / "pki" / "trusted"
    with pytest.raises(UntrustedCertificate) as caught:
        check_server_certificate(a, trusted, trust_on_first_use=False)
    message = str(caught.value)
    rejected = tmp_path / "pki" / "rejected" / file_name(SERVER, thumbprint(a))
    assert message == (
        f"server certificate not trusted: {SERVER}, thumbprint {thumbprint(a)}; to trust it, "
        f"put it in {trusted} (saved as {rejected})"
    )
    assert "\n" not in message
    assert rejected.read_bytes() == a
    # The operator's move makes it trusted.
    trusted.mkdir(parents=True)
    rejected.rename(trusted / rejected.name)
    check_server_certificate(a, trusted, trust_on_first_use=False)


def test_first_use_pins_and_a_different_certificate_is_refused_later(
    tmp_path: Path, server_certs: tuple[bytes, bytes, bytes]
) -> None:
    a, b, other = server_certs
    trusted = tmp_path / "trusted"
    check_server_certificate(a, trusted, trust_on_first_use=True)
    (pin,) = trusted.iterdir()
    assert pin.read_bytes() == a and thumbprint(a)[:16] in pin.name
    check_server_certificate(a, trusted, trust_on_first_use=True)  # the same again: fine
    check_server_certificate(a, trusted, trust_on_first_use=False)  # pinned, not first use
    with pytest.raises(
        UntrustedCertificate, match=r"server certificate of urn:plant:plc-7 changed"
    ):
        check_server_certificate(b, trusted, trust_on_first_use=True)
    assert [p.name for p in trusted.iterdir()] == [pin.name]  # nothing pinned over it
    check_server_certificate(other, trusted, trust_on_first_use=True)  # another server: pinned
    assert len(list(trusted.iterdir())) == 2


def test_the_trust_folder_takes_pem_and_skips_what_is_not_a_certificate(
    tmp_path: Path, server_certs: tuple[bytes, bytes, bytes]
) -> None:
    a, _, _ = server_certs
    pem = x509.load_der_x509_certificate(a).public_bytes(Encoding.PEM)
    (tmp_path / "plc7.pem").write_bytes(pem)
    (tmp_path / "notes.der").write_bytes(b"not a certificate")
    (tmp_path / "README.txt").write_text("ignored: not a certificate suffix")
    (entry,) = load_trusted(tmp_path)
    assert (entry.path.name, entry.thumbprint, entry.uris) == ("plc7.pem", thumbprint(a), (SERVER,))
    check_server_certificate(a, tmp_path, trust_on_first_use=False)


def test_a_missing_trust_folder_trusts_nothing(tmp_path: Path) -> None:
    assert load_trusted(tmp_path / "absent") == []

"""Private mosquitto brokers for tests, with test certificates made on the spot.

Each broker is a real `mosquitto` process with its own config file, bound to 127.0.0.1 on a
port picked by the kernel, so tests run side by side without clashing. The certificates are
generated with `cryptography` (a CA, a server certificate for 127.0.0.1 and localhost, a client
certificate, and a second, unrelated CA for bad-certificate tests); nothing is checked in.

The `mosquitto` fixture in `tests/conftest.py` wraps `BrokerFactory`; MQTT and Sparkplug tests
both use it.
"""

from __future__ import annotations

import asyncio
import datetime
import getpass
import ipaddress
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

START_TIMEOUT = 10.0  # seconds for a broker to accept connections


def mosquitto_binary() -> str:
    """Where mosquitto is; fails (never skips) with a clear message when it is missing."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError(
            "mosquitto is not installed: the MQTT tests need a real broker "
            "(apt-get install mosquitto, or run .ci/run which installs it)"
        )
    return found


def _passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if Path("/usr/bin/mosquitto_passwd").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto_passwd is not installed (it comes with mosquitto)")
    return found


# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True, slots=True)
class Certificates:
    ca: Path  # the CA that signed the server and client certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path  # an unrelated CA: verifying the server against it must fail


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def make_certificates(folder: Path) -> Certificates:
    """A test CA with a server and a client certificate, and an unrelated CA, as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca("lineside test CA")
    wrong_ca = _ca("lineside unrelated CA")
    server = _leaf("localhost", ca, server=True)
    client = _leaf("lineside-agent", ca, server=False)
    certs = Certificates(
        ca=folder / "ca.crt",
        server_cert=folder / "server.crt",
        server_key=folder / "server.key",
        client_cert=folder / "client.crt",
        client_key=folder / "client.key",
        wrong_ca=folder / "wrong-ca.crt",
    )
    _write_cert(certs.ca, ca[0])
    _write_cert(certs.wrong_ca, wrong_ca[0])
    _write_cert(certs.server_cert, server[0])
    _write_key(certs.server_key, server[1])
    _write_cert(certs.client_cert, client[0])
    _write_key(certs.client_key, client[1])
    return certs


# ---------------------------------------------------------------------------------------------
# Brokers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Mosquitto:
    """One private broker: plain listener on `port`, TLS listener on `tls_port` when asked."""

    host = "127.0.0.1"

    def __init__(
        self,
        folder: Path,
        certs: Certificates,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        acl: str | None = None,
        persistent: bool = False,
    ) -> None:
        self.persistent = persistent  # keep sessions and queued messages across a graceful stop
        self.folder = folder
        self.certs = certs
        self.users = dict(users or {})
        self.tls = tls
        self.acl = acl
        self.port = 0
        self.tls_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log = folder / "mosquitto.log"
        folder.mkdir(parents=True, exist_ok=True)
        if self.users:
            passwd = self.folder / "passwd"
            for i, (user, password) in enumerate(self.users.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run(
                    [_passwd_binary(), *create, "-b", str(passwd), user, password],
                    check=True,
                    capture_output=True,
                )
        if acl is not None:
            (self.folder / "acl").write_text(acl, encoding="utf-8")

    # The certificates a client needs, as plain paths.
    @property
    def ca(self) -> Path:
        return self.certs.ca

    @property
    def wrong_ca(self) -> Path:
        return self.certs.wrong_ca

    @property
    def client_cert(self) -> Path:
        return self.certs.client_cert

    @property
    def client_key(self) -> Path:
        return self.certs.client_key

    @property
    def log(self) -> str:
        """What the broker logged (for failure messages)."""
        return self._log.read_text(encoding="utf-8", errors="replace") if self._log.exists() else ""

    def _config(self) -> str:
        auth = [f"password_file {self.folder / 'passwd'}", "allow_anonymous false"]
        if not self.users:
            auth = ["allow_anonymous true"]
        if self.acl is not None:
            auth.append(f"acl_file {self.folder / 'acl'}")
        lines = [
            # mosquitto started as root drops to the user "mosquitto", which cannot read the
            # test folder; naming the current user keeps it as it is.
            f"user {getpass.getuser()}",
            *(
                ["persistence true", f"persistence_location {self.folder}/"]
                if self.persistent
                else ["persistence false"]
            ),
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            *auth,
        ]
        if self.tls_port is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.certs.ca}",
                f"certfile {self.certs.server_cert}",
                f"keyfile {self.certs.server_key}",
                "require_certificate false",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the broker; a restart keeps its ports, a first start picks free ones."""
        if self._process is not None:
            raise RuntimeError("broker already running")
        first = self.port == 0
        for _attempt in range(5):
            if first:
                self.port = _free_port()
                self.tls_port = _free_port() if self.tls else None
            if self._launch():
                return
            if not first:
                break
        raise RuntimeError(f"mosquitto did not start; its log:\n{self.log}")

    def _launch(self) -> bool:
        conf = self.folder / "mosquitto.conf"
        conf.write_text(self._config(), encoding="utf-8")
        with self._log.open("ab") as log:
            process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None else [])
        deadline = time.monotonic() + START_TIMEOUT
        # A process cannot take an injected clock: poll the listeners until they answer.
        while time.monotonic() < deadline:
            if process.poll() is not None:  # exited: a port taken meanwhile, or a bad config
                return False
            if all(_accepts(port) for port in ports):
                self._process = process
                return True
            time.sleep(0.02)
        process.kill()
        process.wait()
        return False

    def stop(self, *, graceful: bool = False) -> None:
        """Kill the broker (connections drop at once); `start()` brings it back on its ports.

        `graceful` sends SIGTERM instead, so a persistent broker saves its sessions first.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if graceful:
            process.terminate()
            process.wait(timeout=10)
            return
        # SIGKILL ends a paused broker too; a SIGCONT first would let it answer what it holds.
        process.kill()
        process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze the broker: connections stay open but nothing is answered (no PUBACK)."""
        if self._process is None:
            raise RuntimeError("broker not running")
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


class BrokerFactory:
    """`factory(users=..., tls=..., acl=...)` starts a broker; `close()` stops them all."""

    def __init__(self, folder: Path, certs: Certificates) -> None:
        self.folder = folder
        self.certs = certs
        self.brokers: list[Mosquitto] = []

    def __call__(
        self,
        *,
        users: dict[str, str] | None = None,
        tls: bool = False,
        acl: str | None = None,
        persistent: bool = False,
    ) -> Mosquitto:
        broker = Mosquitto(
            self.folder / f"broker{len(self.brokers)}",
            self.certs,
            users=users,
            tls=tls,
            acl=acl,
            persistent=persistent,
        )
        self.brokers.append(broker)
        broker.start()
        return broker

    def close(self) -> None:
        for broker in self.brokers:
            broker.stop()


def persistent_subscriber(
    broker: Mosquitto,
    client_id: str,
    topics: list[str],
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None],
) -> mqtt.Client:
    """A subscribed MQTT 5 client whose session (its queued QoS 1 messages) outlives a broker
    restart: it reconnects every second and the broker keeps what arrived meanwhile."""
    subscribed = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.reconnect_delay_set(min_delay=1, max_delay=1)
    client.on_connect = lambda c, *a: c.subscribe([(topic, 1) for topic in topics])
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    session = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    session.SessionExpiryInterval = 3600
    client.connect(broker.host, broker.port, clean_start=False, properties=session)
    client.loop_start()
    assert subscribed.wait(10), "no SUBACK"
    return client


async def scripted_broker(
    answer: Callable[[bytes], Awaitable[bytes]],
) -> tuple[asyncio.Server, int]:
    """A hand-written MQTT 5 broker on 127.0.0.1 (port 0): it accepts the connection with a
    CONNACK and writes `answer(body)` for every PUBLISH it reads (its variable header and
    payload), whatever mosquitto would say: a malformed or late PUBACK, one for another id.
    Returns the server and its port; the caller closes it."""

    async def packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        kind = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:  # the variable byte integer of the remaining length
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return kind & 0xF0, await reader.readexactly(length)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await packet(reader)  # CONNECT
            writer.write(b"\x20\x03\x00\x00\x00")  # CONNACK: accepted, no properties
            while True:
                kind, body = await packet(reader)
                if kind == 0x30:  # PUBLISH
                    writer.write(await answer(body))
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]

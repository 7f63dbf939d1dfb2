"""The simulated plant's OPC UA server: one folder per machine, one read-only variable per tag.

Node ids follow the profile rule `ns=<index>;s=<machine>.<tag>` (the folder is
`ns=<index>;s=<machine>`), data types follow `opcua_type(tag)`, values are engineering units.
The plant's tick loop calls `refresh()` (or `update()` with values it already has) a few times a
second; only nodes whose value changed are written, so subscriptions see real changes only.

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

`extra_namespaces` are registered before the simulator's own, so its index moves: what a real
server may do across restarts (start another with them on the same port).
"""

from __future__ import annotations

import hmac
import math
import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import PermissionRuleset, User, UserRole
from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone
from asyncua.server import binary_server_asyncio
from asyncua.server.internal_server import InternalServer
from asyncua.server.server import Server
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary

from firmware_sim.certs import create_certificate
from firmware_sim.profile import Profile, ProfileTag, opcua_type

Value = float | int | bool | str
Security = Literal["none", "sign_and_encrypt"]

# UNECE is the unit namespace OPC UA Part 8 names; -1 says "no UNECE code", the display name
# carries the profile's unit text. Good enough for a simulator, and what generic clients show.
_EU_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"

_INT_RANGE = {
    "Int16": (-(2**15), 2**15 - 1),
    "UInt16": (0, 2**16 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "UInt32": (0, 2**32 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt64": (0, 2**64 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38
_F32 = struct.Struct("<f")
DOUBLES_PER_FOLDER = 100  # see `add_doubles`


class ServedMachine(Protocol):
    """What the server needs of a machine model."""

    @property
    def name(self) -> str: ...

    @property
    def profile(self) -> Profile: ...

    def values(self) -> Mapping[str, Value]: ...


class OpcUaServerError(Exception):
    """The server cannot be set up or started as asked."""


def coerce(type_name: str, value: object) -> bool | int | float | str:
    """`value` as the Python value asyncua encodes for `type_name`, or ValueError/TypeError.

    Checked here because asyncua packs values only when a client reads them: an out-of-range
    integer would fail inside the server's response path instead of at the source.
    """
    if type_name == "String":
        if not isinstance(value, str):
            raise TypeError(f"expected text, got {type(value).__name__}")
        return value
    if type_name == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"expected a boolean, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if type_name in ("Float", "Double"):
        f = float(value)
        if type_name == "Float":
            if math.isfinite(f) and abs(f) > _FLOAT32_MAX:
                raise ValueError(f"{f} does not fit a 32-bit float")
            # Round to what the wire carries, so change detection works at served precision
            # and the server holds exactly the value a client reads.
            f = _F32.unpack(_F32.pack(f))[0]
        return f
    lo, hi = _INT_RANGE[type_name]
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not an integer")
    n = int(value)
    if not lo <= n <= hi:
        raise ValueError(f"{n} is outside {type_name} [{lo}, {hi}]")
    return n


def _same(a: tuple[object, ua.StatusCode], b: tuple[object, ua.StatusCode]) -> bool:
    """Whether a node would serve the same thing; NaN counts as equal to NaN (no rewrite churn).

    Values of one node always have its one coerced Python type, so True == 1 cannot hide a change.
    """
    if a[1] != b[1]:
        return False
    x, y = a[0], b[0]
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


_ZERO: dict[str, bool | int | float | str] = {
    "String": "",
    "Boolean": False,
    "Float": 0.0,
    "Double": 0.0,
}


def _zero(type_name: str) -> bool | int | float | str:
    return _ZERO.get(type_name, 0)


def _node_id(identifier: str, ns: int) -> ua.NodeId:
    return ua.NodeId(ua.String(identifier), ua.Int16(ns))


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


class _PasswordUsers(UserManager):
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
        response.ResponseHeader.ServiceResult = _status(StatusCodes.BadSecurityChecksFailed)
        self.send_response(  # type: ignore[no-untyped-call]
            request.RequestHeader.RequestHandle, seqhdr, response, ua.MessageType.SecureOpen
        )


def _trusted(folder: Path, certificate: bytes) -> bool:
    return any(p.read_bytes() == certificate for p in folder.glob("*.der") if p.is_file())


class _SharedDataValue(ua.DataValue):
    """A DataValue nobody mutates once written, so asyncua's monitored items need no copy of it.

    Each monitored item deep-copies every value written to its node (asyncua 2.1,
    `MonitoredItemValues.set_current_datavalue`), in case the writer changes the object later:
    about 40 µs for a Double with two timestamps, most of what a change costs the server. The
    bulk path builds a fresh value per write and keeps no reference to it, so sharing is safe.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> _SharedDataValue:
        return self


class _Node:
    """One served variable and the last (value, status) pair written to it."""

    __slots__ = ("last", "node_id", "tag", "type_name", "variant")

    def __init__(self, tag: ProfileTag, node_id: ua.NodeId) -> None:
        self.tag = tag
        self.type_name = opcua_type(tag)
        self.variant: ua.VariantType = getattr(ua.VariantType, self.type_name)
        self.node_id = node_id
        self.last: tuple[object, ua.StatusCode] | None = None


class SimOpcUaServer:
    """An asyncua server exposing machines' profile tags; start, refresh, stop."""

    def __init__(
        self,
        machines: Iterable[ServedMachine],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: Security = "none",
        cert_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
        namespace: str = "urn:lineside:sim",
        max_nodes_per_read: int | None = None,
        max_monitored_items_per_subscription: int | None = None,
        policies: Sequence[ua.SecurityPolicyType] = (
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ),
        keep_certificate: bool = False,
        trusted_clients: Path | None = None,
        extra_namespaces: Sequence[str] = (),
    ) -> None:
        self._machines = {m.name: m for m in machines}
        if not self._machines:
            raise OpcUaServerError("an OPC UA server needs at least one machine")
        if security not in ("none", "sign_and_encrypt"):
            raise OpcUaServerError(f"unknown security {security!r} (none, sign_and_encrypt)")
        if security == "sign_and_encrypt" and cert_dir is None:
            raise OpcUaServerError("sign_and_encrypt needs cert_dir for the server certificate")
        if users is not None and not users:
            raise OpcUaServerError("users is empty: nobody could log in")
        self.host = host
        self.port = port
        self.security: Security = security
        self.cert_dir = cert_dir
        self.users = dict(users) if users is not None else None
        self.namespace = namespace
        # Limits to advertise (OperationLimits.MaxNodesPerRead is also enforced: a bigger Read is
        # refused with BadTooManyOperations, as strict servers do); None keeps asyncua's own.
        self.max_nodes_per_read = max_nodes_per_read
        self.max_monitored_items_per_subscription = max_monitored_items_per_subscription
        # sign_and_encrypt only: the secure endpoints offered (other policies, Sign mode), and
        # whether a certificate already in cert_dir is served as it is (even expired: for tests
        # of clients that must refuse it) instead of being renewed.
        self.policies = tuple(policies)
        self.keep_certificate = keep_certificate
        # Client certificates a secure channel is opened for (None: any), and namespaces
        # registered before ours (both may change between `restart`s).
        self.trusted_clients = trusted_clients
        self.extra_namespaces = tuple(extra_namespaces)
        self.application_uri = f"{namespace}:server"
        self._server: Server | None = None
        self._ns = 0
        self._nodes: dict[str, list[_Node]] = {}
        self._frozen: set[str] = set()
        self._endpoint: str | None = None
        # The Value attribute of every node made by `add_doubles`, resolved once.
        self._doubles: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The URL clients connect to, with the port actually bound (after `start`)."""
        if self._endpoint is None:
            raise OpcUaServerError("the server is not started")
        return self._endpoint

    @property
    def namespace_index(self) -> int:
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        return self._ns

    @property
    def server_certificate(self) -> Path | None:
        """The DER certificate file clients may pin (sign_and_encrypt only)."""
        return self.cert_dir / "server-cert.der" if self.cert_dir is not None else None

    async def start(self) -> None:
        if self._server is not None:
            raise OpcUaServerError("the server is already started")
        server = Server(user_manager=_PasswordUsers(self.users) if self.users else None)
        await server.init()
        server.set_server_name("lineside simulated plant")
        await server.set_application_uri(self.application_uri)
        host_in_url = f"[{self.host}]" if ":" in self.host else self.host
        server.set_endpoint(f"opc.tcp://{host_in_url}:{self.port}/")
        if self.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        else:
            server.set_identity_tokens([ua.AnonymousIdentityToken])
        if self.security == "none":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            await self._load_certificate(server)
            server.set_security_policy(list(self.policies))
            # asyncua builds its policy list at start by appending, so this entry survives; it
            # matches None channels (no endpoint is advertised for it) and refuses their services.
            server._policies.append(
                SecurityPolicyFactory(  # type: ignore[no-untyped-call]
                    SecurityPolicyNone,
                    ua.MessageSecurityMode.None_,
                    permission_ruleset=_RefuseAll(),
                )
            )
            if self.trusted_clients is not None:
                server.iserver.lineside_trusted_clients = self.trusted_clients  # type: ignore[attr-defined]
                binary_server_asyncio.UaProcessor = _StrictProcessor  # type: ignore[attr-defined]
        for extra in self.extra_namespaces:
            await server.register_namespace(extra)
        self._ns = await server.register_namespace(self.namespace)
        await self._advertise_limits(server)
        await self._build(server)
        self._server = server
        # Serve real values from the first request on, never the placeholders.
        await self.refresh()
        try:
            await server.start()
        except OSError as exc:
            self._server = None
            raise OpcUaServerError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        bound = server.bserver.port if server.bserver is not None else 0
        if not bound:
            await self.stop()
            raise OpcUaServerError(f"{self.host!r} resolves to several addresses; give one IP")
        self._endpoint = f"opc.tcp://{host_in_url}:{bound}/"
        # Advertise the bound port, not the 0 the endpoints were built with.
        server.set_endpoint(self._endpoint)
        for edp in server.iserver.endpoints:
            edp.EndpointUrl = self._endpoint
            edp.Server.DiscoveryUrls = [self._endpoint]

    async def stop(self) -> None:
        server, self._server, self._endpoint = self._server, None, None
        if server is not None:
            await server.stop()

    async def __aenter__(self) -> SimOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def subscription_count(self) -> int:
        """Subscriptions the server holds now, of every session (orphans included)."""
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        return len(self._server.iserver.subscription_service.subscriptions)

    def monitored_item_counts(self) -> list[int]:
        """Monitored items per subscription the server holds now."""
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        subs = self._server.iserver.subscription_service.subscriptions.values()
        return [len(s.monitored_item_srv._monitored_items) for s in subs]

    async def _advertise_limits(self, server: Server) -> None:
        limits = (
            (
                ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                self.max_nodes_per_read,
            ),
            (
                ObjectIds.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription,
                self.max_monitored_items_per_subscription,
            ),
        )
        for node_id, limit in limits:
            if limit is not None:
                node = server.get_node(ua.NodeId(ua.Int32(node_id)))
                await node.write_value(ua.Variant(limit, ua.VariantType.UInt32))
        if self.max_nodes_per_read is not None:
            most = self.max_nodes_per_read

            async def refuse_big_reads(event: Any, dispatcher: Any) -> None:
                if len(event.request_params.NodesToRead) > most:
                    raise ServiceError(StatusCodes.BadTooManyOperations)

            server.subscribe_server_callback(CallbackType.PreRead, refuse_big_reads)

    async def add_variable(self, machine: str, name: str, value: ua.Variant) -> str:
        """Serve one more variable `ns=<index>;s=<machine>.<name>` of any type (arrays too).

        For tests of clients that must handle what the profiles do not produce (SByte, Byte,
        DateTime, arrays). Returns the node id text; `write_variable` changes its value.
        """
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        node_id = _node_id(f"{machine}.{name}", self._ns)
        folder = self._server.get_node(_node_id(machine, self._ns))
        await folder.add_variable(node_id, ua.QualifiedName(name, self._ns), value)
        return node_id.to_string()

    async def add_doubles(self, machine: str, names: Sequence[str]) -> list[str]:
        """Serve Double variables `ns=<index>;s=<machine>.<name>` (0.0) for `write_doubles`.

        The machine's folder must exist (a machine given to the constructor). The variables are
        browsed under sub-folders `<machine>#<k>` of at most `DOUBLES_PER_FOLDER` each: asyncua
        scans a parent's references on every node added to it, so one folder of 20,000 takes
        minutes to fill. Returns the node id texts, in the order of `names`.
        """
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        server, ns = self._server, self._ns
        parent = server.get_node(_node_id(machine, ns))
        out = []
        folder: Node | None = None
        for i, name in enumerate(names):
            if i % DOUBLES_PER_FOLDER == 0:
                block = f"{machine}#{i // DOUBLES_PER_FOLDER}"
                folder = await parent.add_folder(_node_id(block, ns), ua.QualifiedName(block, ns))
            assert folder is not None
            node_id = _node_id(f"{machine}.{name}", ns)
            await folder.add_variable(
                node_id, ua.QualifiedName(name, ns), ua.Variant(0.0, ua.VariantType.Double)
            )
            data = server.iserver.aspace.get(node_id)
            assert data is not None  # just added
            text = node_id.to_string()
            self._doubles[text] = data.attributes[AttributeIds.Value]
            out.append(text)
        return out

    async def write_doubles(
        self, node_ids: Sequence[str], values: Sequence[float], source_time: datetime | None = None
    ) -> int:
        """Write many nodes made by `add_doubles` at once (Good status); returns the count.

        The bulk path for load tests, about 4x cheaper per change than `write_variable`: the
        value attribute is set directly (the node's type is known, so asyncua's per-write type
        check and node lookup are skipped) and the subscriptions' data-change callbacks are
        called as asyncua's own write would call them, with a value they need not copy. Each
        monitored item still applies its own filter and queue, so clients see ordinary
        notifications. The server timestamp is now, the source timestamp `source_time` or now.
        """
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        if len(node_ids) != len(values):
            raise ValueError(f"{len(node_ids)} node ids but {len(values)} values")
        attrs = self._doubles
        missing = [n for n in node_ids if n not in attrs]
        if missing:
            raise KeyError(f"not made by add_doubles: {missing[0]}")
        now = ua.DateTime.now(UTC)
        sampled = now if source_time is None else cast(ua.DateTime, source_time)
        double = ua.VariantType.Double
        good = _status(StatusCodes.Good)
        for node_id, value in zip(node_ids, values, strict=True):
            attval = attrs[node_id]
            dv = _SharedDataValue(
                ua.Variant(float(value), double), good, SourceTimestamp=sampled, ServerTimestamp=now
            )
            attval.value = dv
            for handle, callback in list(attval.datachange_callbacks.items()):
                await callback(handle, dv)
        return len(node_ids)

    async def write_variable(
        self,
        node_id: str,
        value: ua.Variant,
        status: int = StatusCodes.Good,
        source_time: datetime | None = None,
    ) -> None:
        """Write a value (and status) to a node made by `add_variable`.

        The server timestamp is now; the source timestamp too unless `source_time` says when
        the device sampled it.
        """
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        now = ua.DateTime.now(UTC)
        # ua.DateTime only narrows datetime for typing; asyncua encodes any aware datetime.
        sampled = now if source_time is None else cast(ua.DateTime, source_time)
        dv = ua.DataValue(value, _status(status), SourceTimestamp=sampled, ServerTimestamp=now)
        await self._server.write_attribute_value(ua.NodeId.from_string(node_id), dv)

    async def _load_certificate(self, server: Server) -> None:
        assert self.cert_dir is not None
        cert = self.cert_dir / "server-cert.der"
        key = self.cert_dir / "server-key.pem"
        if not (self.keep_certificate and cert.exists() and key.exists()):
            await create_certificate(cert, key, self.application_uri, socket.gethostname())
        await server.load_certificate(cert)
        await server.load_private_key(key)

    async def _build(self, server: Server) -> None:
        objects = server.nodes.objects
        ns = self._ns
        for name, machine in self._machines.items():
            folder = await objects.add_folder(_node_id(name, ns), ua.QualifiedName(name, ns))
            nodes = []
            for tag in machine.profile.tags:
                node = _Node(tag, _node_id(f"{name}.{tag.name}", ns))
                var = await folder.add_variable(
                    node.node_id,
                    ua.QualifiedName(tag.name, ns),
                    ua.Variant(_zero(node.type_name), node.variant),
                    varianttype=node.variant,
                )
                await self._describe(var, tag, ns)
                nodes.append(node)
            self._nodes[name] = nodes

    @staticmethod
    async def _describe(var: Node, tag: ProfileTag, ns: int) -> None:
        if tag.description:
            text = ua.LocalizedText(tag.description)
            await var.write_attribute(AttributeIds.Description, ua.DataValue(ua.Variant(text)))
        if tag.unit:
            eu = ua.EUInformation(
                NamespaceUri=_EU_NAMESPACE,
                UnitId=-1,
                DisplayName=ua.LocalizedText(tag.unit),
                Description=ua.LocalizedText(tag.unit),
            )
            await var.add_property(ns, "EngineeringUnits", eu)

    # -- values --------------------------------------------------------------------------------

    def freeze(self, machine: str, frozen: bool = True) -> None:
        """Stop (or resume) updating one machine's nodes: its last values stay served."""
        if machine not in self._machines:
            raise KeyError(f"no machine {machine!r} on this server")
        if frozen:
            self._frozen.add(machine)
        else:
            self._frozen.discard(machine)

    def is_frozen(self, machine: str) -> bool:
        return machine in self._frozen

    async def refresh(self) -> int:
        """Write every unfrozen machine's current `values()`; returns the nodes written."""
        return await self.update(
            {name: m.values() for name, m in self._machines.items() if name not in self._frozen}
        )

    async def update(self, values_by_machine: Mapping[str, Mapping[str, Value]]) -> int:
        """Write the given values (engineering units by tag name) to the nodes that changed.

        A tag whose value is missing or does not fit its OPC UA type is served with a Bad status
        (and, per Part 4, a null value) rather than a made-up number. Frozen machines are
        skipped; unknown machines are an error, extra tag names are ignored. Returns the count of
        nodes written.
        """
        if self._server is None:
            raise OpcUaServerError("the server is not started")
        server = self._server
        now = ua.DateTime.now(UTC)
        written = 0
        for name, values in values_by_machine.items():
            nodes = self._nodes.get(name)
            if nodes is None:
                raise KeyError(f"no machine {name!r} on this server")
            if name in self._frozen:
                continue
            for node in nodes:
                raw = values.get(node.tag.name)
                status = _status(StatusCodes.Good)
                value: object = None
                if raw is None:
                    status = _status(StatusCodes.BadNoData)
                else:
                    try:
                        value = coerce(node.type_name, raw)
                    except TypeError:
                        status = _status(StatusCodes.BadTypeMismatch)
                    except ValueError:
                        status = _status(StatusCodes.BadOutOfRange)
                if node.last is not None and _same(node.last, (value, status)):
                    continue
                node.last = (value, status)
                variant = ua.Variant(value, node.variant) if status.is_good() else ua.Variant()
                await server.write_attribute_value(
                    node.node_id,
                    ua.DataValue(variant, status, SourceTimestamp=now, ServerTimestamp=now),
                )
                written += 1
        return written

"""The simulated plant's OPC UA server: start, stop, values in, limits and test hooks.

The address space (a folder per machine, one read-only variable per profile tag, node ids
`ns=<index>;s=<machine>.<tag>`) is `opcua_nodes.py`; security (None or Basic256Sha256
SignAndEncrypt, users, trusted clients) is `opcua_security.py`. This module owns the server's
life: the plant's tick loop calls `refresh()` (or `update()` with values it already has) a few
times a second, machines can be frozen, and tests add variables of their own.

`extra_namespaces` are registered before the simulator's own, so its index moves: what a real
server may do across restarts (start another with them on the same port).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import ua
from asyncua.common.callback import CallbackType
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from firmware_sim.opcua_nodes import (
    ServedMachine,
    ServedNode,
    SharedDataValue,
    Value,
    build,
    status_code,
    string_node_id,
    write_changed,
)
from firmware_sim.opcua_security import PasswordUsers, Security, secure

DOUBLES_PER_FOLDER = 100  # see `add_doubles`


class OpcUaServerError(Exception):
    """The server cannot be set up or started as asked."""


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
        self._nodes: dict[str, list[ServedNode]] = {}
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
        server = Server(user_manager=PasswordUsers(self.users) if self.users else None)
        await server.init()
        server.set_server_name("lineside simulated plant")
        await server.set_application_uri(self.application_uri)
        host_in_url = f"[{self.host}]" if ":" in self.host else self.host
        server.set_endpoint(f"opc.tcp://{host_in_url}:{self.port}/")
        await secure(
            server,
            security=self.security,
            users=self.users,
            cert_dir=self.cert_dir,
            application_uri=self.application_uri,
            keep_certificate=self.keep_certificate,
            policies=self.policies,
            trusted_clients=self.trusted_clients,
        )
        for extra in self.extra_namespaces:
            await server.register_namespace(extra)
        self._ns = await server.register_namespace(self.namespace)
        await self._advertise_limits(server)
        self._nodes = await build(server, self._machines, self._ns)
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
            # asyncua's stop waits for its clock task (it updates CurrentTime once a second) to
            # wake and see the stop flag: up to a second per stop. Cancelled, it ends at once.
            clock = server.iserver.time_task
            server.iserver.time_task = None
            if clock is not None:
                clock.cancel()
                await asyncio.gather(clock, return_exceptions=True)
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
        node_id = string_node_id(f"{machine}.{name}", self._ns)
        folder = self._server.get_node(string_node_id(machine, self._ns))
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
        parent = server.get_node(string_node_id(machine, ns))
        out = []
        folder: Node | None = None
        for i, name in enumerate(names):
            if i % DOUBLES_PER_FOLDER == 0:
                block = f"{machine}#{i // DOUBLES_PER_FOLDER}"
                folder = await parent.add_folder(
                    string_node_id(block, ns), ua.QualifiedName(block, ns)
                )
            assert folder is not None
            node_id = string_node_id(f"{machine}.{name}", ns)
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
        good = status_code(StatusCodes.Good)
        for node_id, value in zip(node_ids, values, strict=True):
            attval = attrs[node_id]
            dv = SharedDataValue(
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
        dv = ua.DataValue(value, status_code(status), SourceTimestamp=sampled, ServerTimestamp=now)
        await self._server.write_attribute_value(ua.NodeId.from_string(node_id), dv)

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
            written += await write_changed(server, nodes, values, now)
        return written

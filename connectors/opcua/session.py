"""Opening and closing one OPC UA session with bounded time, and reading the server's limits.

This is the one place where asyncua's exceptions become lineside's (`ConnectError`,
`RequestTimeout`): the source above it handles one vocabulary.

asyncua's own reconnect supervisor stays off (the agent's link loop owns reconnection, with
back-off and bad-quality readings meanwhile); its health probe stays on: every `timeout / 2`
it reads the server state with a deadline of `timeout / 2`, so a stalled server is noticed
within `timeout` and reported through `on_lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from agent.errors import ConnectError, ConnectorError, RequestTimeout, one_line
from agent.secrets import read_password
from connectors.opcua.config import OpcUaSourceConfig

log = logging.getLogger("lineside.opcua")

# What many servers cap a subscription near when they do not say (the figure).
DEFAULT_ITEMS_PER_SUBSCRIPTION = 1000
# Without an advertised MaxNodesPerRead we still split: one huge Read is a huge message.
DEFAULT_NODES_PER_READ = 5000

_LIMIT_NODES = (
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ObjectIds.Server_ServerCapabilities_MaxMonitoredItemsPerSubscription,
    ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What the server advertises; None where it offers nothing (absent node, 0, bad status)."""

    max_nodes_per_read: int | None = None
    max_items_per_subscription: int | None = None
    max_items_per_call: int | None = None

    def nodes_per_read(self, cap: int | None) -> int:
        return _smallest(self.max_nodes_per_read, cap, DEFAULT_NODES_PER_READ)

    def items_per_subscription(self, cap: int | None) -> int:
        return _smallest(self.max_items_per_subscription, cap, DEFAULT_ITEMS_PER_SUBSCRIPTION)

    def items_per_call(self, per_subscription: int) -> int:
        return _smallest(self.max_items_per_call, per_subscription, per_subscription)


def _smallest(offered: int | None, cap: int | None, default: int) -> int:
    known = [n for n in (offered, cap) if n]
    return min(known) if known else default


def limits_from_values(values: Sequence[object]) -> ServerLimits:
    """`ServerLimits` from the three values read (None or non-positive: not offered). Pure."""

    def limit(value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return None

    padded = [*values, None, None, None][:3]
    return ServerLimits(*(limit(v) for v in padded))


def translate(exc: BaseException, what: str) -> ConnectError | RequestTimeout:
    """asyncua's (and the socket's) failures in lineside's words."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return RequestTimeout(f"{what}: timed out")
    if isinstance(exc, UaStatusCodeError):
        return ConnectError(f"{what}: {ua.StatusCode(exc.code).name}")
    if isinstance(exc, OSError) and exc.strerror:
        return ConnectError(f"{what}: {exc.strerror}")
    return ConnectError(f"{what}: {str(exc) or type(exc).__name__}")


async def open_session(config: OpcUaSourceConfig, on_lost: Callable[[str], None]) -> Client:
    """Connect and activate a session within `config.timeout`, or raise `ConnectError`.

    `on_lost` is called (once or more) when asyncua finds the connection gone: the socket
    closed, or the periodic server-state probe failing (a stalled server).
    """
    half = config.timeout / 2
    client = Client(config.endpoint, timeout=config.timeout, watchdog_intervall=half)
    # A session we lose (network cut, stalled server) is dropped by the server after this long,
    # and its subscriptions with it: what bounds leftovers we could not delete ourselves.
    client.session_timeout = int(config.session_timeout * 1000)
    client.name = client.description = f"lineside {config.name}"

    async def lost(exc: Exception) -> None:
        on_lost(f"connection lost: {str(exc) or type(exc).__name__}")

    client.connection_lost_callback = lost
    if config.username is not None:
        # asyncua logs every request at DEBUG, ActivateSession's user token (the password)
        # included: filter it out before the first request, whatever the policy.
        from connectors.opcua.security import keep_secrets_out_of_logs

        keep_secrets_out_of_logs()
        client.set_user(config.username)
        password = read_password(config)
        if password is not None:
            client.set_password(password)
    try:
        async with asyncio.timeout(config.timeout):
            if config.security_policy != "None":
                # Only here: a source without security never imports the crypto stack.
                from connectors.opcua.security import (  # type: ignore[import-not-found,unused-ignore]
                    secure,
                )

                await secure(client, config)
            await client.connect()
    except ConnectorError:  # our own checks (`secure`): already one line
        await abandon(client)
        raise
    except Exception as exc:
        # asyncua fails in many types, some of them bare (an AssertionError when a server
        # refuses our certificate): each becomes one line here, never a traceback upstream.
        await abandon(client)
        from connectors.opcua.security import refusal

        where = f"{config.name} ({config.endpoint})"
        explained = refusal(exc, config)
        if explained is not None:
            raise ConnectError(f"{where}: {explained}") from None
        if isinstance(exc, TimeoutError | OSError | UaError | ConnectionError | ValueError):
            raise translate(exc, where) from None
        raise ConnectError(f"{where}: {one_line(exc)}") from None
    except asyncio.CancelledError:
        await abandon(client)
        raise
    return client


async def read_limits(client: Client, within: float) -> ServerLimits:
    """The server's advertised limits; one Read, bounded by `within` seconds."""
    read = ua.ReadParameters()
    for node_id in _LIMIT_NODES:
        item = ua.ReadValueId()
        item.NodeId = ua.NodeId(ua.Int32(node_id))
        item.AttributeId = AttributeIds.Value
        read.NodesToRead.append(item)
    try:
        async with asyncio.timeout(within):
            results = await client.uaclient.read(read)
    except (TimeoutError, OSError, UaError, ConnectionError) as exc:
        raise translate(exc, "reading the server's limits") from None
    values: list[object] = []
    for dv in results:
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        values.append(dv.Value.Value if good and dv.Value is not None else None)
    return limits_from_values(values)


async def read_namespaces(client: Client, within: float) -> list[str]:
    """The server's NamespaceArray (index → URI), which `nsu=` node ids are resolved against."""
    read = ua.ReadParameters()
    item = ua.ReadValueId()
    item.NodeId = ua.NodeId(ua.Int32(ObjectIds.Server_NamespaceArray))
    item.AttributeId = AttributeIds.Value
    read.NodesToRead.append(item)
    try:
        async with asyncio.timeout(within):
            (result,) = await client.uaclient.read(read)
    except (TimeoutError, OSError, UaError, ConnectionError) as exc:
        raise translate(exc, "reading the server's namespaces") from None
    good = result.StatusCode is None or result.StatusCode.is_good()
    value = result.Value.Value if good and result.Value is not None else None
    if not isinstance(value, list):
        raise ConnectError("the server's NamespaceArray cannot be read: no nsu= node id resolves")
    return [str(uri) for uri in value]


async def read_start_time(client: Client, within: float) -> datetime | None:
    """The server's ServerStatus.StartTime: which run of the server this session is on.

    Subscription ids only mean something within one run: a restarted server numbers its
    subscriptions afresh, so a lost session's ids may by then name another client's. None when
    the server does not say (the node is mandatory, Part 5 6.3.1, but not every server has it).
    """
    read = ua.ReadParameters()
    item = ua.ReadValueId()
    item.NodeId = ua.NodeId(ua.Int32(ObjectIds.Server_ServerStatus_StartTime))
    item.AttributeId = AttributeIds.Value
    read.NodesToRead.append(item)
    try:
        async with asyncio.timeout(within):
            (result,) = await client.uaclient.read(read)
    except (TimeoutError, OSError, UaError, ConnectionError) as exc:
        raise translate(exc, "reading the server's start time") from None
    good = result.StatusCode is None or result.StatusCode.is_good()
    value = result.Value.Value if good and result.Value is not None else None
    return value if isinstance(value, datetime) else None


async def close_session(client: Client, within: float, subscription_ids: Sequence[int]) -> bool:
    """Delete our subscriptions and close the session, within `within` seconds; True if it worked.

    Best effort: when the server is gone or stalled this gives up at the deadline and drops the
    socket; the leftovers are reclaimed at the next connect (`reclaim`) or by the session timeout.
    """
    done = False
    try:
        async with asyncio.timeout(within):
            if subscription_ids:
                await client.uaclient.delete_subscriptions(list(subscription_ids))
            await client.disconnect()
            done = True
    except (TimeoutError, OSError, UaError, ConnectionError) as exc:
        log.debug("closing the session: %s", exc)
    finally:
        if not done:
            await abandon(client)
    return done


async def abandon(client: Client) -> None:
    """Drop the socket first, then let asyncua cancel its tasks (its CloseSession fails fast)."""
    client.uaclient.request_disconnect()
    client.disconnect_socket()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await client.close_session()


async def reclaim(client: Client, subscription_ids: Sequence[int], within: float) -> int:
    """Take over subscriptions a lost session left on the server, and delete them.

    After a network cut or a stall the old session outlives its connection (Part 4, 6.7), and so
    do its subscriptions, still sampling. TransferSubscriptions moves them to the new session
    (same user) and DeleteSubscriptions removes them; a server that already dropped them answers
    BadSubscriptionIdInvalid, which is fine. Returns how many were deleted. Only for ids of the
    server's current run (see `read_start_time`): another run's ids may be another client's.
    """
    if not subscription_ids:
        return 0
    ids = list(subscription_ids)
    try:
        async with asyncio.timeout(within):
            params = ua.TransferSubscriptionsParameters()
            params.SubscriptionIds = ids
            params.SendInitialValues = False
            results = await client.uaclient.transfer_subscriptions(params)
            moved = [i for i, r in zip(ids, results, strict=False) if r.StatusCode.is_good()]
            if not moved:
                return 0
            deleted = await client.uaclient.delete_subscriptions(moved)
    except (TimeoutError, OSError, UaError, ConnectionError) as exc:
        log.debug("reclaiming old subscriptions: %s", exc)
        return 0
    return sum(1 for status in deleted if status.is_good())

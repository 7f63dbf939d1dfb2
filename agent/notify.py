"""The service manager's notify protocol (`sd_notify`), spoken directly: no dependency.

Under systemd with `Type=notify`, `$NOTIFY_SOCKET` names a unix datagram socket (a leading
'@' means the abstract namespace). The agent sends `READY=1` once the store is open and its
sources started, `WATCHDOG=1` every half `WatchdogSec` (systemd passes it as `$WATCHDOG_USEC`)
from a task on the event loop, so a stuck loop stops feeding the watchdog and systemd restarts
the agent, `RELOADING=1` ... `READY=1` around a config reload (SIGHUP) and `STOPPING=1`
when it starts draining. Without `$NOTIFY_SOCKET` every call is a
no-op, so the agent behaves the same outside systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("lineside.agent")


def socket_address(name: str) -> str | bytes:
    """The address `$NOTIFY_SOCKET` names: '@name' is abstract (a leading NUL byte)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between `WATCHDOG=1` messages: half of `$WATCHDOG_USEC`, as systemd advises;
    None when no watchdog is asked for, or it is asked of another process (`$WATCHDOG_PID`)."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends notify messages to the service manager; silent when there is none."""

    def __init__(self, socket_name: str | None, watchdog: float | None) -> None:
        self.socket_name = socket_name or None
        self.watchdog = watchdog
        self._failed = False

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"), watchdog_interval(env, os.getpid()))

    def send(self, message: str) -> bool:
        """Send one datagram; False (logged once) when the manager cannot be reached."""
        if self.socket_name is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), socket_address(self.socket_name))
        except OSError as exc:
            # The service manager going away must never stop acquisition.
            if not self._failed:
                log.warning("cannot notify the service manager at %s: %s", self.socket_name, exc)
                self._failed = True
            return False
        return True

    def reloading(self) -> None:
        """A config reload starts (SIGHUP); `ready` says it is over, applied or refused."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the config")

    def ready(self) -> None:
        self.send("READY=1\nSTATUS=polling")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=draining the store")

    async def serve(self) -> None:
        """Say READY=1, then feed the watchdog every half period until cancelled.

        The agent creates this task last in its TaskGroup: tasks first run in the order they
        were created, so when this one runs every source's task has started.
        """
        if self.socket_name is None:
            return
        self.send("READY=1\nSTATUS=polling")
        if self.watchdog is None:
            return
        while True:
            await asyncio.sleep(self.watchdog)
            self.send("WATCHDOG=1")

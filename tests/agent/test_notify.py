"""The notify protocol (agent/notify.py) against a real unix datagram socket."""

import asyncio
import os
import socket
from pathlib import Path

from agent.notify import Notifier, socket_address, watchdog_interval


def test_an_at_sign_names_an_abstract_socket() -> None:
    assert socket_address("@lineside/notify") == b"\0lineside/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_the_watchdog_is_fed_at_half_its_period_and_only_for_its_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_messages_reach_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(10)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(path)})
        notifier.stopping()
        assert manager.recv(4096) == b"STOPPING=1\nSTATUS=draining the store"


def test_a_reload_is_framed_by_reloading_and_ready(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(10)
        notifier = Notifier(str(path), watchdog=None)
        notifier.reloading()
        notifier.ready()
        reloading, ready = manager.recv(4096).decode(), manager.recv(4096)
    first, usec, status = reloading.split("\n")
    assert first == "RELOADING=1"
    # systemd wants the CLOCK_MONOTONIC time of the reload's start with RELOADING=1.
    assert usec.startswith("MONOTONIC_USEC=") and int(usec.partition("=")[2]) > 0
    assert status == "STATUS=reloading the config"
    assert ready == b"READY=1\nSTATUS=polling"


def test_serve_says_ready_then_feeds_the_watchdog() -> None:
    name = f"@lineside-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(socket_address(name))
        manager.settimeout(10)
        notifier = Notifier(name, watchdog=0.01)

        async def serve_until_two_feeds() -> list[bytes]:
            task = asyncio.create_task(notifier.serve())
            received = [await asyncio.to_thread(manager.recv, 4096) for _ in range(3)]
            task.cancel()
            return received

        received = asyncio.run(serve_until_two_feeds())
    assert received == [b"READY=1\nSTATUS=polling", b"WATCHDOG=1", b"WATCHDOG=1"]


def test_no_socket_means_silence_and_a_gone_manager_is_logged_once(tmp_path: Path) -> None:
    assert Notifier(None, None).send("READY=1") is False
    gone = Notifier(str(tmp_path / "nobody"), None)
    assert gone.send("READY=1") is False
    assert gone.send("WATCHDOG=1") is False

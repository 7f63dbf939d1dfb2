"""A private mosquitto for the forwarding benchmarks: plain TCP on 127.0.0.1, anonymous.

Started the way the tests start theirs (tests/brokers.py): its own config file, a port the
kernel picked, no persistence, polled until it accepts connections. Broker settings are left at
mosquitto's defaults, so the figures are those of a stock broker, unless `tcp_nodelay` (or the
environment variable `LINESIDE_BENCH_BROKER_NODELAY=1`, for any benchmark without a code change)
asks for `set_tcp_nodelay true`: a stock mosquitto holds a small message to a subscriber back
(Nagle's algorithm) while an earlier one waits for the subscriber's delayed ack, up to 40 ms on
Linux, whoever publishes (docs/decisions/0008-group-commit-and-live-forwarding.md). Every
contender of a run shares the one broker, so they all get the same setting.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 10.0  # seconds for the broker to accept connections
NODELAY_VARIABLE = "LINESIDE_BENCH_BROKER_NODELAY"  # "1": the broker sets TCP_NODELAY


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """One mosquitto process; `with Broker(folder) as broker:` starts it, leaving stops it."""

    host = "127.0.0.1"

    def __init__(self, folder: Path, *, tcp_nodelay: bool | None = None) -> None:
        self.folder = folder
        # None: as the environment says (stock unless LINESIDE_BENCH_BROKER_NODELAY=1).
        self.tcp_nodelay = (
            os.environ.get(NODELAY_VARIABLE, "") == "1" if tcp_nodelay is None else tcp_nodelay
        )
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the broker is not running")
        return self._process.pid

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # mosquitto cannot bind port 0 and report it: pick a free port, retry if it was taken.
        for _attempt in range(5):
            self.port = _free_port()
            if self._launch():
                return
        log = (self.folder / "mosquitto.log").read_text(errors="replace")
        raise RuntimeError(f"mosquitto did not start; its log:\n{log}")

    def _launch(self) -> bool:
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",  # started as root it would drop to "mosquitto"
                    "persistence false",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                ]
                + (["set_tcp_nodelay true"] if self.tcp_nodelay else [])
            )
            + "\n",
            encoding="utf-8",
        )
        with (self.folder / "mosquitto.log").open("ab") as log:
            process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        # Another process cannot take an injected clock: poll the listener until it answers.
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _accepts(self.port):
                self._process = process
                return True
            time.sleep(0.02)
        process.kill()
        process.wait()
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

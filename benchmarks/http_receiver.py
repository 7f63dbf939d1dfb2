"""A minimal HTTP receiver in its own process: reads every POST body and answers 200.

The far side of the HTTP drain benchmark: the standard library's `http.server`, HTTP/1.1 with
keep-alive (one connection carries every request, as httpx keeps it), counting requests and
body bytes so the benchmark can check that everything arrived.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: no new connection per POST
    counts = _Counts()

    def do_POST(self) -> None:  # the name http.server calls
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with self.counts.lock:
            self.counts.requests += 1
            self.counts.bytes += len(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return  # one line per request on stderr would cost more than the request


def _serve(pipe: Connection) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    pipe.send(server.server_address[1])
    # Commands: "counts" answers (requests, bytes); "stop" ends the process.
    while (command := pipe.recv()) != "stop":
        del command
        with _Handler.counts.lock:
            pipe.send((_Handler.counts.requests, _Handler.counts.bytes))
    server.shutdown()


@dataclass
class Receiver:
    process: BaseProcess
    pipe: Connection
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    def counts(self) -> tuple[int, int]:
        """(requests, body bytes) received so far."""
        self.pipe.send("counts")
        requests, size = self.pipe.recv()
        return int(requests), int(size)

    def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.pipe.send("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def start_receiver(core: int | None = None) -> Receiver:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=_main, args=(theirs, core), daemon=True)
    process.start()
    if not ours.poll(30):
        process.kill()
        raise RuntimeError("the HTTP receiver did not start")
    return Receiver(process, ours, ours.recv())


def _main(pipe: Connection, core: int | None) -> None:
    if core is not None:
        import os

        os.sched_setaffinity(0, {core})
    _serve(pipe)

"""`lineside demo` opens with the status page's address, and names a taken port clearly."""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path

import pytest
from rich.console import Console

from agent.demo import run_demo


@pytest.mark.slow
def test_demo_prints_the_page_first(tmp_path: Path) -> None:
    out = io.StringIO()
    run_demo(
        directory=tmp_path / "demo",
        speed=20.0,
        duration=1.5,
        console=Console(file=out, width=200),
        port=0,  # the demo's own default is 8470; a test takes any free port
    )
    first = out.getvalue().splitlines()[0]
    assert re.fullmatch(r"status page: http://127\.0\.0\.1:\d+/", first), first
    assert "[web]\nport = 0" in (tmp_path / "demo" / "lineside.toml").read_text()


def test_demo_on_a_taken_port_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as caught:
            run_demo(
                directory=tmp_path / "demo",
                duration=1.0,
                port=port,
                console=Console(file=io.StringIO()),
            )
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        f"lineside demo: cannot serve the status page: port {port} on 127.0.0.1 is in use; "
        "choose another with the [web] port key\n"
    )

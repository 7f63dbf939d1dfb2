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


def test_demo_forwards_to_its_own_mosquitto(tmp_path: Path) -> None:
    """With mosquitto installed the demo starts one and adds an MQTT sink: records go out."""
    from agent.demo import mosquitto_binary

    assert mosquitto_binary() is not None, "mosquitto is not installed (apt-get install mosquitto)"
    out = io.StringIO()
    run_demo(
        directory=tmp_path / "demo",
        speed=20.0,
        duration=4.0,
        console=Console(file=out, width=200),
        port=0,
    )
    lines = out.getvalue().splitlines()
    assert re.fullmatch(
        r"forwarding to the demo's mosquitto on mqtt://127\.0\.0\.1:\d+ \(topics lineside/#\)",
        lines[1],
    ), lines[1]
    done = re.search(r"; ([\d,]+) records forwarded over MQTT;", out.getvalue())
    assert done is not None and int(done.group(1).replace(",", "")) > 0, out.getvalue()[-400:]
    config = (tmp_path / "demo" / "lineside.toml").read_text()
    assert '[[sinks]]\nname = "mqtt"\ntype = "mqtt"' in config


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

"""An MES that echoes our credentials in its error pages: lineside writes none of them.

A real agent polls the simulated plant and forwards to two real HTTP MES servers, one logged
into with a bearer token and an `X-Api-Key` header (header_env), one with basic auth. Both
answer the first batch 400 (quarantined) and every later one 503 (retried), with bodies quoting
the request's Authorization and X-Api-Key headers. The secrets must show nowhere lineside
writes: the log, the SQLite file (quarantine reasons), status.json, /api/state, `lineside status`
and `lineside quarantine list`, each of which shows `***` instead.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from agent.runtime import STATUS_FILE
from agent.secrets import MASK
from tests.agent.web.running import running_agent
from tests.connectors.http.mes_server import Echo, MesServer
from tests.waiting import until

TOKEN = "tok-Zx81-bearer-7f3a"
API_KEY = "key-Qw42-header-9b1c"
PASSWORD = "pw-Rt93-basic-4d5e"
USER = "line1"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (TOKEN, API_KEY, PASSWORD, BASIC, BASIC.rstrip("="))


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def lineside(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},  # the table's last-error column unwrapped
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow
async def test_echoed_credentials_are_masked_everywhere_lineside_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LINESIDE_TEST_ECHO_TOKEN", TOKEN)
    monkeypatch.setenv("LINESIDE_TEST_ECHO_KEY", API_KEY)
    monkeypatch.setenv("LINESIDE_TEST_ECHO_PASSWORD", PASSWORD)
    caplog.set_level(logging.INFO, logger="lineside")
    with MesServer().running() as bearer, MesServer().running() as basic:
        for mes in (bearer, basic):
            mes.script(Echo(400), *[Echo(503)] * 1000)  # one batch refused, then down
        sinks = (
            f'[[sinks]]\nname = "mes"\ntype = "http"\nurl = "{bearer.url}"\n'
            'token_env = "LINESIDE_TEST_ECHO_TOKEN"\n'
            'header_env = { X-Api-Key = "LINESIDE_TEST_ECHO_KEY" }\n'
            f'[[sinks]]\nname = "mes_basic"\ntype = "http"\nurl = "{basic.url}"\n'
            f'username = "{USER}"\npassword_env = "LINESIDE_TEST_ECHO_PASSWORD"\n'
        )
        async with running_agent(tmp_path, more=sinks) as run:
            forwarders = run.agent.forwarders
            await until(lambda: all(f.stats.quarantined and f.stats.last_error for f in forwarders))
            data_dir = run.agent.config.agent.data_dir
            status_file = data_dir / STATUS_FILE

            def status_has_errors() -> bool:
                if not status_file.is_file():
                    return False
                sinks = json.loads(status_file.read_text(encoding="utf-8"))["sinks"]
                return all(s["forward"]["last_error"] for s in sinks.values())

            await until(status_has_errors)
            # What every view reads: the forwarders' own figures hold no secret either.
            for forwarder in forwarders:
                assert MASK in forwarder.stats.last_error
                assert not leaked(forwarder.stats.last_error)
            async with httpx.AsyncClient(base_url=run.url) as client:
                state = (await client.get("/api/state")).json()
        # The MES really was sent, and echoed, every secret.
        echoed = [r.headers for r in bearer.requests]
        assert echoed[0]["authorization"] == f"Bearer {TOKEN}"
        assert echoed[0]["x-api-key"] == API_KEY
        assert basic.requests[0].headers["authorization"] == f"Basic {BASIC}"

    log = caplog.text
    assert not leaked(log)
    assert f'"authorization": "Bearer {MASK}", "x-api-key": "{MASK}"' in log
    assert f'"authorization": "Basic {MASK}"' in log

    status_json = status_file.read_text(encoding="utf-8")
    assert not leaked(status_json)
    sinks_status = json.loads(status_json)["sinks"]
    assert f"Bearer {MASK}" in sinks_status["mes"]["forward"]["last_error"]
    assert f"Basic {MASK}" in sinks_status["mes_basic"]["forward"]["last_error"]

    assert not leaked(json.dumps(state))
    by_name = {s["name"]: s for s in state["sinks"]}
    assert f"Bearer {MASK}" in by_name["mes"]["last_error"]
    assert f"Basic {MASK}" in by_name["mes_basic"]["last_error"]

    with sqlite3.connect(data_dir / "lineside.db") as db:
        reasons = dict(db.execute("SELECT sink, reason FROM quarantine").fetchall())
    assert set(reasons) == {"mes", "mes_basic"}
    assert not leaked(json.dumps(reasons))
    assert f'"x-api-key": "{MASK}"' in reasons["mes"] and "HTTP 400" in reasons["mes"]
    assert f"Basic {MASK}" in reasons["mes_basic"]
    for stored in data_dir.glob("lineside.db*"):  # the whole file, WAL and all
        raw = stored.read_bytes()
        assert not [s for s in SECRETS if s.encode() in raw], stored

    for args in (("status",), ("status", "--json"), ("quarantine", "list")):
        shown = lineside(*args, "--data", str(data_dir))
        assert not leaked(shown), args
        assert MASK in shown, args

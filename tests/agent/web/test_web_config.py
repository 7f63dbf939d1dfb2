"""The `[web]` section, through the real config loader and its one-line messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.web.config import TokenError, WebSection, is_loopback

BASE = 'config_version = 1\n[agent]\nid = "a"\n[plant]\nsite = "s"\n'


def load(tmp_path: Path, web: str) -> WebSection:
    path = tmp_path / "lineside.toml"
    path.write_text(f"{BASE}[web]\n{web}\n", encoding="utf-8")
    return load_config(path).web


def problems(tmp_path: Path, web: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, web)
    return [str(p) for p in caught.value.problems]


def test_defaults_serve_loopback_on_8470(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(BASE, encoding="utf-8")
    web = load_config(path).web
    assert (web.enabled, web.bind, web.port, web.token()) == (True, "127.0.0.1", 8470, None)


@pytest.mark.parametrize(
    ("web", "where", "message"),
    [
        ('bind = "0.0.0.0"', "web.bind", "0.0.0.0 is reachable from other machines"),
        ('bind = "192.168.1.20"', "web.bind", "set token_env or token_file"),
        ('bind = "plant-pc"', "web.bind", 'expected an IP address like "127.0.0.1"'),
        ('token = "abc"', "web.token", "a token in the config file is refused"),
        ('token_env = "T"\ntoken_file = "t.txt"', "web.token_file", "not both"),
        ("port = 70000", "web.port", "must be at most 65535"),
        ("port = -1", "web.port", "must be at least 0"),
        ("prot = 1", "web", "unknown key 'prot'"),
        ('sink_max_unsent_age = "0s"', "web.sink_max_unsent_age", ""),
        ('head_timeout = "0s"', "web.head_timeout", "must be more than zero"),
        ("head_timeout = 5", "web.head_timeout", "durations need a unit"),
        ("max_event_streams = 0", "web.max_event_streams", "must be at least 1"),
        (
            'allowed_hosts = ["http://line3-edge"]',
            "web.allowed_hosts[0]",
            'expected a host name like "line3-edge.plant.local" or an IP address',
        ),
        ('allowed_hosts = ["ok", "line3-edge:8470"]', "web.allowed_hosts[1]", "without scheme"),
        ('allowed_hosts = "line3-edge"', "web.allowed_hosts", ""),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, web: str, where: str, message: str) -> None:
    (line,) = problems(tmp_path, web)
    assert line.startswith(f"{tmp_path / 'lineside.toml'}: {where}: "), line
    assert message in line


def test_limits_and_host_names(tmp_path: Path) -> None:
    path = tmp_path / "lineside.toml"
    path.write_text(BASE, encoding="utf-8")
    web = load_config(path).web
    assert (web.head_timeout, web.max_event_streams, web.allowed_hosts) == (5.0, 32, ())
    web = load(
        tmp_path,
        'head_timeout = "2s"\nmax_event_streams = 4\n'
        'allowed_hosts = ["Line3-Edge.Plant.local", "10.0.0.5", "0:0::1", "edge_3"]',
    )
    assert (web.head_timeout, web.max_event_streams) == (2.0, 4)
    assert web.allowed_hosts == ("line3-edge.plant.local", "10.0.0.5", "::1", "edge_3")


def test_beyond_loopback_with_a_token_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = load(tmp_path, 'bind = "0.0.0.0"\ntoken_env = "LINESIDE_WEB_TOKEN"')
    monkeypatch.setenv("LINESIDE_WEB_TOKEN", " tok \n")
    assert web.token() == "tok"
    monkeypatch.setenv("LINESIDE_WEB_TOKEN", "")
    with pytest.raises(TokenError, match="LINESIDE_WEB_TOKEN is unset"):
        web.token()
    assert load(tmp_path, 'bind = "0.0.0.0"\nenabled = false').enabled is False


def test_token_file_is_relative_to_the_config(tmp_path: Path) -> None:
    web = load(tmp_path, 'bind = "::"\ntoken_file = "secret/web.token"')
    assert web.token_file == tmp_path / "secret" / "web.token"
    with pytest.raises(TokenError, match="cannot read"):
        web.token()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "web.token").write_text("\n")
    with pytest.raises(TokenError, match="is empty"):
        web.token()
    (tmp_path / "secret" / "web.token").write_text("t0k3n\n")
    assert web.token() == "t0k3n"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("plant-pc", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback

"""`fleet status`: every agent of a site, as the MQTT broker they publish to sees them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agent.cli.exits import EXIT_FAILED, Refused
from agent.cli.options import JsonOption
from agent.cli.output import console, err_console, print_json

if TYPE_CHECKING:
    from connectors.mqtt.config import MqttSinkConfig


def _broker_address(text: str) -> tuple[str, int | None]:
    """`HOST`, `HOST:PORT`, `[IPv6]:PORT` or a bare IPv6 address → host and port (or None)."""
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if closed else "?"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host or (port and not port.isdigit()):
        raise Refused(f"--broker: expected HOST or HOST:PORT, got {text!r}")
    return host, int(port) if port else None


def _fleet_broker(
    config_file: Path | None,
    sink: str | None,
    broker: str | None,
    overrides: dict[str, object],
    tls: dict[str, Path | None],
    use_tls: bool,
) -> tuple[MqttSinkConfig, str | None]:
    """The MQTT connection of `fleet status`: an MQTT sink of `config_file` (the first, or
    `sink`) with the options given on top, or the options alone; and the config's site."""
    from pydantic import ValidationError

    from agent.config.loader import load_config
    from connectors.mqtt.config import MqttSinkConfig

    base: dict[str, object] = {"type": "mqtt", "name": "fleet-view"}
    site = None
    if config_file is not None:
        config = load_config(config_file)
        site = config.plant.site
        found = [
            s
            for s in config.sinks
            if isinstance(s, MqttSinkConfig) and (sink is None or s.name == sink)
        ]
        if not found:
            named = f" named {sink!r}" if sink is not None else ""
            raise Refused(f"{config_file}: no MQTT sink{named}; give --broker instead")
        base = found[0].model_dump(exclude_none=True)
    elif broker is None:
        raise Refused("give --broker HOST[:PORT] or --config with an MQTT sink")
    elif sink is not None:
        raise Refused("--sink picks a sink of --config; there is no --config")
    if broker is not None:
        host, port = _broker_address(broker)
        base.update(host=host, **({"port": port} if port is not None else {}))
    base.update({k: v for k, v in overrides.items() if v is not None})
    given = {k: v for k, v in tls.items() if v is not None}
    if given or use_tls:
        earlier = base.get("tls")
        base["tls"] = {**(earlier if isinstance(earlier, dict) else {}), **given}
    try:
        return MqttSinkConfig.model_validate(base), site
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'broker'}: {e['msg']}" for e in exc.errors()
        ]
        raise Refused(*problems) from None


def fleet_status(
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="HOST\\[:PORT] of the MQTT broker (default port 1883)."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Take broker, TLS, login, prefix and site from here."),
    ] = None,
    sink: Annotated[
        str | None, typer.Option("--sink", help="The MQTT sink of --config (default: the first).")
    ] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help='Topic prefix (default "lineside").')
    ] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Only this site (default: the config's, or all).")
    ] = None,
    use_tls: Annotated[
        bool, typer.Option("--tls", help="TLS with the system's trust store.")
    ] = False,
    ca: Annotated[Path | None, typer.Option("--ca", help="TLS: the broker's CA (PEM).")] = None,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="TLS: a client certificate (PEM).")
    ] = None,
    key: Annotated[Path | None, typer.Option("--key", help="TLS: its private key (PEM).")] = None,
    username: Annotated[str | None, typer.Option("--username", help="Log in as this user.")] = None,
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="The password's environment variable.")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="A file holding the password.")
    ] = None,
    wait: Annotated[
        float,
        typer.Option("--wait", help="Seconds to collect status messages.", min=0.1, max=60),
    ] = 1.5,
    as_json: JsonOption = False,
) -> None:
    """Every agent's retained status on the broker, one table; offline in red, exit 1 when
    any agent is not online (or none answered)."""
    import time

    from agent.eventloop import run as run_loop
    from agent.fleet import all_online, fleet_rows, render_fleet, status_filter

    overrides: dict[str, object] = {
        "topic_prefix": prefix,
        "username": username,
        "password_env": password_env,
        "password_file": password_file,
    }
    tls = {"ca": ca, "cert": cert, "key": key}
    connection, config_site = _fleet_broker(config_file, sink, broker, overrides, tls, use_tls)
    topics = status_filter(connection.topic_prefix, site or config_site)

    from connectors.mqtt.fleet import read_statuses

    messages = run_loop(lambda: read_statuses(connection, topics, wait))
    rows = fleet_rows(messages, time.time_ns() // 1_000_000)
    if as_json:
        print_json(rows)
    elif rows:
        render_fleet(rows, console)
    else:
        err_console.print(
            f"no agent status on {topics} within {wait:g} s "
            '(a wrong prefix or site? status_interval = "0s"?)',
            markup=False,
            highlight=False,
        )
    if not all_online(rows):
        raise typer.Exit(EXIT_FAILED)

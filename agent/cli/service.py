"""`service install`: the systemd unit that runs the agent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.exits import Refused
from agent.cli.output import err_console


def service_install(
    config_file: Annotated[
        Path, typer.Option("--config", "-c", help="The config file the service runs.")
    ] = Path("/etc/lineside/lineside.toml"),
    user: Annotated[
        str, typer.Option("--user", help="The dedicated unprivileged user it runs as.")
    ] = "lineside",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit instead of writing it.")
    ] = False,
    unit_dir: Annotated[Path, typer.Option("--unit-dir", help="Where the unit file goes.")] = Path(
        "/etc/systemd/system"
    ),
) -> None:
    """Write the systemd unit (Type=notify, watchdog, restart on failure, hardened)."""
    import re

    from agent.config.loader import load_config
    from agent.service import UNIT_NAME, UnitSpec, serial_groups, unit_text, writable_paths

    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user) or user == "root":
        raise Refused(f"--user: expected an unprivileged user name like lineside, got {user!r}")
    config = load_config(config_file)
    executable = Path(sys.executable).parent / "lineside"
    if not executable.is_file():
        raise Refused(f"{executable}: the lineside command is not next to {sys.executable}")
    spec = UnitSpec(
        executable=executable.absolute(),
        config=config_file.resolve(),
        user=user,
        writable=writable_paths(config),
        groups=serial_groups(config),
        description=f"lineside edge agent {config.agent.id}",
    )
    text = unit_text(spec)
    if print_only:
        sys.stdout.write(text)
        return
    target = unit_dir / UNIT_NAME
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise Refused(
            f"{target}: cannot write: {exc.strerror} (run as root, or use --print)"
        ) from None
    folders = " ".join(str(p) for p in spec.writable)
    err_console.print(
        f"wrote {target}; then, as root:\n"
        f"  useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}\n"
        f"  install -d -o {user} -g {user} -m 0750 {folders}\n"
        "  systemctl daemon-reload && systemctl enable --now lineside\n"
        "  journalctl -u lineside -f",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

"""`lineside service install`: the systemd unit that runs the agent, built by a pure function.

The unit starts `lineside run` as a dedicated unprivileged user with `Type=notify` (the agent
says READY once its store is open and its sources started: agent/notify.py) and a watchdog fed
from the event loop, restarts it on failure, and lets it write only where it must: the data
directory, the log file's folder, an OPC UA trust folder it may pin certificates into and the
folders inspected images are saved to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config.sections import Config

UNIT_NAME = "lineside.service"
UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_CONFIG = Path("/etc/lineside/lineside.toml")
DEFAULT_USER = "lineside"
WATCHDOG_SEC = 30  # a loop stuck this long is restarted; the agent feeds it every 15 s
START_TIMEOUT_SEC = 300
STOP_TIMEOUT_SEC = 90  # the drain on SIGTERM commits what the writer holds; give it time


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """What the unit is made of: every path absolute."""

    executable: Path  # the `lineside` console script
    config: Path
    user: str = DEFAULT_USER
    writable: tuple[Path, ...] = ()  # ReadWritePaths=
    groups: tuple[str, ...] = ()  # SupplementaryGroups= (dialout for serial ports)
    description: str = "lineside edge agent"
    environment: dict[str, str] = field(default_factory=dict)


def _quote(value: str) -> str:
    """A word of a unit file's command line or path list, quoted when it needs to be."""
    if value and not any(c in value for c in " \t\"'\\;$%"):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def unit_text(spec: UnitSpec) -> str:
    """The systemd unit file for `spec` (pure: the same spec gives the same text)."""
    writable = " ".join(_quote(str(p)) for p in spec.writable)
    lines = [
        "# Written by `lineside service install`; see docs/install.md.",
        "[Unit]",
        f"Description={spec.description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_quote(str(spec.executable))} run --config {_quote(str(spec.config))}",
        # `systemctl reload lineside`: the agent reads its config again and applies it.
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"WatchdogSec={WATCHDOG_SEC}",
        "Restart=on-failure",
        "RestartSec=5",
        # Exit 2 is bad input (config, a second agent, a store from a newer lineside): a
        # restart cannot mend it, so systemd shows the failure instead of looping.
        "RestartPreventExitStatus=2",
        # Before READY the agent checks the store and rebuilds the open KPI windows from it,
        # which on a large store on an SD card takes more than systemd's default 90 s.
        f"TimeoutStartSec={START_TIMEOUT_SEC}",
        f"TimeoutStopSec={STOP_TIMEOUT_SEC}",
        # SIGTERM drains the store; only what follows TimeoutStopSec is a hard kill.
        "KillMode=mixed",
        f"User={spec.user}",
        f"Group={spec.user}",
    ]
    if spec.groups:
        lines.append(f"SupplementaryGroups={' '.join(spec.groups)}")
    lines += [
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=lineside",
        "Environment=PYTHONUNBUFFERED=1",
        *(f"Environment={_quote(f'{k}={v}')}" for k, v in sorted(spec.environment.items())),
        # Hardening: read-only system, no privilege gain, no capabilities at all.
        "ProtectSystem=strict",
        f"ReadWritePaths={writable}" if writable else "",
        "ProtectHome=read-only",
        # A private /tmp would hide a data directory kept there (a trial install).
        "" if any(_in_tmp(p) for p in spec.writable) else "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "AmbientCapabilities=",
        "CapabilityBoundingSet=",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        "UMask=0027",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(line for i, line in enumerate(lines) if line or _keeps_blank(lines, i)) + "\n"


def _in_tmp(path: Path) -> bool:
    return any(path.is_relative_to(tmp) for tmp in (Path("/tmp"), Path("/var/tmp")))


def _keeps_blank(lines: list[str], i: int) -> bool:
    # Blank lines separate sections; an empty optional line ("ReadWritePaths" unset) goes.
    return i + 1 < len(lines) and lines[i + 1].startswith("[")


def writable_paths(config: Config) -> tuple[Path, ...]:
    """Every folder the agent writes to under this config, absolute, without repeats."""
    paths: list[Path] = [config.agent.data_dir]
    if config.log.file is not None:
        paths.append(config.log.file.parent)
    for source in config.sources:
        # An OPC UA source pinning a first-seen server certificate writes its trust folder.
        if getattr(source, "trust_on_first_use", False):
            paths.append(Path(getattr(source, "trust_dir", config.agent.data_dir)))
    for inspection in config.inspections:
        save = getattr(inspection, "save", None)
        if save is not None:
            paths.append(Path(save.dir))
    return _unique(p.resolve() for p in paths)


def serial_groups(config: Config) -> tuple[str, ...]:
    """`dialout` when a source reads a serial port (Modbus RTU), so no root is needed."""
    return ("dialout",) if any(s.type == "modbus_rtu" for s in config.sources) else ()


def _unique(paths: Iterable[Path]) -> tuple[Path, ...]:
    seen: list[Path] = []
    for path in paths:
        if path not in seen:
            seen.append(path)
    return tuple(seen)

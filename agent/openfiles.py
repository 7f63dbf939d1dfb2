"""The open-files limit (RLIMIT_NOFILE): raised at start when the config needs more than it allows.

Every PLC connection is a socket, so 1,000 Modbus TCP sources need over 1,000 file descriptors,
and many systems start a process with a soft limit of 1024 (the hard limit is usually far
higher: systemd's default is 524288). An agent that ran out would fail its connections one by
one with "Too many open files". So `lineside run` works out about how many descriptors its
config needs and, if the soft limit is lower, raises it to the hard limit (capped at `CAP`, so
the headroom also covers sources added by a reload), saying so in one log line. A hard limit
below the need cannot be lifted by an unprivileged process: then it raises what it can and
warns with the fix.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config

log = logging.getLogger("lineside.agent")

# Descriptors an agent uses whatever its sources: the store (database, WAL, shared memory, a
# second connection for the forwarder), log files, the event loop, the status page and its
# clients, sink connections, libraries' own. Generous: running short costs connections.
BASE = 256
CAP = 65536  # the soft limit asked for at most: plenty, and far below what costs kernel memory


@dataclass(frozen=True, slots=True)
class Raise:
    """What `plan` decided: the soft limit to set, and whether it still falls short."""

    soft: int
    short: bool


def needed(config: Config) -> int:
    """About how many descriptors `config` needs: one connection per source and sink, and BASE."""
    return BASE + len(config.sources) + len(config.sinks)


def plan(soft: int, hard: int, need: int) -> Raise | None:
    """The new soft limit for a need of `need` descriptors, or None when `soft` is enough."""
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    ceiling = CAP if hard == resource.RLIM_INFINITY else min(hard, CAP)
    target = max(ceiling, need if hard == resource.RLIM_INFINITY else min(need, hard))
    if target <= soft:
        return Raise(soft, short=True)  # the hard limit is where the soft one already is
    return Raise(target, short=target < need)


def raise_for(config: Config) -> None:
    """Raise this process's soft open-files limit if `config` needs more; log what was done."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = needed(config)
    decided = plan(soft, hard, need)
    if decided is None:
        return
    if decided.soft != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (decided.soft, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files: cannot raise the limit %d → %d: %s", soft, decided.soft, exc)
            return
        log.info(
            "open files: soft limit raised %d → %d (this config needs about %d)",
            soft,
            decided.soft,
            need,
        )
    if decided.short:
        log.warning(
            "open files: the hard limit %d is below the %d this config needs; raise it "
            "(LimitNOFILE= in the systemd unit, or ulimit -Hn) or connections will fail",
            hard,
            need,
        )

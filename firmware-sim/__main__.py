"""`python -m firmware_sim`: the same as `lineside sim`, for hosts without the agent's CLI."""

from __future__ import annotations

import argparse
import sys

from firmware_sim.plant import PLANTS
from firmware_sim.runner import PlantError, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_sim", description=__doc__)
    parser.add_argument("--plant", default="demo", help=f"{', '.join(PLANTS)} or a TOML file")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per second")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ephemeral", action="store_true", help="bind free ports")
    parser.add_argument("--no-opcua", action="store_true")
    parser.add_argument("--no-rtu", action="store_true")
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args(argv)
    try:
        serve(
            args.plant,
            speed=args.speed,
            host=args.host,
            ephemeral=args.ephemeral,
            opcua=not args.no_opcua,
            rtu=not args.no_rtu,
            duration=args.duration,
        )
    except PlantError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

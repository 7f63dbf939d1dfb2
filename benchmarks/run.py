"""`make bench`: run every benchmark in turn; each writes its JSON to benchmarks/results/."""

from __future__ import annotations

import subprocess
import sys

# Each entry is a module run as `python -m <module>`, in this order.
BENCHMARKS = (
    "benchmarks.sim_modbus_tcp",
    "benchmarks.store_layout",
    "benchmarks.acquisition",
    "benchmarks.endtoend",
    "benchmarks.drain",
    "benchmarks.opcua",
    "benchmarks.s7",
    "benchmarks.mc",
    "benchmarks.vision",
)


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"== {module}", flush=True)
        if subprocess.run([sys.executable, "-m", module], check=False).returncode != 0:
            failed.append(module)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

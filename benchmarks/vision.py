"""Vision: is the inspection pipeline as fast as its slower stage? (`make bench` entry point)

    python -m benchmarks.vision [--model FILE ...] [--frames 200] [--threads 1,2]
                                [--sizes 640x480,1280x1024] [--repeat 3] [--out FILE]

The benchmark itself is package code (vision/bench.py, also `lineside vision bench`); this
entry point only keeps its JSON in benchmarks/results/vision.json by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vision import bench

RESULTS = Path(__file__).parent / "results" / "vision.json"


def main(argv: list[str] | None = None) -> int:
    return bench.main(argv, default_out=RESULTS)


if __name__ == "__main__":
    sys.exit(main())

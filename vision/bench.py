"""Vision: is the inspection pipeline as fast as its slower stage?

    lineside vision bench --model FILE [--frames 200] [--threads 1,2] [--sizes 640x480,...]
    python -m benchmarks.vision        # the bundled model and a detection-shaped one, JSON kept

The pipeline (`vision.inspector`) overlaps two stages: read + decode + preprocess a frame (the
frame worker) and inference (the model worker). Measured in one run, on the same JPEG files,
for each model, frame size and onnxruntime thread count:

- `decode`: bare read + decode (reduced-size JPEG decoding as the pipeline does it) + resize +
  NCHW blob, one frame after another;
- `infer`: bare `session.run` on a prepared blob, again and again;
- `alongside`: both bare loops at once in two threads, until the first is done: what this box
  gives two stages running side by side (a shared or virtual box may give far less than two
  cores' worth, and then no pipeline can reach the bare rates);
- `pipeline`: the real `Inspector` replaying the folder of frames (a replay waits for room in
  the queue, so no frame is dropped), verdicts counted through its event callback.

Each stage runs `--repeat` times and the fastest run counts (the host may be shared). Rates are
frames per second over the steady state; latency p50/p99 per image (for the
pipeline: frame read → verdict, as the inspection events report it). The result that travels
to other machines is the ratio pipeline / min(decode, infer), target ≥ 0.9. On a 2-core box, 2
inference threads plus the decode thread ask for three cores: expect the ratio to fall there.
OpenCV runs single-threaded throughout, as the pipeline sets it (`OPENCV_THREADS`), so the bare
stages do the same work the pipeline's stages do.

Models: the bundled one (vision/models/*.onnx) when present, and a detection-shaped model built
in the run (Ultralytics layout `[1, 4 + nc, N]`, a few real convolutions at 320 px), or the
`--model` files given. Frames: generated parts (vision/synthetic.py) saved as JPEG (quality 90).
This module is package code, so the benchmark runs from an installed lineside as well as from
a source checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from agent.clock import SystemClock
from agent.model import Event
from vision import synthetic
from vision.frames import FolderSource, read_image
from vision.inspector import OPENCV_THREADS, Inspector, ReplayTrigger
from vision.model import Model

BUNDLED = Path(__file__).resolve().parent / "models"
TARGET_RATIO = 0.9
DISTINCT_FRAMES = 6  # rendered per size; the files cycle through them (rendering is slow)


@dataclass(frozen=True, slots=True)
class Stage:
    rate: float  # frames per second
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True, slots=True)
class Alongside:
    """The two bare loops run at once: each one's rate while the other was running too."""

    decode_rate: float
    infer_rate: float

    @property
    def slower(self) -> float:
        return min(self.decode_rate, self.infer_rate)


@dataclass(frozen=True, slots=True)
class Case:
    model: str
    adapter: str
    input_size: tuple[int, int]
    frame_size: tuple[int, int]
    threads: int
    frames: int
    decode: Stage
    infer: Stage
    alongside: Alongside
    pipeline: Stage
    ratio: float  # pipeline rate / the slower bare stage's rate
    meets_target: bool
    ratio_alongside: float  # pipeline rate / the slower stage's rate when both run at once


def detect_model(path: Path, imgsz: int = 320, classes: int = 2) -> Path:
    """A detection-shaped model: three convolutions → `[1, 4 + classes, (imgsz / 8)^2]`.

    Boxes are sigmoid x imgsz; class scores sigmoid(x - 6), so few anchors pass the 0.25
    confidence and NMS sees a realistic handful rather than thousands.
    """
    rng = np.random.default_rng(11)
    out_channels = 4 + classes
    cells = (imgsz // 8) ** 2
    weights: dict[str, np.ndarray] = {
        "w1": rng.standard_normal((16, 3, 4, 4)).astype(np.float32) / 4,
        "w2": rng.standard_normal((32, 16, 3, 3)).astype(np.float32) / 12,
        "w3": rng.standard_normal((out_channels, 32, 1, 1)).astype(np.float32) / 4,
        "shape": np.array([1, out_channels, cells], np.int64),
        "box_scale": np.array([imgsz] * 4 + [1] * classes, np.float32).reshape(1, -1, 1),
        "bias": np.array([0] * 4 + [-6] * classes, np.float32).reshape(1, -1, 1),
    }
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["c1"], strides=[4, 4]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["c3"]),
        helper.make_node("Reshape", ["c3", "shape"], ["flat"]),
        helper.make_node("Add", ["flat", "bias"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["unit"]),
        helper.make_node("Mul", ["unit", "box_scale"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "detect",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, out_channels, cells])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    names = repr({i: f"defect{i}" for i in range(classes)})
    for key, value in {"task": "detect", "names": names, "imgsz": repr([imgsz, imgsz])}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_frames(folder: Path, size: tuple[int, int], count: int) -> list[Path]:
    """`count` JPEG files of generated parts (a few distinct ones, cycled)."""
    folder.mkdir(parents=True, exist_ok=True)
    encoded = []
    for i in range(min(DISTINCT_FRAMES, count)):
        surface = synthetic.SURFACES[i % len(synthetic.SURFACES)]
        defect = synthetic.DEFECTS_BY_SURFACE[surface][0] if i % 2 else None
        image = synthetic.render(surface, defect, 1000 + i, size).image
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        encoded.append(data.tobytes())
    paths = []
    for i in range(count):
        path = folder / f"frame{i:05d}.jpg"
        path.write_bytes(encoded[i % len(encoded)])
        paths.append(path)
    return paths


def _stage(latencies_s: Sequence[float], elapsed_s: float | None = None) -> Stage:
    ms = np.asarray(latencies_s, np.float64) * 1e3
    total = float(np.sum(latencies_s)) if elapsed_s is None else elapsed_s
    rate = len(latencies_s) / total if total > 0 else float("nan")
    return Stage(
        rate=round(rate, 2),
        p50_ms=round(float(np.percentile(ms, 50)), 3),
        p99_ms=round(float(np.percentile(ms, 99)), 3),
    )


def bare_decode(model: Model, files: Sequence[Path]) -> Stage:
    """Read + decode + preprocess, as the pipeline's producer does it, one frame at a time."""
    latencies = []
    for path in files:
        start = time.perf_counter()
        frame = read_image(path, target=model.input_size)
        model.prepare(frame.image, decode_scale=frame.decode_scale)
        latencies.append(time.perf_counter() - start)
    return _stage(latencies)


def bare_infer(model: Model, files: Sequence[Path], count: int) -> Stage:
    frame = read_image(files[0], target=model.input_size)
    blob = model.prepare(frame.image, decode_scale=frame.decode_scale).blob
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        model.run(blob)
        latencies.append(time.perf_counter() - start)
    return _stage(latencies)


def alongside(model: Model, files: Sequence[Path], count: int) -> Alongside:
    """Bare decode and bare inference in two threads at once, stopped when the first is done.

    Both spend their time outside the GIL, so on a box with two free cores each runs at its
    bare rate; what they lose here is what the box cannot give two stages side by side.
    """
    frame = read_image(files[0], target=model.input_size)
    blob = model.prepare(frame.image, decode_scale=frame.decode_scale).blob
    stop = threading.Event()
    rates: dict[str, float] = {}
    barrier = threading.Barrier(2)

    def loop(name: str, step: Callable[[int], object]) -> None:
        barrier.wait()
        start = time.perf_counter()
        done = 0
        while done < count and (done == 0 or not stop.is_set()):  # ≥ 1 frame each
            step(done)
            done += 1
        stop.set()  # the other loop stops too: rates only count while both were running
        rates[name] = done / (time.perf_counter() - start)

    def decode_one(i: int) -> object:
        decoded = read_image(files[i % len(files)], target=model.input_size)
        return model.prepare(decoded.image, decode_scale=decoded.decode_scale)

    threads = [
        threading.Thread(target=loop, args=("decode", decode_one)),
        threading.Thread(target=loop, args=("infer", lambda _: model.run(blob))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Alongside(round(rates["decode"], 2), round(rates["infer"], 2))


def pipeline(model: Model, folder: Path, queue: int = 2) -> Stage:
    """The real Inspector replaying the folder; rate from the first verdict to the last."""
    done: list[float] = []
    latencies: list[float] = []

    def collect(event: Event) -> None:
        done.append(time.perf_counter())
        latencies.append(float(event.data["latency_ms"]) / 1e3)

    inspector = Inspector(
        "bench",
        "bench",
        lambda: model,
        lambda m: FolderSource(folder, target=m.input_size),
        ReplayTrigger(),
        clock=SystemClock(),
        emit_event=collect,
        queue_size=queue,
    )
    asyncio.run(inspector.run())
    if inspector.stats.inspected != len(list(folder.glob("*.jpg"))):
        raise RuntimeError(
            f"pipeline inspected {inspector.stats.inspected} frames: {inspector.stats}"
        )
    # The first verdict includes the fill of the pipeline; steady state is between verdicts.
    elapsed = done[-1] - done[0]
    stage = _stage(latencies)
    rate = (len(done) - 1) / elapsed if elapsed > 0 else float("nan")
    return Stage(round(rate, 2), stage.p50_ms, stage.p99_ms)


def _best(runs: Sequence[Stage]) -> Stage:
    # The host is shared: other processes only ever slow a run down, so the fastest of a few
    # runs is the closest to what the code can do (timeit's reasoning). Same rule for all stages.
    return max(runs, key=lambda s: s.rate)


def run_case(
    path: Path, frame_size: tuple[int, int], threads: int, files: list[Path], repeat: int = 3
) -> Case:
    cv2.setNumThreads(OPENCV_THREADS)  # as the pipeline runs it, for the bare stages too
    model = Model.load(path, threads=threads)
    bare_decode(model, files[:3])  # warm the page cache and OpenCV
    bare_infer(model, files, 3)
    decode = _best([bare_decode(model, files) for _ in range(repeat)])
    infer = _best([bare_infer(model, files, len(files)) for _ in range(repeat)])
    both = max((alongside(model, files, len(files)) for _ in range(repeat)), key=lambda a: a.slower)
    piped = _best([pipeline(model, files[0].parent) for _ in range(repeat)])
    slower = min(decode.rate, infer.rate)
    ratio = piped.rate / slower
    return Case(
        model=path.name,
        adapter=model.kind,
        input_size=model.input_size,
        frame_size=frame_size,
        threads=threads,
        frames=len(files),
        decode=decode,
        infer=infer,
        alongside=both,
        pipeline=piped,
        ratio=round(ratio, 3),
        meets_target=ratio >= TARGET_RATIO,
        ratio_alongside=round(piped.rate / both.slower, 3) if both.slower > 0 else math.nan,
    )


def bundled_model() -> Path | None:
    found = sorted(BUNDLED.glob("*.onnx")) if BUNDLED.is_dir() else []
    return found[0] if found else None


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return (int(width), int(height))


def table(cases: Sequence[Case]) -> str:
    head = (
        f"{'model':<22} {'frame':>9} {'thr':>3} {'decode/s':>9} {'infer/s':>9} "
        f"{'both d/i':>11} {'pipe/s':>8} {'ratio':>6} {'r.both':>6}  {'pipe p50':>8} {'p99 ms':>7}"
    )
    lines = [head]
    for c in cases:
        mark = "" if c.meets_target else "  < target"
        lines.append(
            f"{c.model[:22]:<22} {c.frame_size[0]:>4}x{c.frame_size[1]:<4} {c.threads:>3} "
            f"{c.decode.rate:>9.1f} {c.infer.rate:>9.1f} "
            f"{c.alongside.decode_rate:>5.0f}/{c.alongside.infer_rate:<5.0f} "
            f"{c.pipeline.rate:>8.1f} {c.ratio:>6.2f} {c.ratio_alongside:>6.2f}  "
            f"{c.pipeline.p50_ms:>8.2f} {c.pipeline.p99_ms:>7.2f}{mark}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, default_out: Path | None = None) -> int:
    """Run the benchmark; 0 when it ran, 2 for a model file not found. JSON goes to `--out`,
    else to `default_out` (the source checkout's benchmarks/results/vision.json), else nowhere.
    """
    parser = argparse.ArgumentParser(
        prog="vision-bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--model", type=Path, action="append", help="ONNX model (repeatable)")
    parser.add_argument("--frames", type=int, default=200, help="JPEG frames per case")
    parser.add_argument("--threads", default="1,2", help="onnxruntime intra-op threads")
    parser.add_argument("--sizes", default="640x480,1280x1024", help="frame sizes WxH")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the best counts")
    parser.add_argument("--out", type=Path, default=default_out, help="JSON results file")
    parser.add_argument("--no-json", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error("--frames must be at least 2")
    threads = [int(t) for t in args.threads.split(",")]
    sizes = [_size(s) for s in args.sizes.split(",")]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lineside-vision-bench-") as tmp:
        root = Path(tmp)
        models: list[Path] = list(args.model or [])
        if not models:
            bundled = bundled_model()
            if bundled is None:
                notes.append(f"no bundled model in {BUNDLED}: skipped")
            else:
                models.append(bundled)
            models.append(detect_model(root / "detect-shaped.onnx"))
        for missing in [m for m in models if not m.is_file()]:
            print(f"model not found: {missing}", file=sys.stderr)
            return 2
        cases: list[Case] = []
        for size in sizes:
            files = write_frames(root / f"{size[0]}x{size[1]}", size, args.frames)
            for path in models:
                for t in threads:
                    cases.append(run_case(path, size, t, files, max(args.repeat, 1)))
                    print(table(cases[-1:]).splitlines()[-1], flush=True)
    for note in notes:
        print(f"note: {note}")
    print(table(cases))
    passed = sum(c.meets_target for c in cases)
    print(f"pipeline >= {TARGET_RATIO:.0%} of the slower bare stage: {passed}/{len(cases)} cases")
    print("both d/i: bare decode / inference rates with both running at once; r.both: pipeline")
    print("  / the slower of those (what this box allows two overlapping stages)")
    if not args.no_json and args.out is not None:
        result = {
            "benchmark": "vision",
            "target_ratio": TARGET_RATIO,
            "host": {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "onnxruntime": ort.__version__,
                "opencv": cv2.__version__,
                "opencv_threads": cv2.getNumThreads(),
            },
            "settings": {"frames": args.frames, "repeat": args.repeat, "command": sys.argv},
            "notes": notes,
            "cases": [asdict(c) for c in cases],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"results: {args.out}")
    return 0

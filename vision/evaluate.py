"""Measure an anomaly model on a freshly generated synthetic test set (no torch needed).

    python -m vision.evaluate --model vision/models/lineside-surface.onnx --seed 3

The model must follow the anomalib-2 export layout: input `input` float32 NCHW RGB in [0, 1],
output `pred_score` [N] normalised so that 0.5 is the decision boundary. Images at or above
0.5 are rejected. Figures per surface and per defect type:

- image AUROC: probability that a defective image scores above a good one (ties count half);
- false-reject rate (FRR): share of good images rejected;
- escape rate: share of defective images accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from vision.synthetic import DEFECTS, DEFECTS_BY_SURFACE, SURFACES, render

BOUNDARY = 0.5


@dataclass(frozen=True)
class Row:
    """One line of the card: `group` is a surface, a defect type or "all"."""

    group: str
    n_good: int
    n_defective: int
    auroc: float
    frr: float
    escape: float


@dataclass(frozen=True)
class TestItem:
    surface: str
    defect: str | None
    seed: int


def test_set(seed: int, n_good: int, n_per_defect: int) -> list[TestItem]:
    """Per surface `n_good` good parts and `n_per_defect` parts of each defect it can carry."""
    rng = np.random.default_rng(seed)
    items: list[TestItem] = []
    for surface in SURFACES:
        items += [TestItem(surface, None, int(rng.integers(2**62))) for _ in range(n_good)]
        for defect in DEFECTS_BY_SURFACE[surface]:
            items += [
                TestItem(surface, defect, int(rng.integers(2**62))) for _ in range(n_per_defect)
            ]
    return items


def auroc(good: npt.ArrayLike, bad: npt.ArrayLike) -> float:
    """Mann-Whitney AUROC of `bad` scoring above `good`; ties count one half."""
    g = np.asarray(good, np.float64)
    b = np.asarray(bad, np.float64)
    if g.size == 0 or b.size == 0:
        raise ValueError("AUROC needs at least one good and one defective score")
    scores = np.concatenate([g, b])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(scores.size, np.float64)
    sorted_scores = scores[order]
    # Average rank over runs of equal scores.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    rank_sum_bad = ranks[g.size :].sum()
    return float((rank_sum_bad - b.size * (b.size + 1) / 2.0) / (g.size * b.size))


def open_session(model: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def score_images(session: ort.InferenceSession, images: Sequence[np.ndarray]) -> np.ndarray:
    """`pred_score` of each BGR uint8 image (run one at a time: as on the line)."""
    out = np.empty(len(images), np.float32)
    for k, image in enumerate(images):
        blob = cv2.dnn.blobFromImage(image, 1.0 / 255.0, swapRB=True)
        (score,) = session.run(["pred_score"], {"input": blob})
        out[k] = float(np.asarray(score).reshape(-1)[0])
    return out


def rows(items: Sequence[TestItem], scores: np.ndarray) -> list[Row]:
    """Card rows: every surface, every defect type present, then all images together."""
    if len(items) != len(scores):
        raise ValueError("one score per item expected")
    surface = np.array([it.surface for it in items])
    defect = np.array([it.defect or "" for it in items])
    good = defect == ""

    def row(group: str, g: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> Row:
        gs, bs = scores[g], scores[b]
        return Row(
            group=group,
            n_good=int(g.sum()),
            n_defective=int(b.sum()),
            auroc=round(auroc(gs, bs), 4),
            frr=round(float((gs >= BOUNDARY).mean()), 4),
            escape=round(float((bs < BOUNDARY).mean()), 4),
        )

    out: list[Row] = []
    for s in SURFACES:
        if (surface == s).any():
            out.append(row(s, good & (surface == s), ~good & (surface == s)))
    for d in DEFECTS:
        carriers = [s for s in SURFACES if d in DEFECTS_BY_SURFACE[s]]
        if (defect == d).any():
            out.append(row(d, good & np.isin(surface, carriers), defect == d))
    out.append(row("all", good, ~good))
    return out


def evaluate(model: Path, seed: int, n_good: int, n_per_defect: int, threads: int = 1) -> list[Row]:
    items = test_set(seed, n_good, n_per_defect)
    session = open_session(model, threads)
    images = [render(it.surface, it.defect, it.seed).image for it in items]
    return rows(items, score_images(session, images))


def table(result: Sequence[Row]) -> str:
    lines = [
        "| group | good | defective | image AUROC | FRR | escape |",
        "|---|---|---|---|---|---|",
    ]
    for r in result:
        lines.append(
            f"| {r.group} | {r.n_good} | {r.n_defective} | {r.auroc:.3f} | "
            f"{r.frr:.3f} | {r.escape:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vision.evaluate", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="ONNX file (anomalib-2 layout)")
    parser.add_argument("--seed", type=int, required=True, help="seed of the generated test set")
    parser.add_argument("--good", type=int, default=200, help="good images per surface")
    parser.add_argument("--per-defect", type=int, default=100, help="images per defect type")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: model file {args.model} not found", file=sys.stderr)
        return 2
    result = evaluate(args.model, args.seed, args.good, args.per_defect, args.threads)
    print(table(result))
    print(
        json.dumps(
            {"model": str(args.model), "seed": args.seed, "rows": [asdict(r) for r in result]},
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

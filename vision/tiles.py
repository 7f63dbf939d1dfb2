"""Tiling: a frame much larger than the model's input, inspected as model-sized tiles.

A 4000 px frame shrunk to a 640 px detector loses every defect smaller than ~6 px. With
`tile = true` the frame (or its ROI) is cut into tiles of exactly the model's input size, which
overlap by `overlap` of a tile so a defect on a seam is whole in at least one tile; each tile is
inferred on its own and the results are merged: boxes in frame pixels, non-maximum suppression
across tiles (per class, the adapter's IoU), the worst verdict and the highest score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vision.adapters import DETECT_IOU, Box, Verdict, nms
from vision.preprocess import Roi, Size

DEFAULT_OVERLAP = 0.2


def _starts(extent: int, tile: int, overlap: float) -> list[int]:
    """Tile starts along one axis: evenly spread, the first at 0 and the last at the edge."""
    if extent <= tile:
        return [0]
    step = tile * (1 - overlap)
    count = math.ceil((extent - tile) / step) + 1
    return [round(i * (extent - tile) / (count - 1)) for i in range(count)]


def grid(region: Roi, tile: Size, overlap: float = DEFAULT_OVERLAP) -> list[Roi]:
    """Tiles (x, y, w, h) of size `tile` covering `region`, row by row."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be within [0, 1), got {overlap}")
    x0, y0, width, height = region
    tw, th = min(tile[0], width), min(tile[1], height)
    return [
        (x0 + x, y0 + y, tw, th)
        for y in _starts(height, th, overlap)
        for x in _starts(width, tw, overlap)
    ]


def merge(verdicts: Sequence[Verdict], iou_threshold: float = DETECT_IOU) -> Verdict:
    """One verdict for the frame: the tiles' boxes after NMS across tiles, the worst verdict."""
    if not verdicts:
        raise ValueError("no tile verdicts to merge")
    boxes = [b for v in verdicts for b in v.boxes]
    kept: list[Box] = []
    if boxes:
        xyxy = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], np.float64)
        scores = np.array([b.score for b in boxes], np.float64)
        classes = np.array([b.cls for b in boxes], np.intp)
        kept = [boxes[i] for i in nms(xyxy, scores, classes, iou_threshold)]
    kinds = {v.verdict for v in verdicts}
    kind = "NotOK" if "NotOK" in kinds else "NotDecidable" if "NotDecidable" in kinds else "OK"
    finite = [v.score for v in verdicts if math.isfinite(v.score)]
    score = max(finite) if finite else math.nan
    if kind == "NotDecidable":
        return Verdict("NotDecidable", score)
    labels = tuple(sorted({c for v in verdicts if v.verdict == "NotOK" for c in v.classes}))
    if kind == "OK":
        return Verdict("OK", score)
    worst = max((v for v in verdicts if v.verdict == "NotOK"), key=lambda v: v.score)
    return Verdict("NotOK", score, label=worst.label, classes=labels, boxes=tuple(kept))

"""Model outputs → a `Verdict`, as pure functions: one per output layout.

- `classify`: `[1, nc]` logits or probabilities (Ultralytics classify exports probabilities).
- `detect`: the Ultralytics detect layout `[1, 4 + nc, N]` (cx, cy, w, h, one score per class;
  no objectness, NMS outside the graph), boxes taken back through the letterbox;
  `detect_end2end`: end-to-end exports `[1, N, 6]` (x1, y1, x2, y2, score, class; NMS done in
  the graph); `segment`: segmentation exports (`output0` with mask coefficients and `output1`
  protos), each box tightened to its mask.
- `anomaly`: anomalib's `pred_score` [N] and `anomaly_map` [N, 1, H, W]; anomalib 2 normalises
  inside the graph (0.5 is the boundary), anomalib ≤ 1 leaves raw values and a metadata.json
  with the thresholds, normalised here the way anomalib did it.

Every verdict's `score` grows with "defective": the probability of a not-OK class, the best
box's confidence, the normalised anomaly score.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from agent.model import Verdict as AgentVerdict
from vision.preprocess import Placement

VerdictKind = Literal["OK", "NotOK", "NotDecidable"]  # the values of agent.model.Verdict
VERDICT_CODES: dict[str, int] = {v.value: v.code for v in AgentVerdict}  # one definition

Array = npt.NDArray[np.floating[Any]]

DETECT_CONFIDENCE = 0.25  # Ultralytics' default `conf`
DETECT_IOU = 0.45
CLASSIFY_CONFIDENCE = 0.5  # below this the top class is not trusted: NotDecidable
ANOMALY_BOUNDARY = 0.5  # anomalib normalises scores and maps so that 0.5 is the threshold


@dataclass(frozen=True, slots=True)
class Box:
    """One finding in frame pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    cls: int
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)],
            "score": round(self.score, 4),
            "class": self.label,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: VerdictKind
    score: float
    label: str | None = None
    classes: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    # The normalised anomaly map ([0, 1], model-input grid), for heat-map overlays.
    anomaly_map: npt.NDArray[np.float32] | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------------------------
# Classification


def is_probabilities(values: Array, tolerance: float = 1e-3) -> bool:
    """True when the vector already is a distribution (in [0, 1], summing to 1)."""
    return bool(
        np.all(values >= -tolerance)
        and np.all(values <= 1 + tolerance)
        and abs(float(values.sum()) - 1.0) <= tolerance
    )


def softmax(values: Array) -> npt.NDArray[np.float64]:
    shifted = np.asarray(values, dtype=np.float64) - float(np.max(values))
    e = np.exp(shifted)
    out: npt.NDArray[np.float64] = e / e.sum()
    return out


def ok_classes(names: Sequence[str]) -> frozenset[int]:
    """Which classes mean a good part: those named good/ok/pass/normal, else class 0."""
    good = {"good", "ok", "pass", "normal", "no_defect", "nodefect"}
    found = frozenset(i for i, n in enumerate(names) if n.strip().lower() in good)
    return found or frozenset({0})


def classify(
    output: Array,
    names: Sequence[str],
    *,
    ok: Collection[int],
    min_confidence: float = CLASSIFY_CONFIDENCE,
) -> Verdict:
    """Top class and its probability; `score` is the probability of not OK."""
    values = np.asarray(output, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return Verdict("NotDecidable", math.nan)
    probabilities = values if is_probabilities(values) else softmax(values)
    top = int(np.argmax(probabilities))
    label = names[top] if top < len(names) else str(top)
    p_ok = float(sum(probabilities[i] for i in ok if i < probabilities.size))
    score = min(max(1.0 - p_ok, 0.0), 1.0)
    if float(probabilities[top]) < min_confidence:
        kind: VerdictKind = "NotDecidable"
    else:
        kind = "OK" if top in ok else "NotOK"
    return Verdict(kind, score, label=label, classes=(label,))


# ---------------------------------------------------------------------------------------------
# Detection


def iou(box: Array, others: Array) -> npt.NDArray[np.float64]:
    """Intersection over union of one xyxy box with each row of `others`."""
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    out: npt.NDArray[np.float64] = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return out


def nms(boxes: Array, scores: Array, classes: npt.NDArray[np.intp], threshold: float) -> list[int]:
    """Greedy non-maximum suppression within each class; kept indices, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        rest = np.array(order)
        overlap = iou(boxes[best], boxes[rest])
        same = classes[rest] == classes[best]
        order = [
            int(i) for i, o, s in zip(rest, overlap, same, strict=True) if not (s and o > threshold)
        ]
    return keep


def _anchors(
    out: npt.NDArray[np.float64], classes: int, confidence: float, iou_threshold: float, limit: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.intp], list[int]]:
    """Rows of `[4 + classes (+ extra), N]` → xyxy, confidence, class of the rows above
    `confidence`, and the kept (NMS) positions among them, best first."""
    rows = out.T  # one row per anchor: cx, cy, w, h, class scores, (mask coefficients)
    class_scores = rows[:, 4 : 4 + classes]
    cls = np.argmax(class_scores, axis=1)
    conf = class_scores[np.arange(rows.shape[0]), cls]
    chosen = np.flatnonzero(conf >= confidence)
    rows, cls, conf = rows[chosen], cls[chosen], conf[chosen]
    xyxy = np.empty((rows.shape[0], 4))
    xyxy[:, 0] = rows[:, 0] - rows[:, 2] / 2
    xyxy[:, 1] = rows[:, 1] - rows[:, 3] / 2
    xyxy[:, 2] = rows[:, 0] + rows[:, 2] / 2
    xyxy[:, 3] = rows[:, 1] + rows[:, 3] / 2
    keep = nms(xyxy, conf, cls, iou_threshold)[:limit]
    return xyxy, conf, cls, keep


def _boxes_verdict(boxes: tuple[Box, ...]) -> Verdict:
    if not boxes:
        return Verdict("OK", 0.0)
    classes = tuple(sorted({b.label for b in boxes}))
    return Verdict("NotOK", boxes[0].score, label=boxes[0].label, classes=classes, boxes=boxes)


def detect(
    output: Array,
    names: Sequence[str],
    placement: Placement,
    *,
    confidence: float = DETECT_CONFIDENCE,
    iou_threshold: float = DETECT_IOU,
    max_boxes: int = 300,
) -> Verdict:
    """Ultralytics `[1, 4 + nc, N]` → boxes in frame pixels; any box is a NotOK verdict."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 3:
        out = out[0]
    if out.ndim != 2 or out.shape[0] < 5:
        raise ValueError(f"expected a detect output [1, 4 + classes, anchors], got {output.shape}")
    if not np.all(np.isfinite(out)):
        return Verdict("NotDecidable", math.nan)
    xyxy, conf, cls, keep = _anchors(out, out.shape[0] - 4, confidence, iou_threshold, max_boxes)
    in_frame = placement.to_frame(xyxy[keep])
    return _boxes_verdict(
        tuple(
            Box(*_corners(in_frame[j]), float(conf[k]), int(cls[k]), _name(names, int(cls[k])))
            for j, k in enumerate(keep)
        )
    )


def detect_end2end(
    output: Array,
    names: Sequence[str],
    placement: Placement,
    *,
    confidence: float = DETECT_CONFIDENCE,
) -> Verdict:
    """Ultralytics end-to-end exports (YOLOv10, YOLO11/26 `end2end`): `[1, N, 6]` rows of
    x1, y1, x2, y2, score, class, already through NMS in the graph (padding rows score 0)."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 3:
        out = out[0]
    if out.ndim != 2 or out.shape[1] != 6:
        raise ValueError(f"expected an end-to-end output [1, N, 6], got {np.shape(output)}")
    if not np.all(np.isfinite(out)):
        return Verdict("NotDecidable", math.nan)
    rows = out[out[:, 4] >= confidence]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    in_frame = placement.to_frame(rows[:, :4])
    return _boxes_verdict(
        tuple(
            Box(*_corners(in_frame[j]), float(r[4]), int(r[5]), _name(names, int(r[5])))
            for j, r in enumerate(rows)
        )
    )


def segment(
    output: Array,
    protos: Array,
    names: Sequence[str],
    placement: Placement,
    input_size: tuple[int, int],
    *,
    confidence: float = DETECT_CONFIDENCE,
    iou_threshold: float = DETECT_IOU,
    max_boxes: int = 300,
) -> Verdict:
    """Ultralytics segmentation: `output0` [1, 4 + nc + nm, N] and `output1` protos
    [1, nm, mh, mw]. Each kept box's mask is sigmoid(coefficients . protos) inside the box;
    the box reported is the extent of that mask (where the defect is, not just its anchor box),
    or the predicted box when the mask is empty."""
    out = np.asarray(output, dtype=np.float64)
    proto = np.asarray(protos, dtype=np.float64)
    if out.ndim == 3:
        out = out[0]
    if proto.ndim == 4:
        proto = proto[0]
    masks_n = proto.shape[0] if proto.ndim == 3 else 0
    classes = out.shape[0] - 4 - masks_n if out.ndim == 2 else 0
    if out.ndim != 2 or proto.ndim != 3 or classes < 1:
        raise ValueError(
            f"expected output0 [1, 4 + classes + masks, anchors] and protos [1, masks, h, w], "
            f"got {np.shape(output)} and {np.shape(protos)}"
        )
    if not (np.all(np.isfinite(out)) and np.all(np.isfinite(proto))):
        return Verdict("NotDecidable", math.nan)
    xyxy, conf, cls, keep = _anchors(out, classes, confidence, iou_threshold, max_boxes)
    chosen = np.flatnonzero(np.max(out[4 : 4 + classes], axis=0) >= confidence)
    coefficients = out[4 + classes :, chosen[keep]].T  # (kept, nm)
    mh, mw = proto.shape[1:]
    sx, sy = mw / input_size[0], mh / input_size[1]
    logits = coefficients @ proto.reshape(masks_n, -1)
    masks = (logits.reshape(-1, mh, mw) > 0).astype(np.uint8)  # sigmoid > 0.5
    found = []
    for j, k in enumerate(keep):
        x1, y1, x2, y2 = xyxy[k]
        c1, r1 = max(math.floor(x1 * sx), 0), max(math.floor(y1 * sy), 0)
        c2, r2 = min(math.ceil(x2 * sx), mw), min(math.ceil(y2 * sy), mh)
        inside = masks[j, r1:r2, c1:c2]
        box = xyxy[k]
        if inside.any():
            rows, cols = np.nonzero(inside)
            box = np.array(
                [
                    (c1 + cols.min()) / sx,
                    (r1 + rows.min()) / sy,
                    (c1 + cols.max() + 1) / sx,
                    (r1 + rows.max() + 1) / sy,
                ]
            )
        found.append((placement.to_frame(box[None])[0], k))
    return _boxes_verdict(
        tuple(
            Box(*_corners(b), float(conf[k]), int(cls[k]), _name(names, int(cls[k])))
            for b, k in found
        )
    )


def _name(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


# ---------------------------------------------------------------------------------------------
# Anomaly


@dataclass(frozen=True, slots=True)
class Normalization:
    """anomalib ≤ 1.x metadata.json: thresholds and the min/max of scores on validation data."""

    image_threshold: float
    pixel_threshold: float
    min: float
    max: float

    def apply(self, values: Array, threshold: float) -> npt.NDArray[np.float64]:
        # anomalib's min-max normalisation: the threshold lands on 0.5, then clip to [0, 1].
        span = self.max - self.min
        if span <= 0:
            raise ValueError(f"metadata max ({self.max}) must exceed min ({self.min})")
        out: npt.NDArray[np.float64] = np.clip(
            (np.asarray(values, dtype=np.float64) - threshold) / span + 0.5, 0.0, 1.0
        )
        return out


def anomaly(
    pred_score: Array | None,
    anomaly_map: Array | None,
    placement: Placement,
    *,
    normalization: Normalization | None = None,
    threshold: float = ANOMALY_BOUNDARY,
    margin: int = 16,
    input_size: tuple[int, int] | None = None,
) -> Verdict:
    """Score, verdict and the regions above the boundary.

    With a map and `margin` > 0 the image score is taken from the map inside a border band of
    `margin` model-input pixels: shared-statistics models raise false alarms along image
    borders, and ignoring 16 px removed most of them in trials. Without a map it is
    `pred_score`. Raw (anomalib ≤ 1) values are normalised with `normalization` first.
    """
    if pred_score is None and anomaly_map is None:
        raise ValueError("an anomaly model needs a pred_score or an anomaly_map output")
    # This runs on the model worker for every frame: the map is read in place (float32 as the
    # model gives it, no float64 copies), and its regions are labelled only for a NotOK part.
    raw: npt.NDArray[np.floating[Any]] | None = None
    heat: npt.NDArray[np.floating[Any]] | None = None
    if anomaly_map is not None:
        raw = np.asarray(anomaly_map)
        if raw.dtype not in (np.float32, np.float64):
            raw = raw.astype(np.float64)
        raw = raw.reshape(raw.shape[-2:])
        heat = (
            raw
            if normalization is None
            else normalization.apply(raw, normalization.pixel_threshold)
        )
    band = 0
    if heat is not None and margin > 0:
        rows = heat.shape[0]
        band = round(margin * rows / input_size[1]) if input_size else margin
        band = min(band, (min(heat.shape) - 1) // 2)
    if raw is not None and band > 0:
        inner = raw[band:-band, band:-band]
        peak = float(inner.max())
        if normalization is not None:
            score = float(normalization.apply(np.array(peak), normalization.image_threshold))
        else:
            score = peak
    elif pred_score is not None:
        value = float(np.asarray(pred_score, dtype=np.float64).reshape(-1)[0])
        if normalization is not None:
            value = float(normalization.apply(np.array(value), normalization.image_threshold))
        score = value
    else:
        assert heat is not None
        score = float(heat.max())
    if not math.isfinite(score) or (heat is not None and not np.isfinite(heat).all()):
        return Verdict("NotDecidable", math.nan)
    kind: VerdictKind = "NotOK" if score > threshold else "OK"
    boxes: tuple[Box, ...] = ()
    if heat is not None and kind == "NotOK":
        boxes = _regions(heat, band, placement, input_size)
    return Verdict(
        kind,
        score,
        label="anomaly" if kind == "NotOK" else None,
        classes=("anomaly",) if kind == "NotOK" else (),
        boxes=boxes,
        anomaly_map=None if heat is None else heat.astype(np.float32, copy=False),
    )


def _regions(
    heat: npt.NDArray[np.floating[Any]],
    band: int,
    placement: Placement,
    input_size: tuple[int, int] | None,
) -> tuple[Box, ...]:
    """Connected regions of the map above the boundary, inside the band, as frame boxes."""
    mask = (heat > ANOMALY_BOUNDARY).astype(np.uint8)
    if band > 0:
        mask[:band, :] = 0
        mask[-band:, :] = 0
        mask[:, :band] = 0
        mask[:, -band:] = 0
    # Grana's block-based labelling: the same labels and stats as the default (Bolelli's
    # Spaghetti), at 0.14 ms instead of 0.36 ms on a 256² map; this runs on the model worker.
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask, 8, cv2.CV_32S, cv2.CCL_GRANA
    )
    rows, cols = heat.shape
    sx = input_size[0] / cols if input_size else 1.0
    sy = input_size[1] / rows if input_size else 1.0
    found = []
    for i in range(1, count):
        x, y, w, h = (int(v) for v in stats[i, :4])
        xyxy = np.array([[x * sx, y * sy, (x + w) * sx, (y + h) * sy]])
        inside = labels[y : y + h, x : x + w] == i  # within its bounding box, not the map
        peak = float(heat[y : y + h, x : x + w][inside].max())
        found.append((placement.to_frame(xyxy)[0], peak))
    found.sort(key=lambda item: -item[1])
    return tuple(Box(*_corners(b), peak, 0, "anomaly") for b, peak in found)


def _corners(row: Array) -> tuple[float, float, float, float]:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))

"""Post-processing tables: classify, detect (NMS, letterbox undo), anomaly (normalised, margin)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vision.adapters import (
    Normalization,
    anomaly,
    classify,
    detect,
    is_probabilities,
    nms,
    ok_classes,
    softmax,
)
from vision.preprocess import Placement


def test_softmax_and_probability_check() -> None:
    p = softmax(np.array([0.0, math.log(3.0)]))
    assert p.tolist() == pytest.approx([0.25, 0.75])
    assert is_probabilities(np.array([0.25, 0.75]))
    assert not is_probabilities(np.array([2.0, -1.0]))
    assert not is_probabilities(np.array([0.5, 0.6]))


@pytest.mark.parametrize(
    ("names", "ok"),
    [
        (["good", "scratch"], {0}),
        (["crack", "OK"], {1}),
        (["a", "b"], {0}),  # no good-sounding name: class 0
        (["normal", "pass", "hole"], {0, 1}),
    ],
)
def test_ok_classes(names: list[str], ok: set[int]) -> None:
    assert ok_classes(names) == ok


@pytest.mark.parametrize(
    ("output", "verdict", "label", "score"),
    [
        ([0.9, 0.1], "OK", "good", 0.1),  # probabilities
        ([0.2, 0.8], "NotOK", "scratch", 0.8),
        ([0.0, math.log(3.0)], "NotOK", "scratch", 0.75),  # logits → softmax
        ([0.45, 0.55], "NotDecidable", "scratch", 0.55),  # top below min_confidence 0.6
    ],
)
def test_classify(output: list[float], verdict: str, label: str, score: float) -> None:
    v = classify(np.array([output]), ["good", "scratch"], ok={0}, min_confidence=0.6)
    assert (v.verdict, v.label) == (verdict, label)
    assert v.score == pytest.approx(score)


def test_classify_nan_is_not_decidable() -> None:
    v = classify(np.array([[math.nan, 1.0]]), ["good", "bad"], ok={0})
    assert v.verdict == "NotDecidable" and math.isnan(v.score)


def test_nms_keeps_the_best_per_class() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=np.float64
    )
    scores = np.array([0.8, 0.9, 0.7, 0.5])
    classes = np.array([0, 0, 1, 0])
    # box 0 overlaps box 1 (IoU 81/119 = 0.68) in the same class; box 2 is another class
    assert nms(boxes, scores, classes, 0.5) == [1, 2, 3]
    assert nms(boxes, scores, classes, 0.7) == [1, 0, 2, 3]


def _anchors(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float32).T[None]  # Ultralytics [1, 4 + nc, N]


def test_detect_boxes_scores_and_letterbox_undo() -> None:
    output = _anchors(
        [20, 30, 10, 20, 0.9, 0.1],  # scratch, box (15, 20)-(25, 40)
        [21, 30, 10, 20, 0.8, 0.1],  # same scratch, suppressed by NMS
        [40, 40, 8, 8, 0.05, 0.6],  # a pit
        [50, 10, 4, 4, 0.1, 0.2],  # below the confidence threshold
    )
    placement = Placement(scale_x=0.5, scale_y=0.5, pad_x=0, pad_y=8)  # 128x96 frame in 64x64
    v = detect(output, ["scratch", "pit"], placement, confidence=0.25, iou_threshold=0.45)
    assert v.verdict == "NotOK"
    assert v.score == pytest.approx(0.9)
    assert v.classes == ("pit", "scratch")
    assert [(b.label, round(b.score, 2)) for b in v.boxes] == [("scratch", 0.9), ("pit", 0.6)]
    assert [b.x1 for b in v.boxes] == pytest.approx([30.0, 72.0])
    assert [(b.y1, b.x2, b.y2) for b in v.boxes] == [
        pytest.approx((24.0, 50.0, 64.0)),
        pytest.approx((56.0, 88.0, 72.0)),
    ]


def test_detect_nothing_is_ok() -> None:
    v = detect(_anchors([5, 5, 2, 2, 0.1]), ["scratch"], Placement())
    assert (v.verdict, v.score, v.boxes) == ("OK", 0.0, ())


def test_detect_refuses_a_wrong_layout() -> None:
    with pytest.raises(ValueError, match="expected a detect output"):
        detect(np.zeros((1, 3, 10), np.float32), ["a"], Placement())


def test_anomaly_normalised_in_graph_uses_the_interior_of_the_map() -> None:
    heat = np.zeros((1, 1, 64, 64), np.float32)
    heat[0, 0, 0:4, 0:4] = 0.95  # border artefact, inside the 16 px band
    heat[0, 0, 30:34, 40:46] = 0.7  # a real defect
    v = anomaly(np.array([0.95]), heat, Placement(), margin=16, input_size=(64, 64))
    assert v.verdict == "NotOK"
    assert v.score == pytest.approx(0.7)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in v.boxes] == [(40.0, 30.0, 46.0, 34.0)]
    assert v.anomaly_map is not None and v.anomaly_map.shape == (64, 64)


def test_anomaly_border_only_is_ok_and_without_margin_not_ok() -> None:
    heat = np.zeros((1, 1, 64, 64), np.float32)
    heat[0, 0, 0:4, 0:4] = 0.95
    assert anomaly(None, heat, Placement(), margin=16, input_size=(64, 64)).verdict == "OK"
    v = anomaly(np.array([0.95]), heat, Placement(), margin=0, input_size=(64, 64))
    assert v.verdict == "NotOK"
    assert v.score == pytest.approx(0.95)


def test_anomaly_margin_scales_with_a_smaller_map() -> None:
    heat = np.zeros((1, 1, 32, 32), np.float32)  # map at half the 64 px input
    heat[0, 0, 7, 7] = 0.9  # 14 px from the border in input pixels: inside the band
    heat[0, 0, 9, 9] = 0.6  # 18 px: outside it
    v = anomaly(None, heat, Placement(), margin=16, input_size=(64, 64))
    assert v.score == pytest.approx(0.6)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in v.boxes] == [(18.0, 18.0, 20.0, 20.0)]


def test_anomaly_score_without_a_map() -> None:
    assert anomaly(np.array([0.4]), None, Placement()).verdict == "OK"
    assert anomaly(np.array([0.6]), None, Placement()).verdict == "NotOK"
    assert anomaly(np.array([0.6]), None, Placement(), threshold=0.7).verdict == "OK"
    v = anomaly(np.array([math.nan]), None, Placement())
    assert v.verdict == "NotDecidable"


def test_anomaly_raw_outputs_are_normalised_like_anomalib_1() -> None:
    norm = Normalization(image_threshold=30.0, pixel_threshold=20.0, min=0.0, max=100.0)
    # image: (35 - 30) / 100 + 0.5 = 0.55; pixel: (35 - 20) / 100 + 0.5 = 0.65
    v = anomaly(np.array([35.0]), None, Placement(), normalization=norm)
    assert v.verdict == "NotOK"
    assert v.score == pytest.approx(0.55)
    heat = np.full((1, 1, 40, 40), 10.0, np.float32)
    heat[0, 0, 20, 20] = 35.0
    v = anomaly(np.array([35.0]), heat, Placement(), normalization=norm, input_size=(40, 40))
    assert v.score == pytest.approx(0.55)
    assert v.anomaly_map is not None
    assert float(v.anomaly_map[20, 20]) == pytest.approx(0.65)
    assert float(v.anomaly_map[0, 0]) == pytest.approx(0.4)
    low = anomaly(np.array([-500.0]), None, Placement(), normalization=norm)
    assert low.score == 0.0  # clipped to [0, 1]


def test_anomaly_needs_an_output() -> None:
    with pytest.raises(ValueError, match="pred_score or an anomaly_map"):
        anomaly(None, None, Placement())

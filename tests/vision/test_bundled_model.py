"""The committed demo model against its model card, on a fresh test set (no torch needed).

The card's figures come from a large test set (seed 3). Here a smaller one is generated with
a seed the card never used, and every figure must agree with the card within three standard
errors of the smaller set (binomial for FRR and escape rate, Hanley-McNeil for AUROC) plus a
small floor (one image for a rate, 0.01 for AUROC).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from vision import evaluate
from vision.synthetic import render

MODELS = Path(__file__).resolve().parents[2] / "vision" / "models"
MODEL = MODELS / "lineside-surface.onnx"
CARD = MODELS / "MODEL_CARD.md"
FRESH_SEED = 424242
N_GOOD, N_PER_DEFECT = 40, 15  # 120 good + 165 defective images: ~10 s here


def card_figures() -> dict[str, evaluate.Row]:
    text = CARD.read_text(encoding="utf-8")
    block = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert block, "the card must carry its figures as a JSON block"
    data = json.loads(block.group(1))
    return {r["group"]: evaluate.Row(**r) for r in data["rows"]}


def auroc_se(a: float, n_good: int, n_bad: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_bad - 1) * (q1 - a * a) + (n_good - 1) * (q2 - a * a)) / (
        n_good * n_bad
    )
    return math.sqrt(max(var, 0.0))


def rate_tolerance(p: float, n: int) -> float:
    return 3 * math.sqrt(p * (1 - p) / n) + 1 / n


@pytest.fixture(scope="module")
def fresh() -> dict[str, evaluate.Row]:
    rows = evaluate.evaluate(MODEL, FRESH_SEED, N_GOOD, N_PER_DEFECT)
    return {r.group: r for r in rows}


def test_model_file_follows_the_anomalib2_layout() -> None:
    assert MODEL.stat().st_size < 4_000_000
    proto = onnx.load(str(MODEL))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["pred_score", "anomaly_map"]
    meta = {p.key: p.value for p in proto.metadata_props}
    for key in ("image_threshold", "min", "max", "roi_margin_px", "held_out_defect"):
        assert key in meta
    assert float(meta["max"]) > float(meta["min"])
    assert meta["held_out_defect"] in card_figures()
    assert meta["image_threshold"] in CARD.read_text(encoding="utf-8")


def test_scores_and_maps_are_consistent_for_any_size_and_batch() -> None:
    session = evaluate.open_session(MODEL)
    good, bad = render("metal", None, 1, (320, 240)), render("metal", "hole", 1, (320, 240))
    batch = np.stack([good.image, bad.image])
    x = np.ascontiguousarray(batch[:, :, :, ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0
    score, amap = session.run(["pred_score", "anomaly_map"], {"input": x})
    assert score.shape == (2,) and amap.shape == (2, 1, 240, 320)
    assert ((score >= 0) & (score <= 1)).all() and ((amap >= 0) & (amap <= 1)).all()
    margin = 16
    assert not amap[:, :, :margin].any() and not amap[:, :, :, -margin:].any()
    # The verdict is the map's maximum: both use the same threshold and normalisation.
    np.testing.assert_allclose(score, amap.reshape(2, -1).max(axis=1), atol=1e-5)
    assert score[0] < 0.5 <= score[1]


def test_wrong_input_is_refused() -> None:
    session = evaluate.open_session(MODEL)
    with pytest.raises(Exception, match=r"(?i)channel|dimension|shape|invalid"):
        session.run(["pred_score"], {"input": np.zeros((1, 1, 256, 256), np.float32)})


@pytest.mark.slow
def test_fresh_test_set_matches_the_card(fresh: dict[str, evaluate.Row]) -> None:
    card = card_figures()
    assert set(fresh) <= set(card)
    failures = []
    for group, got in fresh.items():
        want = card[group]
        checks = [
            ("auroc", got.auroc, want.auroc,
             3 * auroc_se(want.auroc, got.n_good, got.n_defective) + 0.01),
            ("frr", got.frr, want.frr, rate_tolerance(want.frr, got.n_good)),
            ("escape", got.escape, want.escape, rate_tolerance(want.escape, got.n_defective)),
        ]  # fmt: skip
        for name, value, expected, tol in checks:
            if abs(value - expected) > tol:
                failures.append(f"{group} {name}: {value:.3f} vs card {expected:.3f} ±{tol:.3f}")
    assert not failures, failures


def test_evaluation_tells_a_useless_model_from_a_good_one() -> None:
    """The figures can fail: constant scores give AUROC 0.5 and reject or pass everything."""
    items = evaluate.test_set(9, 5, 2)
    rows = {r.group: r for r in evaluate.rows(items, np.full(len(items), 0.7, np.float32))}
    assert rows["all"].auroc == 0.5 and rows["all"].frr == 1.0 and rows["all"].escape == 0.0
    with pytest.raises(ValueError):
        evaluate.auroc([], [1.0])
    assert evaluate.auroc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert evaluate.auroc([0.3, 0.4], [0.1, 0.2]) == 0.0

"""`vision.fit`: an anomaly model from good images and a user's backbone, without PyTorch.

The backbone is a real (small) ONNX network built here: two 3x3 convolutions with fixed random
weights. Random convolution features are weak, but they see local contrast, which is enough
for the fitted head to rank generated defects above good parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vision import synthetic
from vision.fit import (
    FitError,
    FitResult,
    coreset,
    gaussian,
    needed_images,
    threshold_for_rate,
    threshold_of,
)
from vision.fit import fit as fit_model
from vision.model import Model

from .onnx_graphs import classifier_model

SIZE = 128
SURFACE = "metal"


def backbone(path: Path, *, input_name: str = "pixels", flat: bool = False) -> Path:
    """conv 3→16 stride 2, ReLU, conv 16→24 stride 2, ReLU: a [1, 24, 32, 32] map at 128 px.

    With `flat`, the map is pooled to [1, 24] (not a feature map: the fit must refuse it).
    """
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) / 3
    w2 = rng.standard_normal((24, 16, 3, 3)).astype(np.float32) / 12
    nodes = [
        helper.make_node("Conv", [input_name, "w1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["features"] if not flat else ["r2"]),
    ]
    out_shape: list[int | str] = [1, 24, "h", "w"]
    if flat:
        nodes += [
            helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"]),
        ]
        out_shape = [1, 24]
    graph = helper.make_graph(
        nodes,
        "backbone",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def fit(good: Path, net: Path, out: Path, **options: Any) -> FitResult:
    return fit_model(good, net, out, size=SIZE, **options)


def write_good(folder: Path, count: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        sample = synthetic.render(SURFACE, None, seed + i, (SIZE, SIZE))
        cv2.imwrite(str(folder / f"good{i:03d}.png"), sample.image)
    return folder


def auroc(good: list[float], bad: list[float]) -> float:
    """P(a defective score > a good score), ties counted half (the Mann-Whitney statistic)."""
    g, b = np.asarray(good)[:, None], np.asarray(bad)[None, :]
    return float(np.mean((b > g) + 0.5 * (b == g)))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fit")
    good = write_good(root / "good", 30, seed=100)
    net = backbone(root / "backbone.onnx")
    return {"good": good, "backbone": net, "root": root}


def fresh_scores(model: Model, seed: int) -> tuple[list[float], list[float]]:
    good, bad = [], []
    defects = synthetic.DEFECTS_BY_SURFACE[SURFACE]
    for i in range(24):
        ok = synthetic.render(SURFACE, None, seed + i, (SIZE, SIZE))
        good.append(model.infer(ok.image).score)
        defect = defects[i % len(defects)]
        nok = synthetic.render(SURFACE, defect, seed + i, (SIZE, SIZE))
        bad.append(model.infer(nok.image).score)
    return good, bad


@pytest.mark.parametrize("method", ["gaussian", "coreset"])
@pytest.mark.slow
def test_fitted_model_ranks_defects_above_good_parts(fitted: dict[str, Path], method: str) -> None:
    out = fitted["root"] / f"{method}.onnx"
    result = fit(fitted["good"], fitted["backbone"], out, method=method)
    assert result.images == 30 and result.skipped == []
    # Out-of-fold calibration: every image fitted on and every image scored for the threshold.
    assert result.fitted_on == 30 and result.calibrated_on == 30 and result.folds == 5
    assert result.feature_shape == (24, 32, 32)
    assert result.threshold == max(result.calibration_scores)

    model = Model.load(out)
    assert model.kind == "anomaly" and model.input_size == (SIZE, SIZE)
    assert model.layout.score_output == "pred_score" and model.layout.map_output == "anomaly_map"
    outputs = model.run(model.prepare(synthetic.render(SURFACE, None, 5, (SIZE, SIZE)).image).blob)
    assert outputs["pred_score"].shape == (1,)
    assert outputs["anomaly_map"].shape == (1, 1, SIZE, SIZE)
    assert 0.0 <= float(outputs["anomaly_map"].min()) <= float(outputs["anomaly_map"].max()) <= 1

    good, bad = fresh_scores(model, seed=9000)  # a seed the fit never saw
    assert auroc(good, bad) >= 0.8, (good, bad)
    # The threshold came from good parts: most fresh good parts pass.
    assert np.mean(np.asarray(good) <= 0.5) >= 0.75


def test_scores_in_graph_match_the_threshold(fitted: dict[str, Path]) -> None:
    """A calibration image at the threshold scores 0.5 through the whole model.

    Without folds the head that scores the calibration images is the one written, so the
    image with the top raw score must come out at exactly 0.5.
    """
    out = fitted["root"] / "check.onnx"
    result = fit(fitted["good"], fitted["backbone"], out, percentile=100, folds=0)
    assert result.folds == 0
    model = Model.load(out)
    held = sorted(fitted["good"].iterdir())
    scores = [model.infer(np.asarray(cv2.imread(str(p)), np.uint8)).score for p in held]
    assert max(scores) == pytest.approx(0.5, abs=1e-3)
    assert result.calibration_scores.index(result.threshold) == int(np.argmax(scores))
    meta = model.session.get_modelmeta().custom_metadata_map
    assert meta["fit_method"] == "gaussian" and float(meta["fit_raw_threshold"]) == pytest.approx(
        result.threshold
    )


def test_unreadable_images_are_skipped_and_counted(fitted: dict[str, Path], tmp_path: Path) -> None:
    folder = write_good(tmp_path / "good", 6, seed=300)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")  # not an image file: not even looked at
    result = fit(folder, fitted["backbone"], tmp_path / "m.onnx")
    assert result.images == 6
    assert len(result.skipped) == 2
    assert any("broken.jpg" in s and "truncated" in s for s in result.skipped)
    Model.load(tmp_path / "m.onnx")


def test_empty_folder_is_refused(fitted: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FitError, match="no image files"):
        fit(tmp_path / "empty", fitted["backbone"], tmp_path / "m.onnx")
    with pytest.raises(FitError, match="not a folder"):
        fit(tmp_path / "missing", fitted["backbone"], tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_only_unreadable_images_is_refused(fitted: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"junk")
    with pytest.raises(FitError, match="none of the 1 image files"):
        fit(tmp_path / "bad", fitted["backbone"], tmp_path / "m.onnx")


def test_backbone_without_a_feature_map_is_refused(fitted: dict[str, Path], tmp_path: Path) -> None:
    flat = backbone(tmp_path / "flat.onnx", flat=True)
    with pytest.raises(
        FitError, match=r"not a feature map \[1, C, h, w\], and the graph cannot be cut"
    ):
        fit(fitted["good"], flat, tmp_path / "m.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(FitError, match="not a usable ONNX model"):
        fit(fitted["good"], tmp_path / "junk.onnx", tmp_path / "m.onnx")
    with pytest.raises(FitError, match="backbone not found"):
        fit(fitted["good"], tmp_path / "none.onnx", tmp_path / "m.onnx")


def test_bad_method_and_percentile(fitted: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FitError, match="unknown method"):
        fit(fitted["good"], fitted["backbone"], tmp_path / "m.onnx", method="knn")
    with pytest.raises(FitError, match="percentile"):
        fit(fitted["good"], fitted["backbone"], tmp_path / "m.onnx", percentile=0)


# --- the pure numpy parts --------------------------------------------------------------------


def test_gaussian_whitening_gives_mahalanobis_distance() -> None:
    rng = np.random.default_rng(0)
    cov = np.array([[4.0, 1.0], [1.0, 2.0]])
    x = rng.multivariate_normal([1.0, -2.0], cov, size=20000).astype(np.float32)
    mean, whiten = gaussian(x, shrinkage=0.0)
    assert mean == pytest.approx([1.0, -2.0], abs=0.05)
    point = np.array([3.0, 0.0])
    expected = float((point - [1, -2]) @ np.linalg.inv(cov) @ (point - [1, -2]))
    assert float(np.sum((whiten @ (point - mean)) ** 2)) == pytest.approx(expected, rel=0.05)


def test_gaussian_shrinkage_makes_singular_covariance_invertible() -> None:
    x = np.zeros((10, 3), np.float32)
    x[:, 0] = np.arange(10)  # two dimensions never vary
    _mean, whiten = gaussian(x, shrinkage=0.01)
    assert np.all(np.isfinite(whiten))
    with pytest.raises(FitError):
        gaussian(x[:1])


def test_coreset_covers_the_clusters() -> None:
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (50, 2)).astype(np.float32) for c in centres])
    bank = coreset(x, 4)
    nearest = np.min(np.linalg.norm(centres[:, None] - bank[None], axis=2), axis=1)
    assert np.all(nearest < 1.0)  # k-center picks one point per far-apart cluster
    assert coreset(x, 1000).shape == (200, 2)  # never more than the patches


def test_threshold_percentile() -> None:
    scores = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert threshold_of(scores, 100) == 5.0
    assert threshold_of(scores, 50) == 3.0
    with pytest.raises(FitError):
        threshold_of([], 100)
    with pytest.raises(ValueError):
        threshold_of(scores, 150)


# --- the command line ------------------------------------------------------------------------


def test_cli_fit_writes_a_model_and_refuses_bad_input(
    fitted: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    runner = CliRunner()
    out = tmp_path / "cli.onnx"
    args = ["vision", "fit", "--good", str(fitted["good"]), "--backbone", str(fitted["backbone"])]
    done = runner.invoke(app, [*args, "--out", str(out), "--size", str(SIZE)])
    assert done.exit_code == 0, done.output
    assert "30 good images (0 skipped), threshold from 5-fold out-of-fold scores" in done.output
    assert "output 'features' as given" in done.output
    assert Model.load(out).kind == "anomaly"

    rate = runner.invoke(app, [*args, "--out", str(out), "--max-false-reject", "1%"])
    assert rate.exit_code == 2
    assert "1.00% needs at least 300 good images" in rate.output, rate.output
    assert "Traceback" not in rate.output
    rate = runner.invoke(
        app, [*args, "--out", str(out), "--size", str(SIZE), "--max-false-reject", "10%"]
    )
    assert rate.exit_code == 0, rate.output
    assert "false rejects on held-out good images: 10.0% (3 of 30)" in rate.output
    junk = runner.invoke(app, [*args, "--out", str(out), "--max-false-reject", "lots"])
    assert junk.exit_code == 2 and "--max-false-reject" in junk.output

    refused = runner.invoke(app, [*args, "--out", str(out), "--method", "knn"])
    assert refused.exit_code == 2 and "unknown method" in refused.output
    (tmp_path / "empty").mkdir()
    empty = ["vision", "fit", "--good", str(tmp_path / "empty"), "--backbone"]
    refused = runner.invoke(app, [*empty, str(fitted["backbone"]), "--out", str(out)])
    assert refused.exit_code == 2 and "no image files" in refused.output


# --- thresholds with a false-reject rate, escapes, a classifier as backbone -----------------


def test_threshold_for_a_false_reject_rate() -> None:
    scores = [float(i) for i in range(1, 101)]
    # 5 % of 100: five images above the threshold, the sixth highest sits on it and passes.
    assert threshold_for_rate(scores, 0.05) == 95.0
    assert sum(s > threshold_for_rate(scores, 0.05) for s in scores) == 5
    assert threshold_for_rate(scores, 0.001) == 100.0  # under one image: reject none
    assert needed_images(0.01) == 300 and needed_images(0.05) == 60 and needed_images(0.1) == 30


def test_max_false_reject_refuses_too_few_images(fitted: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    with pytest.raises(FitError, match=r"5\.00% needs at least 60 good images.*there are 30"):
        fit(fitted["good"], fitted["backbone"], out, max_false_reject=0.05)
    assert not out.exists()
    result = fit(fitted["good"], fitted["backbone"], out, max_false_reject=0.1)
    # 10 % of 30 out-of-fold scores: three above the threshold, the fourth highest on it.
    assert result.threshold == sorted(result.calibration_scores)[-4]
    assert result.false_reject == pytest.approx(0.1)
    meta = Model.load(out).session.get_modelmeta().custom_metadata_map
    assert meta["fit_max_false_reject"] == "0.1" and meta["fit_folds"] == "5"


def test_escape_rate_from_defective_images(fitted: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    for defect in ("scratch", "hole"):
        (bad / defect).mkdir(parents=True)
        for i in range(4):
            sample = synthetic.render(SURFACE, defect, 700 + i, (SIZE, SIZE))
            cv2.imwrite(str(bad / defect / f"{i}.png"), sample.image)
    result = fit(fitted["good"], fitted["backbone"], tmp_path / "m.onnx", bad=bad)
    assert result.bad_images == 8
    assert result.escape is not None and 0.0 <= result.escape <= 0.5
    model = Model.load(tmp_path / "m.onnx")
    accepted = [
        model.infer(np.asarray(cv2.imread(str(p)), np.uint8)).verdict == "OK"
        for p in sorted(bad.rglob("*.png"))
    ]
    assert result.escape == pytest.approx(sum(accepted) / 8)


def test_an_imagenet_classifier_is_cut_at_its_feature_layers(
    fitted: dict[str, Path], tmp_path: Path
) -> None:
    """A classifier (output [1, 10]) is cut at its last residual sums at stride 8 and 16."""
    net = classifier_model(tmp_path / "classifier.onnx", size=SIZE)
    proto = onnx.load(str(net))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "weights_source", "built in tests/vision/onnx_graphs.py"
    onnx.save(proto, str(net))
    out = tmp_path / "from-classifier.onnx"
    result = fit(fitted["good"], net, out)
    assert "'sum8' (Add, stride 8, 24 ch) + 'sum16' (Add, stride 16, 32 ch)" in result.backbone_cut
    assert "ImageNet mean/std added" in result.backbone_cut
    assert result.feature_shape == (24 + 32, SIZE // 8, SIZE // 8)
    model = Model.load(out)
    meta = model.session.get_modelmeta().custom_metadata_map
    assert "sum16" in meta["fit_backbone_cut"]
    assert meta["weights_source"] == "built in tests/vision/onnx_graphs.py"  # provenance kept
    good, bad = fresh_scores(model, seed=9100)
    # Random weights, not ImageNet ones: the point is the cut, the ranking only has to work.
    assert auroc(good, bad) >= 0.7, (good, bad)
    assert np.mean(np.asarray(good) <= 0.5) >= 0.75


def test_a_model_with_no_feature_map_at_stride_8_or_16_is_refused(
    fitted: dict[str, Path], tmp_path: Path
) -> None:
    from .onnx_graphs import constant_model

    table = np.array([[0.2, 0.8]], np.float32)
    net = constant_model(tmp_path / "flat.onnx", table, size=(SIZE, SIZE))
    with pytest.raises(FitError, match="cannot be cut: no feature map at stride 8 or 16"):
        fit(fitted["good"], net, tmp_path / "m.onnx")


def test_a_classifier_whose_input_is_called_input(tmp_path: Path) -> None:
    """The fit names the image `input`; the normalisation in front of a cut classifier must
    not produce a second tensor of that name (the checker refused such a model)."""
    good = write_good(tmp_path / "good", 6, seed=400)
    net = classifier_model(tmp_path / "classifier.onnx", size=SIZE, input_name="input")
    fit(good, net, tmp_path / "m.onnx")
    assert Model.load(tmp_path / "m.onnx").kind == "anomaly"

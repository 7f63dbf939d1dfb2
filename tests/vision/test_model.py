"""Loading real ONNX models of every layout; layout detection; clear errors for bad models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.vision import onnx_graphs as graphs
from vision.model import Model, ModelError, session_options


def test_session_defaults_leave_a_core_free() -> None:
    options = session_options(1)
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_classify_probabilities(tmp_path: Path) -> None:
    path = graphs.classify_model(tmp_path / "c.onnx", [0.1, 0.7, 0.2], ["good", "scratch", "pit"])
    model = Model.load(path)
    assert (model.kind, model.input_size, model.layout.names) == (
        "classify",
        (32, 32),
        ("good", "scratch", "pit"),
    )
    v = model.infer(np.zeros((48, 64, 3), np.uint8))
    assert (v.verdict, v.label) == ("NotOK", "scratch")
    assert v.score == pytest.approx(0.9)


def test_classify_logits_without_metadata(tmp_path: Path) -> None:
    path = graphs.classify_model(tmp_path / "c.onnx", [3.0, 0.0])
    model = Model.load(path)
    v = model.infer(np.zeros((32, 32, 3), np.uint8))
    assert (v.verdict, v.label) == ("OK", "0")  # class 0 is the good one without names
    assert v.score == pytest.approx(1 / (1 + np.exp(3.0)))


def test_detect_with_ultralytics_metadata_and_letterbox(tmp_path: Path) -> None:
    path = graphs.detect_model(
        tmp_path / "d.onnx",
        [[32, 32, 16, 8, 0.1, 0.8], [10, 50, 4, 4, 0.0, 0.1]],
        ["scratch", "dent"],
        imgsz=64,
    )
    model = Model.load(path)
    assert (model.kind, model.layout.resize, model.input_size) == ("detect", "letterbox", (64, 64))
    # a 128x64 frame is letterboxed at scale 0.5 with 16 px bars above and below
    v = model.infer(np.zeros((64, 128, 3), np.uint8))
    assert v.verdict == "NotOK" and v.classes == ("dent",)
    (box,) = v.boxes
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((48.0, 24.0, 80.0, 40.0))
    assert box.score == pytest.approx(0.8)


def test_anomalib_2_layout(tmp_path: Path) -> None:
    model = Model.load(graphs.anomaly_model(tmp_path / "a.onnx", size=(64, 64)))
    assert (model.kind, model.layout.normalization) == ("anomaly", None)
    frame = np.zeros((128, 128, 3), np.uint8)
    assert model.infer(frame).verdict == "OK"
    frame[60:68, 60:68] = 255  # a white patch in the middle: map 1.0 there
    v = model.infer(frame)
    assert v.verdict == "NotOK" and v.score == pytest.approx(1.0)
    (box,) = v.boxes
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((60.0, 60.0, 68.0, 68.0))
    edge = np.zeros((128, 128, 3), np.uint8)
    edge[:8, :8] = 255  # only in the 16 px border band (8 px of the 64 px input)
    assert model.infer(edge).verdict == "OK"
    assert model.infer(edge, margin=0).verdict == "NotOK"


def test_anomalib_1_layout_with_metadata_sidecar(tmp_path: Path) -> None:
    path = graphs.anomaly_model(
        tmp_path / "a.onnx",
        gain=100.0,
        metadata={"image_threshold": 40.0, "pixel_threshold": 40.0, "min": 0.0, "max": 100.0},
    )
    model = Model.load(path)
    assert model.layout.normalization is not None
    frame = np.full((64, 64, 3), 102, np.uint8)  # 0.4 x 100 = 40 raw → 0.5: not above
    assert model.infer(frame).verdict == "OK"
    frame[30:34, 30:34] = 255  # raw 100 → (100 - 40) / 100 + 0.5 = 1.0 (clipped)
    v = model.infer(frame)
    assert v.verdict == "NotOK"
    assert v.score == pytest.approx(1.0)


def test_forced_adapter_must_match_the_outputs(tmp_path: Path) -> None:
    path = graphs.anomaly_model(tmp_path / "a.onnx")
    assert Model.load(path, adapter="anomaly").kind == "anomaly"
    with pytest.raises(ModelError, match="outputs are a anomaly layout, not detect"):
        Model.load(path, adapter="detect")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model file not found: .*nothing\.onnx"):
        Model.load(tmp_path / "nothing.onnx")


def test_corrupt_model_file(tmp_path: Path) -> None:
    good = graphs.anomaly_model(tmp_path / "a.onnx").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError, match=r"bad\.onnx: not a usable ONNX model"):
        Model.load(bad)
    text = tmp_path / "text.onnx"
    text.write_text("this is not a model", encoding="utf-8")
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        Model.load(text)


def test_wrong_input_shape(tmp_path: Path) -> None:
    path = graphs.grey_input_model(tmp_path / "grey.onnx")
    with pytest.raises(ModelError, match=r"input 'x' has shape \[1, 1, 28, 28\]; expected \[N, 3"):
        Model.load(path)


def test_broken_metadata_sidecar(tmp_path: Path) -> None:
    path = graphs.anomaly_model(tmp_path / "a.onnx", metadata={"image_threshold": 1.0})
    with pytest.raises(ModelError, match=r"metadata\.json: unusable anomalib metadata"):
        Model.load(path)


def test_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads must be at least 1"):
        Model.load(graphs.anomaly_model(tmp_path / "a.onnx"), threads=0)

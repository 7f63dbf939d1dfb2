"""Small real ONNX models, built with onnx.helper, that emit each layout the adapters read.

They run in onnxruntime like any exported model; their outputs are simple enough to know
exactly: a constant table (detect, classify), or the image's own pixels (anomaly: the map is
the mean over the colour channels, so a white patch on black is "the defect").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 18)]


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _image_input(name: str, size: tuple[int, int], channels: int = 3) -> onnx.ValueInfoProto:
    width, height = size
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, channels, height, width])


def constant_model(
    path: Path,
    table: np.ndarray,
    *,
    input_name: str = "images",
    size: tuple[int, int] = (64, 64),
    output_name: str = "output0",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Output = `table` (+ 0 x the image mean, so the output depends on the input)."""
    table = np.asarray(table, np.float32)
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table", "nothing"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant",
        [_image_input(input_name, size)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(table.shape))],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    return _save(graph, path, metadata)


def classify_model(path: Path, values: Sequence[float], names: Sequence[str] | None = None) -> Path:
    meta = None
    if names is not None:
        meta = {"task": "classify", "names": repr(dict(enumerate(names)))}
    return constant_model(
        path, np.array([values]), input_name="images", size=(32, 32), metadata=meta
    )


def detect_model(
    path: Path,
    rows: Sequence[Sequence[float]],
    names: Sequence[str],
    *,
    imgsz: int = 64,
    dynamic: bool = False,
) -> Path:
    """Ultralytics detect layout: `rows` are anchors (cx, cy, w, h, score per class)."""
    table = np.array(rows, np.float32).T[None]  # [1, 4 + nc, N]
    meta = {"task": "detect", "names": repr(dict(enumerate(names))), "imgsz": repr([imgsz, imgsz])}
    return constant_model(path, table, size=(imgsz, imgsz), metadata=meta)


def anomaly_model(
    path: Path,
    *,
    size: tuple[int, int] = (64, 64),
    gain: float = 1.0,
    metadata: dict[str, float] | None = None,
) -> Path:
    """anomalib layout: `anomaly_map` = gain x channel mean, `pred_score` = its maximum.

    With `metadata`, a metadata.json sidecar is written next to the model (anomalib ≤ 1).
    """
    width, height = size
    nodes = [
        helper.make_node("ReduceMean", ["input", "channel_axis"], ["mean"], keepdims=1),
        helper.make_node("Mul", ["mean", "gain"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["peak"], keepdims=0),
        helper.make_node("Reshape", ["peak", "one"], ["pred_score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "anomaly",
        [_image_input("input", size)],
        [
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, height, width]),
        ],
        initializer=[
            numpy_helper.from_array(np.array([1], np.int64), "channel_axis"),
            numpy_helper.from_array(np.array(gain, np.float32), "gain"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
        ],
    )
    _save(graph, path)
    if metadata is not None:
        (path.parent / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return path


def heavy_model(path: Path, *, size: tuple[int, int] = (64, 64), layers: int = 40) -> Path:
    """A deliberately slow anomaly model: `layers` 384x384 matmuls before a trivial score."""
    nodes = [
        helper.make_node("ReduceMean", ["input", "channel_axis"], ["mean"], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("ReduceMax", ["nothing"], ["base"], keepdims=0),
    ]
    # The chain starts from the input (+ 0), so onnxruntime cannot fold it into a constant.
    nodes.append(helper.make_node("Add", ["seed", "base"], ["start"]))
    current = "start"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [current, "weight"], [f"m{i}"]))
        current = f"m{i}"
    nodes += [
        helper.make_node("ReduceMax", [current], ["big"], keepdims=0),
        helper.make_node("Mul", ["big", "zero"], ["small"]),
        helper.make_node("Add", ["small", "base"], ["score"]),
        helper.make_node("Reshape", ["score", "one"], ["pred_score"]),
    ]
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        nodes,
        "heavy",
        [_image_input("input", size)],
        [helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1])],
        initializer=[
            numpy_helper.from_array(np.array([1], np.int64), "channel_axis"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(rng.random((384, 384), np.float32) / 384, "seed"),
            # Row sums near 1: the values keep their size through any number of layers (at
            # 1/384 they halved per layer and went subnormal past ~120, 50x slower per layer).
            numpy_helper.from_array(rng.random((384, 384), np.float32) * (2 / 384), "weight"),
        ],
    )
    return _save(graph, path)


def grey_input_model(path: Path) -> Path:
    """A model that wants one channel: the wrong input shape for colour frames."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)]
    graph = helper.make_graph(
        nodes,
        "grey",
        [_image_input("x", (28, 28), channels=1)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
    )
    return _save(graph, path)

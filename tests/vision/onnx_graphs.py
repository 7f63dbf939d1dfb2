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


def classifier_model(
    path: Path, *, size: int = 128, classes: int = 10, seed: int = 5, input_name: str = "data"
) -> Path:
    """A small ResNet-shaped ImageNet-style classifier: `data` [1, 3, size, size] → `prob`.

    Stem to stride 4, then a stage per stride 4, 8, 16 and 32: a strided 3x3 convolution and
    one residual block (conv, ReLU, conv, Add with the block's input, ReLU); global average
    pooling, a Gemm to `classes` logits and a Softmax. Random (He) weights: real convolutions
    whose features see local contrast, like a trained network's early layers do.
    """
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(x: str, cin: int, cout: int, name: str, stride: int = 1) -> str:
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * np.float32(
            np.sqrt(2 / (9 * cin))
        )
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b"))
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [name],
                strides=[stride, stride],
                pads=[1, 1, 1, 1],
            )
        )
        return name

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [f"{x}_relu"]))
        return f"{x}_relu"

    x = relu(conv(input_name, 3, 8, "stem1", 2))
    x = relu(conv(x, 8, 16, "stem2", 2))
    channels = 16
    for stride, cout in ((4, 16), (8, 24), (16, 32), (32, 48)):
        if stride > 4:
            x = relu(conv(x, channels, cout, f"down{stride}", 2))
        inner = conv(relu(conv(x, cout, cout, f"block{stride}a")), cout, cout, f"block{stride}b")
        nodes.append(helper.make_node("Add", [inner, x], [f"sum{stride}"]))
        x, channels = relu(f"sum{stride}"), cout
    fc = rng.standard_normal((classes, channels)).astype(np.float32) / np.float32(np.sqrt(channels))
    inits += [
        numpy_helper.from_array(fc, "fc_w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [_image_input(input_name, (size, size))],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, classes])],
        initializer=inits,
    )
    return _save(graph, path)


def segment_model(
    path: Path,
    output0: np.ndarray,
    protos: np.ndarray,
    *,
    size: tuple[int, int] = (64, 64),
    names: Sequence[str] = ("scratch",),
) -> Path:
    """Ultralytics segmentation layout: `output0` [1, 4 + nc + nm, N] and `output1` protos
    [1, nm, h, w], both the given tables (+ 0 x the image mean)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["table0", "nothing"], ["output0"]),
        helper.make_node("Add", ["table1", "nothing"], ["output1"]),
    ]
    graph = helper.make_graph(
        nodes,
        "segment",
        [_image_input("images", size)],
        [
            helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output0.shape)),
            helper.make_tensor_value_info("output1", TensorProto.FLOAT, list(protos.shape)),
        ],
        initializer=[
            numpy_helper.from_array(np.asarray(output0, np.float32), "table0"),
            numpy_helper.from_array(np.asarray(protos, np.float32), "table1"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )
    meta = {"task": "segment", "names": repr(dict(enumerate(names))), "imgsz": repr([*size])}
    return _save(graph, path, meta)


def bright_spot_model(path: Path, *, size: int = 64, half: int = 8) -> Path:
    """An end-to-end detector that really looks: one box [1, 1, 6] around the brightest pixel.

    score = that pixel's brightness (channel mean, [0, 1]), class 0, box ±`half` px around it:
    a black tile gives score 0 (no box), a tile holding a white spot finds it where it is.
    """
    nodes = [
        helper.make_node("ReduceMean", ["images", "channel_axis"], ["grey"], keepdims=1),
        helper.make_node("Reshape", ["grey", "flat_shape"], ["flat"]),
        helper.make_node("ArgMax", ["flat"], ["index"], axis=1, keepdims=1),
        helper.make_node("ReduceMax", ["flat", "one_axis"], ["score"], keepdims=1),
        helper.make_node("Mod", ["index", "width"], ["col"]),
        helper.make_node("Div", ["index", "width"], ["row"]),
        helper.make_node("Cast", ["col"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["row"], ["y"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["x", "half"], ["x1"]),
        helper.make_node("Sub", ["y", "half"], ["y1"]),
        helper.make_node("Add", ["x", "half"], ["x2"]),
        helper.make_node("Add", ["y", "half"], ["y2"]),
        helper.make_node("Concat", ["x1", "y1", "x2", "y2", "score", "cls"], ["row6"], axis=1),
        helper.make_node("Reshape", ["row6", "out_shape"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bright_spot",
        [_image_input("images", (size, size))],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 1, 6])],
        initializer=[
            numpy_helper.from_array(np.array([1], np.int64), "channel_axis"),
            numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
            numpy_helper.from_array(np.array([1, size * size], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array(size, np.int64), "width"),
            numpy_helper.from_array(np.array(float(half), np.float32), "half"),
            numpy_helper.from_array(np.zeros((1, 1), np.float32), "cls"),
            numpy_helper.from_array(np.array([1, 1, 6], np.int64), "out_shape"),
        ],
    )
    meta = {"task": "detect", "names": repr({0: "spot"}), "imgsz": repr([size, size])}
    return _save(graph, path, meta)

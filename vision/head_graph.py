"""The ONNX head of `lineside vision fit`, appended to the backbone as plain ops (`onnx.helper`).

The head turns the backbone's feature map into raw patch scores (a 1x1 Conv with the inverse
Cholesky factor for `gaussian`, `|L^-1 (x - mean)|`; a 1x1 Conv, `-2 x.m + |m|^2`, and
ReduceMin for `coreset`), upsamples the map to the input size and smooths it (a separable
Gaussian, as anomalib does). `build_model` writes ONE self-contained model in the anomalib 2
layout: input `input` NCHW RGB [0, 1], outputs `pred_score` [1] and `anomaly_map`
[1, 1, H, W], both normalised inside the graph the way anomalib does it,
`clip((x - threshold) / (max - min) + 0.5, 0, 1)`, so 0.5 is the boundary. `head_model` is the
same head alone, to score cached features with exactly the ops the final model runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from vision.heads import Features, FitError, Method

MIN_OPSET = 13  # Resize with `sizes`, ReduceSum with axes as an input
HEAD_OPSET = 18  # the opset the head's Reduce* nodes are written for when the backbone allows


def gaussian_kernel(sigma: float) -> Features:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    out: Features = (kernel / kernel.sum()).astype(np.float32)
    return out


class _Graph:
    """Nodes and initializers of the head, written for the backbone's opset."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"fit_{stem}_{self._count}"

    def const(self, stem: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def reduce(self, op_type: str, x: str, axes: list[int], stem: str) -> str:
        # Reduce* take axes as an input from opset 18 (ReduceSum from 13), an attribute before.
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if as_input:
            return self.op(op_type, [x, self.const("axes", axes, np.int64)], stem, keepdims=1)
        return self.op(op_type, [x], stem, axes=axes, keepdims=1)


def _head(
    g: _Graph,
    features: str,
    method: Method,
    params: dict[str, Features],
) -> str:
    """Raw patch scores [1, 1, h, w] from the feature map."""
    if method == "gaussian":
        mean, whiten = params["mean"], params["whiten"]
        channels = mean.shape[0]
        weight = whiten.reshape(channels, channels, 1, 1)
        bias = -(whiten @ mean)
        z = g.op("Conv", [features, g.const("w", weight), g.const("b", bias)], "whitened")
        squared = g.op("Mul", [z, z], "squared")
        distance2 = g.reduce("ReduceSum", squared, [1], "mahalanobis2")
    else:
        bank = params["bank"]
        k, channels = bank.shape
        weight = (-2.0 * bank).reshape(k, channels, 1, 1)
        bias = np.sum(bank.astype(np.float64) ** 2, axis=1)
        cross = g.op("Conv", [features, g.const("w", weight), g.const("b", bias)], "cross")
        nearest = g.reduce("ReduceMin", cross, [1], "nearest")
        norm = g.reduce("ReduceSum", g.op("Mul", [features, features], "fsq"), [1], "fnorm")
        distance2 = g.op("Add", [nearest, norm], "distance2")
    # Rounding can make a tiny squared distance negative; Sqrt of that would be NaN.
    positive = g.op("Relu", [distance2], "positive")
    return g.op("Sqrt", [positive], "distance")


def _upsample(g: _Graph, raw: str, size: int, sigma: float) -> str:
    """Raw map → [1, 1, size, size], bilinear, then a separable Gaussian blur."""
    sizes = g.const("sizes", [1, 1, size, size], np.int64)
    up = g.op("Resize", [raw, "", "", sizes], "upsampled", mode="linear")
    if sigma <= 0:
        return up
    kernel = gaussian_kernel(sigma)
    r = kernel.size // 2
    across = g.op(
        "Conv", [up, g.const("kx", kernel.reshape(1, 1, 1, -1))], "blur_x", pads=[0, r, 0, r]
    )
    return g.op(
        "Conv", [across, g.const("ky", kernel.reshape(1, 1, -1, 1))], "blur_y", pads=[r, 0, r, 0]
    )


def _inner_max(g: _Graph, heat: str, size: int, margin: int) -> str:
    """The map's maximum inside the border band, as [1, 1, 1, 1]."""
    band = min(margin, (size - 1) // 2)
    inner = heat
    if band > 0:
        starts = g.const("starts", [band, band], np.int64)
        ends = g.const("ends", [size - band, size - band], np.int64)
        inner = g.op("Slice", [heat, starts, ends, g.const("axes", [2, 3], np.int64)], "inner")
    return g.reduce("ReduceMax", inner, [2, 3], "peak")


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def build_model(
    backbone: onnx.ModelProto,
    feature_output: str,
    method: Method,
    params: dict[str, Features],
    *,
    size: int,
    margin: int,
    sigma: float,
    threshold: float,
    minimum: float,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """The backbone plus the head: one model in the anomalib 2 layout, normalised in-graph."""
    opset = _opset(backbone)
    if opset < MIN_OPSET:
        raise FitError(f"the backbone uses opset {opset}; the head needs at least {MIN_OPSET}")
    g = _Graph(opset)
    weights = {t.name for t in backbone.graph.initializer}
    (image,) = [i for i in backbone.graph.input if i.name not in weights]
    nodes = list(backbone.graph.node)
    if image.name != "input":
        # anomalib 2 names the image `input`; the backbone's own input is fed from it.
        nodes.insert(0, helper.make_node("Identity", ["input"], [image.name], name="fit_input"))
    heat, peak = _scores(g, feature_output, method, params, size, margin, sigma)
    span = max(threshold - minimum, 1e-6)
    lo, hi = g.const("lo", 0.0), g.const("hi", 1.0)

    def scaled(x: str, stem: str) -> str:
        shifted = g.op("Sub", [x, g.const("threshold", threshold)], f"{stem}_shift")
        ratio = g.op("Div", [shifted, g.const("span", span)], f"{stem}_ratio")
        centred = g.op("Add", [ratio, g.const("half", 0.5)], f"{stem}_centred")
        return g.op("Clip", [centred, lo, hi], stem)

    score = g.op("Reshape", [scaled(peak, "score"), g.const("flat", [1], np.int64)], "flat")
    g.nodes.append(helper.make_node("Identity", [score], ["pred_score"], name="fit_pred_score"))
    g.nodes.append(
        helper.make_node("Identity", [scaled(heat, "map")], ["anomaly_map"], name="fit_map")
    )
    graph = helper.make_graph(
        nodes + g.nodes,
        "lineside_fit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, 1, size, size]),
        ],
        initializer=list(backbone.graph.initializer) + g.initializers,
    )
    model = helper.make_model(graph, opset_imports=list(backbone.opset_import))
    model.ir_version = backbone.ir_version
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def head_model(
    feature_shape: tuple[int, int, int],
    method: Method,
    params: dict[str, Features],
    *,
    size: int,
    margin: int,
    sigma: float,
) -> onnx.ModelProto:
    """The same head alone (input `features`, outputs the raw map and raw image score), to
    score cached calibration features with exactly the ops the final model runs."""
    g = _Graph(HEAD_OPSET)
    heat, peak = _scores(g, "features", method, params, size, margin, sigma)
    graph = helper.make_graph(
        g.nodes,
        "lineside_fit_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, *feature_shape])],
        [
            helper.make_tensor_value_info(heat, TensorProto.FLOAT, [1, 1, size, size]),
            helper.make_tensor_value_info(peak, TensorProto.FLOAT, [1, 1, 1, 1]),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", HEAD_OPSET)])
    model.ir_version = 8
    return model


def _scores(
    g: _Graph,
    features: str,
    method: Method,
    params: dict[str, Features],
    size: int,
    margin: int,
    sigma: float,
) -> tuple[str, str]:
    """Raw anomaly map [1, 1, size, size] and raw image score [1, 1, 1, 1]."""
    heat = _upsample(g, _head(g, features, method, params), size, sigma)
    return heat, _inner_max(g, heat, size, margin)

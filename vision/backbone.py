"""Backbones for `lineside vision fit`: an ImageNet classifier in ONNX, cut at its feature layers.

A classifier's last output is class scores; an anomaly head needs a feature map `[1, C, h, w]`
in which each position describes one patch of the image. `cut` finds the layers and takes the
graph up to them (`onnx.utils.Extractor`), so any ImageNet classifier exported to ONNX
(ResNet, EfficientNet, MobileNet, ...) can be given to `vision fit --backbone` as it is.

Which layers: PatchCore's choice, the middle of the network. Mid-level features describe local
texture (what a scratch or a stain changes); the last stages describe whole objects, and the
first ones little more than edges. Concretely:

- the output of the last residual block (an `Add` node) at stride 8 and the one at stride 16
  (ResNet's `layer2` and `layer3`; EfficientNet-Lite0's stages 3 and 5); without residual
  blocks, the last feature map at each of those strides;
- the stride-16 map is resized (bilinear) to the stride-8 grid and the two are concatenated;
- more than `MAX_CHANNELS` channels are thinned to a fixed random subset (as PaDiM does), so
  the Gaussian head's covariance stays small enough to estimate from a few hundred images.

ImageNet classifiers expect mean/std-normalised input; the fit feeds RGB in [0, 1]. Unless the
graph already starts by normalising its input (a Sub/Div/Mul/Add or BatchNormalization on the
image), the ImageNet mean/std step is put in front of it (`normalize="auto"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from agent.errors import LinesideError

Normalize = Literal["auto", "imagenet", "none"]

STRIDES = (8, 16)
MAX_CHANNELS = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURES = "lineside_features"
RGB_INPUT = "lineside_rgb"
NORMALISING_OPS = frozenset({"Sub", "Div", "Mul", "Add", "BatchNormalization"})


class BackboneError(LinesideError):
    """No usable feature layer: the graph has no 4-D map at stride 8 or 16."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One candidate feature map of the classifier at the fit's input size."""

    name: str
    op: str
    stride: int
    channels: int


@dataclass(frozen=True, slots=True)
class Cut:
    model: onnx.ModelProto  # input: the image (RGB [0, 1]); output `FEATURES`
    output: str
    layers: tuple[Layer, ...]
    channels: int  # after thinning
    normalised: bool  # an ImageNet mean/std step was put in front

    def describe(self) -> str:
        parts = [f"{x.name!r} ({x.op}, stride {x.stride}, {x.channels} ch)" for x in self.layers]
        note = ", ImageNet mean/std added in front" if self.normalised else ""
        return f"cut at {' + '.join(parts)} → {self.channels} ch{note}"


def _image_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise BackboneError(f"expected one image input, the graph has {len(inputs)}")
    return inputs[0]


def feature_maps(model: onnx.ModelProto, size: int) -> list[Layer]:
    """Every 4-D float tensor the graph computes for a `size`² image, in graph order.

    Types come from ONNX shape inference; the spatial sizes from one real run (every float
    tensor exposed as an output), which is exact where inference leaves dimensions symbolic.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.output]
    }
    ops: dict[str, str] = {}
    for node in model.graph.node:
        for out in node.output:
            if out and types.get(out) == TensorProto.FLOAT:
                ops[out] = node.op_type
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ops
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    image = _image_input(model)
    values = session.run(list(ops), {image.name: np.zeros((1, 3, size, size), np.float32)})
    layers = []
    for (name, op), value in zip(ops.items(), values, strict=True):
        shape = np.shape(value)
        if len(shape) == 4 and shape[0] == 1 and shape[2] >= 2 and shape[2] == shape[3]:
            layers.append(Layer(name, op, round(size / shape[2]), int(shape[1])))
    return layers


def choose(layers: list[Layer]) -> tuple[Layer, ...]:
    """The last residual sum (else the last map) at stride 8 and at stride 16."""
    chosen = []
    for stride in STRIDES:
        at = [x for x in layers if x.stride == stride]
        sums = [x for x in at if x.op == "Add"]
        if sums or at:
            chosen.append((sums or at)[-1])
    return tuple(chosen)


def _starts_normalised(model: onnx.ModelProto, image: str) -> bool:
    return any(image in n.input and n.op_type in NORMALISING_OPS for n in model.graph.node)


def cut(model: onnx.ModelProto, size: int, *, normalize: Normalize = "auto", seed: int = 0) -> Cut:
    """The classifier up to its feature layers, as one model with output `FEATURES`."""
    image = _image_input(model)
    layers = choose(feature_maps(model, size))
    if not layers:
        raise BackboneError(
            f"no feature map at stride 8 or 16 for a {size}x{size} image; give a backbone "
            "whose output is a feature map [1, C, h, w]"
        )
    # The Extractor needs the types of the tensors it cuts at: give it the inferred graph.
    inferred = onnx.shape_inference.infer_shapes(model)
    part = onnx.utils.Extractor(inferred).extract_model([image.name], [x.name for x in layers])
    nodes = list(part.graph.node)
    inits = list(part.graph.initializer)

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    current = layers[0].name
    if len(layers) == 2:
        shallow, deep = layers
        shape = helper.make_node("Shape", [shallow.name], ["lineside_shallow_shape"])
        sizes = helper.make_node(
            "Slice",
            [
                "lineside_shallow_shape",
                const("lineside_from", np.array([2], np.int64)),
                const("lineside_to", np.array([4], np.int64)),
            ],
            ["lineside_hw"],
        )
        full = helper.make_node(
            "Concat",
            [const("lineside_nc", np.array([1, deep.channels], np.int64)), "lineside_hw"],
            ["lineside_sizes"],
            axis=0,
        )
        resize = helper.make_node(
            "Resize", [deep.name, "", "", "lineside_sizes"], ["lineside_deep_up"], mode="linear"
        )
        joined = helper.make_node(
            "Concat", [shallow.name, "lineside_deep_up"], ["lineside_joined"], axis=1
        )
        nodes += [shape, sizes, full, resize, joined]
        current = "lineside_joined"
    channels = sum(x.channels for x in layers)
    if channels > MAX_CHANNELS:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(channels, MAX_CHANNELS, replace=False)).astype(np.int64)
        nodes.append(
            helper.make_node(
                "Gather", [current, const("lineside_keep", keep)], ["lineside_thin"], axis=1
            )
        )
        current, channels = "lineside_thin", MAX_CHANNELS
    nodes.append(helper.make_node("Identity", [current], [FEATURES]))
    normalised = normalize == "imagenet" or (
        normalize == "auto" and not _starts_normalised(model, image.name)
    )
    graph_input = image
    if normalised:
        mean = const("lineside_mean", np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1))
        std = const("lineside_std", np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1))
        nodes = [
            helper.make_node("Sub", [RGB_INPUT, mean], ["lineside_centred"]),
            helper.make_node("Div", ["lineside_centred", std], [image.name]),
            *nodes,
        ]
        graph_input = helper.make_tensor_value_info(
            RGB_INPUT, TensorProto.FLOAT, [1, 3, size, size]
        )
    graph = helper.make_graph(
        nodes,
        "lineside_backbone",
        [graph_input],
        [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, [1, channels, None, None])],
        initializer=inits,
    )
    out = helper.make_model(graph, opset_imports=list(model.opset_import))
    out.ir_version = model.ir_version
    out.metadata_props.extend(model.metadata_props)  # provenance of the weights travels on
    return Cut(out, FEATURES, layers, channels, normalised)

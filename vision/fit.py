"""`lineside vision fit`: an anomaly model from good images only, without PyTorch.

A plant without labelled defects starts here. The backbone is an ONNX network taking RGB in
[0, 1]: one whose output is a feature map `[1, C, h, w]` (`lineside vision backbone` writes
one), or any ImageNet classifier, cut at its feature layers by `vision.backbone.cut`; lineside

1. runs it with onnxruntime on N good images and takes every position of the map as a patch
   feature (C values);
2. fits a head in numpy, from good patches only (`vision.heads`): `gaussian` (PaDiM with one
   shared Gaussian, the Mahalanobis distance) or `coreset` (PatchCore-lite, the distance to
   the nearest member of a memory bank);
3. appends that head to the backbone graph as plain ONNX ops (`vision.head_graph`) and writes
   ONE self-contained model in the anomalib 2 layout: input `input` NCHW RGB [0, 1], outputs
   `pred_score` [1] and `anomaly_map` [1, 1, H, W], both normalised inside the graph the way
   anomalib does it, `clip((x - threshold) / (max - min) + 0.5, 0, 1)`, so 0.5 is the boundary.

The threshold comes from good images only, each scored by a head fitted on the other folds
(`vision.calibration` says why); the model written is fitted on all of them. The threshold
either rejects at most `max_false_reject` of those out-of-fold scores (which needs at least
ceil(3 / rate) good images, see `needed_images`) or is their `percentile` (100, the maximum, by
default). The image score is the map's maximum inside a `margin` px border band, the
same band `vision.adapters.anomaly` ignores at inspection time (border artefacts caused most
false alarms in trials). `min` is the smallest map value seen out of fold,
`max` the threshold, so good parts land in [0, 0.5]. The raw figures are stored in the model's
`metadata_props` (`fit_*` keys) for the record; nothing reads them back to normalise.

The backbone is any ONNX model with one image input: used as it is when its first output is a
feature map, otherwise (an ImageNet classifier) cut at its mid-level layers by
`vision.backbone.cut`.

The heads, the graph and the threshold have modules of their own; the names they had here are
imported as themselves (`X as X`), so they stay importable from `vision.fit`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from vision.backbone import BackboneError
from vision.backbone import cut as backbone_cut
from vision.calibration import check_enough, folds_of
from vision.calibration import needed_images as needed_images
from vision.calibration import threshold_for_rate as threshold_for_rate
from vision.calibration import threshold_of as threshold_of
from vision.frames import IMAGE_SUFFIXES, FrameError, read_image
from vision.head_graph import HEAD_OPSET as HEAD_OPSET
from vision.head_graph import MIN_OPSET as MIN_OPSET
from vision.head_graph import build_model as build_model
from vision.head_graph import head_model as head_model
from vision.heads import Features as Features
from vision.heads import FitError as FitError
from vision.heads import Method as Method
from vision.heads import coreset as coreset
from vision.heads import fit_head
from vision.heads import gaussian as gaussian
from vision.model import session_options
from vision.preprocess import prepare

Progress = Callable[[int, int], None]  # (images done, images in all)

DEFAULT_SIZE = 256
FOLDS = 5  # out-of-fold calibration: each good image scored by a head fitted without it
BLUR_SIGMA = 4.0  # px at 256; anomalib smooths PaDiM/PatchCore maps with sigma 4


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
        check_enough(len(files), max_false_reject, good)
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
        check_enough(len(maps), max_false_reject, good)
    channels, h, w = maps[0].shape
    shape = (int(channels), int(h), int(w))
    sigma = BLUR_SIGMA * size / 256 if blur_sigma is None else blur_sigma

    def head_for(indices: Sequence[int]) -> tuple[dict[str, Features], ort.InferenceSession]:
        params = fit_head(maps, indices, method, shrinkage, coreset_ratio, coreset_max, seed)
        graph = head_model(shape, method, params, size=size, margin=margin, sigma=sigma)
        return params, _session(graph)

    # Out-of-fold scores: image i is scored by the head fitted without its fold (i % folds).
    # Too few images for folds: calibrate on the fitted ones (the threshold comes out low, so
    # good parts may be rejected; the result says so: folds == 0).
    k, groups = folds_of(len(maps), folds)
    scores = [0.0] * len(maps)
    minimum = math.inf
    for held, rest in groups:
        _, head = head_for(rest)
        for i in held:
            heat, peak = head.run(None, {"features": maps[i][None]})
            scores[i] = float(peak.reshape(-1)[0])
            minimum = min(minimum, float(np.min(heat)))
    params, _ = head_for(list(range(len(maps))))
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

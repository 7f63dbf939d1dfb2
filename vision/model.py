"""One ONNX model: its onnxruntime session, its layout (which adapter reads it), and inference.

The session is made for a small shared box: `intra_op_num_threads` 1 by default and spin-waiting
off (`session.intra_op.allow_spinning = 0`), so idle inference threads do not burn the core the
PLC poller needs; one warm-up run at load so the first part is not slow.

The layout is detected from the model's inputs, outputs and `metadata_props` (Ultralytics writes
`task`, `names` and `imgsz` there), or forced with `adapter`:

- anomaly: an output named `pred_score` or `anomaly_map` (anomalib export). A `metadata.json`
  next to the model with thresholds and min/max means raw anomalib ≤ 1 outputs, normalised here.
- detect: one output `[1, 4 + nc, N]` (Ultralytics), letterboxed input.
- classify: one output `[1, nc]`, logits or probabilities.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agent.errors import LinesideError
from vision import adapters, tiles
from vision.adapters import Normalization, Verdict
from vision.preprocess import Blob, Image, Placement, ResizeMode, Roi, Size, prepare

Kind = Literal["classify", "detect", "anomaly"]
DetectFormat = Literal["anchors", "end2end", "segment"]
SENSITIVITY_INPUTS = ("image_sensitivity", "pixel_sensitivity")
DEFAULT_SIZE: dict[str, int] = {"classify": 224, "detect": 640, "anomaly": 256}
SIDECARS = ("metadata.json",)


class ModelError(LinesideError):
    """A model that cannot be used: missing, corrupt, or of a layout lineside cannot read."""


@dataclass(frozen=True, slots=True)
class Layout:
    kind: Kind
    input_name: str
    input_size: Size  # (width, height) fed to the model
    resize: ResizeMode
    names: tuple[str, ...] = ()
    normalization: Normalization | None = None  # anomalib ≤ 1: raw outputs
    sensitivity_inputs: tuple[str, ...] = ()
    score_output: str | None = None
    map_output: str | None = None
    # detect: "anchors" [1, 4 + nc, N]; "end2end" [1, N, 6] (NMS in the graph); "segment"
    # output0 [1, 4 + nc + nm, N] with the mask protos [1, nm, h, w] in `protos_output`.
    detect_format: DetectFormat = "anchors"
    protos_output: str | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame ready for the model: the input tensor and where it sits in the frame.

    A tiled frame (`Model.tile_overlap`) carries every tile in `tiles`; `blob` and
    `placement` are the first tile's.
    """

    blob: Blob
    placement: Placement
    tiles: tuple[Prepared, ...] = ()


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads keep a core at 100 % between frames; the PLC poller needs it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _open(path: Path, threads: int) -> ort.InferenceSession:
    if not path.exists():
        raise ModelError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"model path is not a file: {path}")
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own pybind types for every load failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a usable ONNX model ({first[:200]})") from None


def _metadata(session: ort.InferenceSession) -> dict[str, Any]:
    """Ultralytics' metadata_props, parsed as Python literals (never evaluated as code)."""
    props = session.get_modelmeta().custom_metadata_map
    out: dict[str, Any] = {}
    for key, text in props.items():
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key] = text
    return out


def _names(meta: dict[str, Any]) -> tuple[str, ...]:
    names = meta.get("names")
    if isinstance(names, dict):
        try:
            return tuple(str(names[k]) for k in sorted(names, key=int))
        except (TypeError, ValueError):
            return ()
    if isinstance(names, list | tuple):
        return tuple(str(n) for n in names)
    return ()


def _normalization(path: Path) -> Normalization | None:
    for name in SIDECARS:
        sidecar = path.with_name(name)
        if sidecar.is_file():
            break
    else:
        return None
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        stats = data.get("pred_scores", data) if isinstance(data.get("pred_scores"), dict) else data
        norm = Normalization(
            image_threshold=float(data["image_threshold"]),
            pixel_threshold=float(data.get("pixel_threshold", data["image_threshold"])),
            min=float(stats["min"]),
            max=float(stats["max"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"{sidecar}: unusable anomalib metadata ({type(exc).__name__}: {exc}); "
            "expected image_threshold, pixel_threshold, min and max"
        ) from None
    if not all(math.isfinite(v) for v in (norm.min, norm.max)) or norm.max <= norm.min:
        raise ModelError(f"{sidecar}: max ({norm.max}) must exceed min ({norm.min})")
    return norm


def _input_size(shape: list[Any], meta: dict[str, Any], kind: Kind) -> Size:
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
        return (width, height)
    imgsz = meta.get("imgsz")
    if isinstance(imgsz, list | tuple) and len(imgsz) == 2:
        return (int(imgsz[1]), int(imgsz[0]))  # Ultralytics writes [height, width]
    if isinstance(imgsz, int):
        return (imgsz, imgsz)
    side = DEFAULT_SIZE[kind]
    return (side, side)


def detect_layout(session: ort.InferenceSession, path: Path, adapter: str = "auto") -> Layout:
    """Which adapter reads this model and what its input wants; ModelError when it fits none."""
    inputs = [i for i in session.get_inputs() if i.name not in SENSITIVITY_INPUTS]
    sensitivity = tuple(i.name for i in session.get_inputs() if i.name in SENSITIVITY_INPUTS)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"{path}: expected one image input, the model has {len(inputs)} ({names})")
    image = inputs[0]
    shape = list(image.shape)
    channels = shape[1] if len(shape) == 4 else None
    if len(shape) != 4 or (isinstance(channels, int) and channels != 3):
        raise ModelError(
            f"{path}: input {image.name!r} has shape {shape}; expected [N, 3, H, W] "
            "(a colour image, channels first)"
        )
    if image.type != "tensor(float)":
        raise ModelError(f"{path}: input {image.name!r} is {image.type}; expected tensor(float)")
    outputs = {o.name: list(o.shape) for o in session.get_outputs()}
    meta = _metadata(session)
    kind: Kind
    ranks = sorted(len(shape) for shape in outputs.values())
    segmentation = meta.get("task") == "segment" or (len(outputs) == 2 and ranks == [3, 4])
    if "pred_score" in outputs or "anomaly_map" in outputs:
        kind = "anomaly"
    elif segmentation:
        kind = "detect"
    elif meta.get("task") in ("detect", "classify"):
        kind = meta["task"]
    elif len(outputs) == 1 and len(next(iter(outputs.values()))) == 3:
        kind = "detect"
    elif len(outputs) == 1 and len(next(iter(outputs.values()))) == 2:
        kind = "classify"
    else:
        described = ", ".join(f"{n} {s}" for n, s in outputs.items())
        raise ModelError(
            f"{path}: unknown output layout ({described}); expected classify [1, classes], "
            "detect [1, 4 + classes, anchors] or anomaly (pred_score / anomaly_map)"
        )
    if adapter != "auto" and adapter != kind:
        raise ModelError(f"{path}: the model's outputs are a {kind} layout, not {adapter}")
    detect_format: DetectFormat = "anchors"
    protos: str | None = None
    if kind == "detect" and segmentation:
        if ranks != [3, 4]:
            described = ", ".join(f"{n} {s}" for n, s in outputs.items())
            raise ModelError(
                f"{path}: a segmentation model has output0 [1, 4 + classes + masks, anchors] "
                f"and protos [1, masks, h, w], this one {described}"
            )
        detect_format = "segment"
        protos = next(n for n, dims in outputs.items() if len(dims) == 4)
    elif kind in ("detect", "classify"):
        if len(outputs) != 1:
            raise ModelError(f"{path}: a {kind} model has one output, this one {len(outputs)}")
        out_shape = next(iter(outputs.values()))
        if len(out_shape) != (3 if kind == "detect" else 2):
            raise ModelError(f"{path}: a {kind} output of rank {len(out_shape)} is not supported")
        # End-to-end exports: [1, N, 6] (x1, y1, x2, y2, score, class); the anchors layout of
        # a two-class model is [1, 6, N], so the 6 must be last and N not 6.
        if kind == "detect" and (
            meta.get("end2end") is True or (out_shape[2] == 6 and out_shape[1] != 6)
        ):
            detect_format = "end2end"
    return Layout(
        kind=kind,
        input_name=image.name,
        input_size=_input_size(shape, meta, kind),
        resize="letterbox" if kind == "detect" else "resize",
        names=_names(meta),
        normalization=_normalization(path) if kind == "anomaly" else None,
        sensitivity_inputs=sensitivity,
        score_output="pred_score" if "pred_score" in outputs else None,
        map_output="anomaly_map" if "anomaly_map" in outputs else None,
        detect_format=detect_format,
        protos_output=protos,
    )


class Model:
    """A loaded, warmed-up model. `prepare` is pure; `predict` runs the session (thread-safe)."""

    def __init__(
        self,
        path: Path,
        session: ort.InferenceSession,
        layout: Layout,
        *,
        tile_overlap: float | None = None,
    ) -> None:
        self.path = path
        self.session = session
        self.layout = layout
        self.ok = adapters.ok_classes(layout.names)
        # Not None: frames are cut into model-sized tiles overlapping by this share (tiles.py).
        self.tile_overlap = tile_overlap

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        adapter: str = "auto",
        threads: int = 1,
        warm_up: bool = True,
        tile_overlap: float | None = None,
    ) -> Model:
        path = Path(path)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if tile_overlap is not None and not 0 <= tile_overlap < 1:
            raise ValueError(f"tile overlap must be within [0, 1), got {tile_overlap}")
        session = _open(path, threads)
        layout = detect_layout(session, path, adapter)
        model = cls(path, session, layout, tile_overlap=tile_overlap)
        if warm_up:
            width, height = model.layout.input_size
            try:
                model.run(np.zeros((1, 3, height, width), np.float32))
            except Exception as exc:
                raise ModelError(
                    f"{path}: the model fails on a {width}x{height} input: {exc}"
                ) from None
        return model

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> Kind:
        return self.layout.kind

    @property
    def input_size(self) -> Size:
        return self.layout.input_size

    def prepare(self, image: Image, *, roi: Roi | None = None, decode_scale: int = 1) -> Prepared:
        if self.tile_overlap is not None:
            return self._tiles(image, roi, decode_scale, self.tile_overlap)
        blob, placement = prepare(
            image,
            self.layout.input_size,
            mode=self.layout.resize,
            roi=roi,
            decode_scale=decode_scale,
        )
        return Prepared(blob, placement)

    def _tiles(self, image: Image, roi: Roi | None, decode_scale: int, overlap: float) -> Prepared:
        """Model-sized tiles of the ROI (of the whole image without one), each prepared."""
        height, width = image.shape[:2]
        region = (0, 0, width, height)
        if roi is not None:  # frame pixels → pixels of this (maybe reduced) image, clipped
            x, y = roi[0] // decode_scale, roi[1] // decode_scale
            x2 = min(x + max(1, roi[2] // decode_scale), width)
            y2 = min(y + max(1, roi[3] // decode_scale), height)
            x, y = max(x, 0), max(y, 0)
            if x2 <= x or y2 <= y:
                raise ValueError(f"the ROI {list(roi)} lies outside the {width}x{height} frame")
            region = (x, y, x2 - x, y2 - y)
        parts = []
        for tile in tiles.grid(region, self.layout.input_size, overlap):
            blob, placement = prepare(
                image, self.layout.input_size, mode=self.layout.resize, roi=tile
            )
            parts.append(Prepared(blob, replace(placement, decode_scale=decode_scale)))
        return Prepared(parts[0].blob, parts[0].placement, tuple(parts))

    def run(self, blob: Blob) -> dict[str, npt.NDArray[Any]]:
        feed: dict[str, Any] = {self.layout.input_name: blob}
        for name in self.layout.sensitivity_inputs:
            feed[name] = np.array([0.5], np.float32)  # anomalib's neutral sensitivity
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, feed)
        return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}

    def predict(
        self, prepared: Prepared, *, threshold: float | None = None, margin: int = 16
    ) -> Verdict:
        if prepared.tiles:
            return tiles.merge(
                [self.predict(t, threshold=threshold, margin=margin) for t in prepared.tiles]
            )
        outputs = self.run(prepared.blob)
        layout = self.layout
        if layout.kind == "anomaly":
            return adapters.anomaly(
                outputs.get("pred_score"),
                outputs.get("anomaly_map"),
                prepared.placement,
                normalization=layout.normalization,
                threshold=adapters.ANOMALY_BOUNDARY if threshold is None else threshold,
                margin=margin,
                input_size=layout.input_size,
            )
        confidence = adapters.DETECT_CONFIDENCE if threshold is None else threshold
        if layout.kind == "detect" and layout.protos_output is not None:
            protos = outputs.pop(layout.protos_output)
            (output,) = outputs.values()
            return adapters.segment(
                output,
                protos,
                layout.names,
                prepared.placement,
                layout.input_size,
                confidence=confidence,
            )
        (output,) = outputs.values()
        if layout.kind == "detect" and layout.detect_format == "end2end":
            return adapters.detect_end2end(
                output, layout.names, prepared.placement, confidence=confidence
            )
        if layout.kind == "detect":
            return adapters.detect(output, layout.names, prepared.placement, confidence=confidence)
        return adapters.classify(
            output,
            layout.names,
            ok=self.ok,
            min_confidence=adapters.CLASSIFY_CONFIDENCE if threshold is None else threshold,
        )

    def infer(
        self,
        image: Image,
        *,
        roi: Roi | None = None,
        threshold: float | None = None,
        margin: int = 16,
        decode_scale: int = 1,
    ) -> Verdict:
        """prepare + predict, for one-off use (`lineside inspect`)."""
        prepared = self.prepare(image, roi=roi, decode_scale=decode_scale)
        return self.predict(prepared, threshold=threshold, margin=margin)

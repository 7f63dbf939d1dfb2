"""Frame → model input, as pure functions: ROI crop, resize or letterbox, colour order, NCHW.

Every step also returns where its output sits in the frame (`Placement`), so boxes and maps the
model gives back are drawn and reported in the frame's own pixels.

Normalisation beyond the scale to [0, 1] belongs inside the model graph (anomalib 2 does it
there; Ultralytics needs none): `cv2.dnn.blobFromImage` does the scale, the colour swap and the
HWC → NCHW transpose in one pass, ~10x faster than the same arithmetic in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Blob = npt.NDArray[np.float32]
Size = tuple[int, int]  # (width, height), as OpenCV orders it
Roi = tuple[int, int, int, int]  # x, y, width, height in frame pixels
ResizeMode = Literal["resize", "letterbox"]

LETTERBOX_PAD = 114  # the grey Ultralytics pads with; its models were trained on it


@dataclass(frozen=True, slots=True)
class Placement:
    """How model-input pixels map back to frame pixels.

    frame = ((model - pad) / scale + offset) * decode_scale, per axis. `decode_scale` is the
    reduction of a JPEG decoded at 1/2, 1/4 or 1/8 size.
    """

    scale_x: float = 1.0
    scale_y: float = 1.0
    pad_x: float = 0.0
    pad_y: float = 0.0
    offset_x: int = 0
    offset_y: int = 0
    decode_scale: int = 1

    def to_frame(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """Boxes `[..., 4]` as x1, y1, x2, y2 in model-input pixels → frame pixels."""
        out = np.asarray(boxes, dtype=np.float64).copy()
        out[..., 0::2] = (out[..., 0::2] - self.pad_x) / self.scale_x + self.offset_x
        out[..., 1::2] = (out[..., 1::2] - self.pad_y) / self.scale_y + self.offset_y
        return out * self.decode_scale


def reduction(frame: Size, model_input: Size) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) that keeps the frame ≥ the model input.

    libjpeg scales in the DCT domain, so a 1/4 decode costs well under half of a full one.
    """
    for factor in (8, 4, 2):
        if frame[0] // factor >= model_input[0] and frame[1] // factor >= model_input[1]:
            return factor
    return 1


def crop(image: Image, roi: Roi) -> tuple[Image, Placement]:
    """The ROI of the image (clipped to it). Raises ValueError if nothing of the ROI is inside."""
    x, y, w, h = roi
    height, width = image.shape[:2]
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"the ROI {list(roi)} lies outside the {width}x{height} frame")
    return image[y1:y2, x1:x2], Placement(offset_x=x1, offset_y=y1)


def _interpolation(source: Size, target: Size) -> int:
    # AREA averages when shrinking (no aliasing of thin scratches); LINEAR when enlarging.
    shrinking = target[0] < source[0] or target[1] < source[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def resize(image: Image, size: Size) -> tuple[Image, Placement]:
    """Stretch to `size` (what anomaly and classification models were trained on)."""
    height, width = image.shape[:2]
    if (width, height) == size:
        return image, Placement()
    out = cv2.resize(image, size, interpolation=_interpolation((width, height), size))
    return cast(Image, out), Placement(scale_x=size[0] / width, scale_y=size[1] / height)


def letterbox(image: Image, size: Size, pad: int = LETTERBOX_PAD) -> tuple[Image, Placement]:
    """Scale to fit `size` keeping the aspect ratio, centred on a `pad` grey border.

    Same arithmetic as Ultralytics' LetterBox (the split of an odd padding included), so boxes
    come back where the exporter's own predictor would put them.
    """
    height, width = image.shape[:2]
    r = min(size[0] / width, size[1] / height)
    new_w, new_h = round(width * r), round(height * r)
    dw, dh = (size[0] - new_w) / 2, (size[1] - new_h) / 2
    if (new_w, new_h) != (width, height):
        how = _interpolation((width, height), (new_w, new_h))
        image = cast(Image, cv2.resize(image, (new_w, new_h), interpolation=how))
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(pad, pad, pad)
    )
    return cast(Image, out), Placement(scale_x=r, scale_y=r, pad_x=left, pad_y=top)


def to_nchw(image: Image, *, swap_rb: bool = True, scale: float = 1 / 255) -> Blob:
    """HWC uint8 (BGR from OpenCV) → float32 [1, 3, H, W], RGB by default, times `scale`."""
    if image.ndim == 2:
        image = cast(Image, cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    blob = cv2.dnn.blobFromImage(image, scalefactor=scale, swapRB=swap_rb, crop=False)
    return np.asarray(blob, dtype=np.float32)


def prepare(
    image: Image,
    size: Size,
    *,
    mode: ResizeMode = "resize",
    roi: Roi | None = None,
    swap_rb: bool = True,
    decode_scale: int = 1,
) -> tuple[Blob, Placement]:
    """The whole chain: crop to the ROI (given in full-frame pixels), fit to `size`, NCHW."""
    offset = Placement()
    if roi is not None:
        if decode_scale != 1:
            roi = (
                roi[0] // decode_scale,
                roi[1] // decode_scale,
                max(1, roi[2] // decode_scale),
                max(1, roi[3] // decode_scale),
            )
        image, offset = crop(image, roi)
    fitted, placement = (letterbox if mode == "letterbox" else resize)(image, size)
    placement = replace(
        placement,
        offset_x=offset.offset_x,
        offset_y=offset.offset_y,
        decode_scale=decode_scale,
    )
    return to_nchw(fitted, swap_rb=swap_rb), placement

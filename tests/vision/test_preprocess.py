"""Pre-processing tables: letterbox arithmetic, resize, ROI crop, NCHW and colour order."""

from __future__ import annotations

import numpy as np
import pytest

from vision.preprocess import (
    LETTERBOX_PAD,
    Placement,
    crop,
    letterbox,
    prepare,
    reduction,
    resize,
    to_nchw,
)


@pytest.mark.parametrize(
    ("frame", "size", "scale", "pad"),
    [
        ((640, 480), (640, 640), 1.0, (0, 80)),  # wide frame: bars top and bottom
        ((480, 640), (640, 640), 1.0, (80, 0)),
        ((1280, 1024), (640, 640), 0.5, (0, 64)),
        ((100, 50), (64, 64), 0.64, (0, 16)),  # 64x32 inside 64x64
        ((64, 64), (64, 64), 1.0, (0, 0)),
        ((101, 64), (64, 64), 64 / 101, (0, 12)),  # 64x41: odd padding 23 → 11 above, 12 below
    ],
)
def test_letterbox_table(
    frame: tuple[int, int], size: tuple[int, int], scale: float, pad: tuple[int, int]
) -> None:
    image = np.full((frame[1], frame[0], 3), 200, np.uint8)
    out, placement = letterbox(image, size)
    assert out.shape == (size[1], size[0], 3)
    assert placement.scale_x == pytest.approx(scale)
    assert placement.scale_y == pytest.approx(scale)
    if pad == (0, 12):
        assert (placement.pad_x, placement.pad_y) == (0, 11)  # Ultralytics: round(dh - 0.1)
    else:
        assert (placement.pad_x, placement.pad_y) == pad
    if pad[1]:
        assert (out[0] == LETTERBOX_PAD).all() and (out[-1] == LETTERBOX_PAD).all()
        assert (out[size[1] // 2] == 200).all()


def test_letterbox_boxes_come_back_to_frame_pixels() -> None:
    image = np.zeros((480, 640, 3), np.uint8)
    _, placement = letterbox(image, (320, 320))  # scale 0.5, pad_y 40
    boxes = np.array([[10.0, 40.0, 110.0, 140.0]])
    assert placement.to_frame(boxes).tolist() == [[20.0, 0.0, 220.0, 200.0]]


def test_resize_placement_and_size() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    out, placement = resize(image, (50, 50))
    assert out.shape == (50, 50, 3)
    assert (placement.scale_x, placement.scale_y) == (0.25, 0.5)
    assert placement.to_frame(np.array([[5.0, 5.0, 10.0, 10.0]])).tolist() == [
        [20.0, 10.0, 40.0, 20.0]
    ]


@pytest.mark.parametrize(
    ("roi", "shape", "offset"),
    [
        ((10, 20, 30, 40), (40, 30), (10, 20)),
        ((90, 90, 50, 50), (10, 10), (90, 90)),  # clipped at the frame edge
        ((0, 0, 100, 100), (100, 100), (0, 0)),
    ],
)
def test_crop_table(
    roi: tuple[int, int, int, int], shape: tuple[int, int], offset: tuple[int, int]
) -> None:
    image = np.arange(100 * 100 * 3, dtype=np.uint32).astype(np.uint8).reshape(100, 100, 3)
    out, placement = crop(image, roi)
    assert out.shape[:2] == shape
    assert (placement.offset_x, placement.offset_y) == offset
    assert (out[0, 0] == image[offset[1], offset[0]]).all()


def test_crop_outside_the_frame_is_refused() -> None:
    with pytest.raises(ValueError, match=r"ROI \[200, 0, 10, 10\] lies outside the 100x100 frame"):
        crop(np.zeros((100, 100, 3), np.uint8), (200, 0, 10, 10))


def test_nchw_rgb_order_and_scale() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0] = 255  # blue in OpenCV's BGR
    image[0, 0, 2] = 51  # a little red in one pixel
    blob = to_nchw(image)
    assert blob.shape == (1, 3, 2, 3) and blob.dtype == np.float32
    assert blob[0, 2].tolist() == [[1.0] * 3] * 2  # blue is the last channel in RGB
    assert blob[0, 0, 0, 0] == pytest.approx(0.2)
    assert blob[0, 1].max() == 0.0
    bgr = to_nchw(image, swap_rb=False)
    assert bgr[0, 0].tolist() == [[1.0] * 3] * 2


def test_grey_images_become_three_channels() -> None:
    blob = to_nchw(np.full((4, 4), 255, np.uint8))
    assert blob.shape == (1, 3, 4, 4) and float(blob.min()) == 1.0


@pytest.mark.parametrize(
    ("frame", "model", "factor"),
    [
        ((1280, 1024), (256, 256), 4),
        ((2048, 2048), (256, 256), 8),
        ((640, 480), (256, 256), 1),  # 1/2 would give 320x240, smaller than 256 high
        ((640, 512), (256, 256), 2),
        ((256, 256), (256, 256), 1),
        ((100, 100), (256, 256), 1),
    ],
)
def test_reduction_keeps_the_frame_at_least_the_model_input(
    frame: tuple[int, int], model: tuple[int, int], factor: int
) -> None:
    assert reduction(frame, model) == factor


def test_prepare_with_roi_and_decode_scale_maps_back_to_the_full_frame() -> None:
    # a frame decoded at 1/2: the ROI is given in full-frame pixels
    image = np.zeros((240, 320, 3), np.uint8)
    blob, placement = prepare(image, (50, 50), roi=(100, 100, 200, 200), decode_scale=2)
    assert blob.shape == (1, 3, 50, 50)
    assert placement == Placement(
        scale_x=0.5, scale_y=0.5, offset_x=50, offset_y=50, decode_scale=2
    )
    assert placement.to_frame(np.array([[0.0, 0.0, 50.0, 50.0]])).tolist() == [
        [100.0, 100.0, 300.0, 300.0]
    ]

"""Frame sources on real files: JPEG decode (reduced, truncated), folders (replay, watch, gone),
video files and a capture device that disappears."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.frames import (
    CaptureSource,
    FolderSource,
    FrameError,
    SourceGone,
    decode,
    jpeg_size,
    read_image,
)


def jpeg(width: int, height: int, value: int = 128) -> bytes:
    image = np.full((height, width, 3), value, np.uint8)
    image[: height // 2, : width // 2] = 255 - value
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def test_jpeg_size_from_the_header() -> None:
    assert jpeg_size(jpeg(320, 200)) == (320, 200)
    assert jpeg_size(b"\x89PNG....") is None


@pytest.mark.parametrize(
    ("frame", "target", "shape", "factor"),
    [
        ((1280, 1024), (256, 256), (256, 320), 4),
        ((640, 480), (256, 256), (480, 640), 1),
        ((640, 480), None, (480, 640), 1),
        ((2048, 2048), (256, 256), (256, 256), 8),
    ],
)
def test_reduced_decode(
    frame: tuple[int, int],
    target: tuple[int, int] | None,
    shape: tuple[int, int],
    factor: int,
) -> None:
    image, got = decode(jpeg(*frame), "f.jpg", target=target)
    assert image.shape[:2] == shape and got == factor


def test_roi_decides_the_reduction() -> None:
    # a 300x300 ROI of a 1280x1024 frame must stay ≥ 256: no reduction
    _, factor = decode(jpeg(1280, 1024), "f.jpg", target=(256, 256), roi=(0, 0, 300, 300))
    assert factor == 1


def test_truncated_jpeg_is_a_frame_error() -> None:
    data = jpeg(200, 100)
    with pytest.raises(FrameError, match=r"f\.jpg: truncated JPEG \(no end-of-image marker\)"):
        decode(data[: len(data) * 2 // 3], "f.jpg")
    decode(data + b"\x00\x00", "padded.jpg")  # zero padding after the marker is fine


def test_undecodable_and_empty_files() -> None:
    with pytest.raises(FrameError, match=r"x\.png: not a decodable image"):
        decode(b"\x89PNG\r\n\x1a\n garbage", "x.png")
    with pytest.raises(FrameError, match=r"e\.jpg: empty file"):
        decode(b"", "e.jpg")


def test_png_decodes_at_full_size(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    cv2.imwrite(str(path), np.zeros((40, 60, 3), np.uint8))
    frame = read_image(path, target=(8, 8))
    assert frame.image.shape == (40, 60, 3) and frame.decode_scale == 1


def test_folder_replays_in_name_order_and_counts_bad_files(tmp_path: Path) -> None:
    (tmp_path / "b.jpg").write_bytes(jpeg(64, 64))
    (tmp_path / "a.jpg").write_bytes(jpeg(64, 64))
    (tmp_path / "c.jpg").write_bytes(jpeg(64, 64)[:300])  # truncated
    (tmp_path / "notes.txt").write_text("not an image", encoding="utf-8")
    source = FolderSource(tmp_path)
    names = []
    errors = []
    while not source.finished:
        try:
            frame = source.read()
        except FrameError as exc:
            errors.append(str(exc))
            continue
        if frame is not None:
            names.append(frame.name)
    assert names == ["a.jpg", "b.jpg"]
    assert errors == ["c.jpg: truncated JPEG (no end-of-image marker)"]


def test_folder_that_disappears(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(jpeg(64, 64))
    source = FolderSource(folder)
    assert source.read() is not None
    shutil.rmtree(folder)
    with pytest.raises(FrameError, match=r"b\.jpg: file not found"):
        source.read()
    assert source.finished
    missing = FolderSource(folder, watch=True)
    with pytest.raises(SourceGone, match="frames: folder not found"):
        missing.read()


def test_watched_folder_takes_new_files_once_complete(tmp_path: Path) -> None:
    source = FolderSource(tmp_path, watch=True)
    assert source.read() is None
    (tmp_path / "a.jpg").write_bytes(jpeg(64, 64))
    assert source.read() is None  # seen once: it may still be being written
    frame = source.read()
    assert frame is not None and frame.name == "a.jpg"
    assert source.read() is None and not source.finished
    tmp_path.rename(tmp_path.with_name("moved"))
    with pytest.raises(SourceGone):
        source.read()


def write_video(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()


def test_video_file_ends(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    write_video(path, 3)
    source = CaptureSource(path, live=False)
    frames = [source.read() for _ in range(3)]
    assert [f.name for f in frames if f is not None] == [f"{path}#1", f"{path}#2", f"{path}#3"]
    assert source.read() is None and source.finished
    source.close()


def test_capture_that_disappears_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "camera.avi"
    write_video(path, 1)
    source = CaptureSource(path, live=True)
    assert source.read() is not None
    with pytest.raises(SourceGone, match="no frame"):
        source.read()  # the "camera" gives nothing more: released
    path.unlink()
    with pytest.raises(SourceGone, match="cannot open"):
        source.read()
    write_video(path, 1)  # plugged back in
    assert source.read() is not None
    assert not source.finished
    source.close()


def test_camera_that_does_not_exist() -> None:
    source = CaptureSource("/dev/video-lineside-none", live=True)
    with pytest.raises(SourceGone, match="cannot open"):
        source.read()
    assert not source.finished

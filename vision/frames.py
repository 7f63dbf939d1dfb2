"""Where frames come from: a folder of images (replayed or watched), a video file, a camera, a
network stream (all through OpenCV), or the simulated camera (vision/synthetic.py).

A source's `read()` returns the next frame, None when there is none yet (a watched folder, a
camera between frames), and raises `FrameError` for one bad frame or a lost device; the caller
counts it and calls `read()` again later (a camera is reopened on the next call). `finished`
turns true at the end of a replayed folder or video. `open_source` makes the one an
`[[inspections]]` entry describes.

JPEG files are decoded at 1/2, 1/4 or 1/8 size (libjpeg DCT scaling) when the model input is
that much smaller than the frame: decoding is the most expensive step around inference.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import cv2
import numpy as np

from agent.errors import LinesideError
from vision.preprocess import Image, Roi, Size, reduction

if TYPE_CHECKING:
    from agent.clock import Clock
    from vision.config import InspectionConfig
    from vision.model import Model

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_REDUCED = {
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameError(LinesideError):
    """A frame that could not be had: an unreadable or truncated file."""


class SourceGone(FrameError):
    """The source itself is unavailable (folder missing, camera unplugged); retried later."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: Image  # BGR uint8, HxWx3
    name: str  # file name, or source name and frame number
    ts_ns: int  # when it was taken (file mtime for replayed files)
    decode_scale: int = 1  # the image is 1/decode_scale of the original size
    truth: str | None = None  # simulated camera only: the defect painted, if any


def jpeg_size(data: bytes) -> Size | None:
    """(width, height) from a JPEG's frame header, without decoding; None if not found."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        if marker in _SOF and at + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, at + 5)
            return (width, height)
        at += 2 + length
    return None


def decode(
    data: bytes, name: str, *, target: Size | None = None, roi: Roi | None = None
) -> tuple[Image, int]:
    """Decode an image file's bytes to BGR; JPEGs at reduced size when `target` allows.

    Raises FrameError for a truncated JPEG (libjpeg would fill the missing part with grey and
    carry on, which would be inspected as a defect) or undecodable data.
    """
    if not data:
        raise FrameError(f"{name}: empty file")
    factor = 1
    if data[:2] == b"\xff\xd8":
        if data.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":
            raise FrameError(f"{name}: truncated JPEG (no end-of-image marker)")
        size = jpeg_size(data)
        if target is not None and size is not None:
            region = (roi[2], roi[3]) if roi is not None else size
            factor = reduction(region, target)
    flag = _REDUCED.get(factor, cv2.IMREAD_COLOR)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise FrameError(f"{name}: not a decodable image")
    return cast(Image, image), factor


def read_image(path: Path, *, target: Size | None = None, roi: Roi | None = None) -> Frame:
    """One image file as a Frame (FrameError if it cannot be read or decoded)."""
    try:
        data = path.read_bytes()
        mtime_ns = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise FrameError(f"{path}: file not found") from None
    except OSError as exc:
        raise FrameError(f"{path}: cannot read ({exc.strerror})") from None
    image, factor = decode(data, path.name, target=target, roi=roi)
    return Frame(image, path.name, mtime_ns, factor)


class FrameSource(Protocol):
    name: str

    @property
    def finished(self) -> bool: ...

    @property
    def live(self) -> bool:
        """Frames are taken when triggered (camera); a replay offers every frame in turn."""
        ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class FolderSource:
    """Image files of a folder in name order; `watch` keeps looking for new ones.

    A watched file is read once two scans saw it with the same size, so a file still being
    copied in is not taken half-written. A folder that disappears raises FrameError on every
    read until it is back.
    """

    live = False

    def __init__(
        self,
        path: Path,
        *,
        pattern: str = "*",
        watch: bool = False,
        target: Size | None = None,
        roi: Roi | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.pattern = pattern
        self.watch = watch
        self.target = target
        self.roi = roi
        self._seen: set[str] = set()
        self._sizes: dict[str, int] = {}
        self._pending: list[Path] = []
        self._scanned = False

    @property
    def finished(self) -> bool:
        return self._scanned and not self.watch and not self._pending

    def _scan(self) -> None:
        if not self.path.is_dir():
            raise SourceGone(f"{self.path}: folder not found")
        try:
            found = sorted(
                p
                for p in self.path.glob(self.pattern)
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        except OSError as exc:
            raise SourceGone(f"{self.path}: cannot list ({exc.strerror})") from None
        sizes: dict[str, int] = {}
        for p in found:
            if p.name in self._seen:
                continue
            try:
                size = p.stat().st_size
            except OSError:
                continue  # gone between listing and stat
            sizes[p.name] = size
            if not self.watch or self._sizes.get(p.name) == size:
                self._pending.append(p)
                self._seen.add(p.name)
        self._sizes = {n: s for n, s in sizes.items() if n not in self._seen}
        self._scanned = True

    def read(self) -> Frame | None:
        if not self._pending and (self.watch or not self._scanned):
            self._scan()
        if not self._pending:
            return None
        return read_image(self._pending.pop(0), target=self.target, roi=self.roi)

    def close(self) -> None:
        self._pending.clear()


class CaptureSource:
    """A video file, camera (index or device path) or stream URL, through cv2.VideoCapture.

    A camera or stream that stops giving frames is released and raises FrameError; the next
    `read()` tries to open it again. A video file ends.
    """

    def __init__(
        self, target: int | str | Path, *, live: bool, clock_ns: Callable[[], int] = time.time_ns
    ) -> None:
        self.target = str(target) if isinstance(target, Path) else target
        self.name = str(target)
        self.live = live
        self._clock_ns = clock_ns
        self._capture: cv2.VideoCapture | None = None
        self._count = 0
        self._ended = False

    @property
    def finished(self) -> bool:
        return self._ended

    def read(self) -> Frame | None:
        if self._ended:
            return None
        if self._capture is None:
            capture = cv2.VideoCapture(self.target)
            if not capture.isOpened():
                capture.release()
                if not self.live:
                    self._ended = True
                raise SourceGone(f"{self.name}: cannot open")
            self._capture = capture
        ok, image = self._capture.read()
        if not ok or image is None:
            self._capture.release()
            self._capture = None
            if not self.live:
                self._ended = True
                return None
            raise SourceGone(f"{self.name}: no frame (device gone or stream ended)")
        self._count += 1
        return Frame(np.ascontiguousarray(image), f"{self.name}#{self._count}", self._clock_ns())

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class SimSource:
    """The simulated camera: generated part images, some defective (vision/synthetic.py)."""

    live = True
    finished = False

    def __init__(
        self,
        *,
        seed: int = 0,
        defect_rate: float = 0.1,
        surfaces: tuple[str, ...] = ("metal",),
        size: Size = (256, 256),
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        from vision import synthetic  # the generator is only needed when the sim is used

        self.name = "sim"
        self._clock_ns = clock_ns
        self._parts: Iterator[synthetic.Sample] = synthetic.stream(
            seed, defect_rate, surfaces, size
        )
        self._count = 0

    def read(self) -> Frame | None:
        sample = next(self._parts)
        self._count += 1
        return Frame(sample.image, f"sim#{self._count}", self._clock_ns(), truth=sample.defect)

    def close(self) -> None:
        pass


def open_source(config: InspectionConfig, model: Model, clock: Clock) -> FrameSource:
    """The frame source an inspection's config describes, sized for the model's input."""
    spec = config.source
    if spec.type == "folder":
        return FolderSource(
            spec.path,
            pattern=spec.pattern,
            watch=spec.watch,
            # Tiles need the frame at full resolution: no reduced JPEG decoding.
            target=None if model.tile_overlap is not None else model.input_size,
            roi=config.roi,
        )
    if spec.type == "video":
        return CaptureSource(spec.path, live=False, clock_ns=clock.time_ns)
    if spec.type == "camera":
        return CaptureSource(spec.device, live=True, clock_ns=clock.time_ns)
    if spec.type == "url":
        return CaptureSource(spec.url, live=True, clock_ns=clock.time_ns)
    return SimSource(
        seed=spec.seed,
        defect_rate=spec.defect_rate,
        surfaces=spec.surfaces,
        size=(spec.width, spec.height),
        clock_ns=clock.time_ns,
    )

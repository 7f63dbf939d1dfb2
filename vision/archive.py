"""The image archive of an inspection: saved images of inspected parts, bounded in size and age.

The files are named `<ts_ns>_<verdict>_<source>.jpg`: an agent restarted on the folder finds
the files it saved before, oldest first, and goes on bounding them.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import cv2

from vision.frames import Frame

if TYPE_CHECKING:
    from vision.config import InspectionConfig


class ImageArchive:
    """Saved images of inspected parts, bounded by total bytes and by age.

    Every NotOK and NotDecidable part is kept, OK parts one in round(1 / good_sample). The
    oldest files go first when the folder passes `max_size`; files older than `retention`
    seconds go whatever the size.
    """

    def __init__(
        self, folder: Path, *, max_size: int, retention: float, good_sample: float
    ) -> None:
        self.folder = Path(folder)
        self.max_size = max_size
        self.retention_ns = round(retention * 1e9)
        self.good_every = 0 if good_sample <= 0 else max(1, round(1 / good_sample))
        self._good_seen = 0
        self.folder.mkdir(parents=True, exist_ok=True)
        # (ts_ns, path, bytes), oldest first; the file names start with the timestamp.
        self._files: deque[tuple[int, Path, int]] = deque()
        for path in sorted(self.folder.glob("*.jpg")):
            head = path.name.split("_", 1)[0]
            if head.isdigit():
                self._files.append((int(head), path, path.stat().st_size))
        self.total = sum(size for _, _, size in self._files)
        self.deleted = 0

    def wanted(self, verdict: str) -> bool:
        if verdict != "OK":
            return True
        if self.good_every == 0:
            return False
        self._good_seen += 1
        return self._good_seen % self.good_every == 1 or self.good_every == 1

    def save(self, frame: Frame, verdict: str, ts_ns: int) -> Path:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(frame.name).stem)[:80]
        path = self.folder / f"{ts_ns}_{verdict}_{stem}.jpg"
        ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise OSError(f"cannot encode {frame.name} as JPEG")
        path.write_bytes(data.tobytes())
        self._files.append((ts_ns, path, len(data)))
        self.total += len(data)
        self.prune(ts_ns)
        return path

    def prune(self, now_ns: int) -> None:
        while self._files and (
            self.total > self.max_size or self._files[0][0] < now_ns - self.retention_ns
        ):
            _, path, size = self._files.popleft()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.total -= size
            self.deleted += 1


def archive_for(config: InspectionConfig) -> ImageArchive | None:
    """The archive an `[[inspections]]` entry's `save` describes; None without one."""
    save = config.save
    if save is None:
        return None
    return ImageArchive(
        save.dir, max_size=save.max_size, retention=save.retention, good_sample=save.good_sample
    )

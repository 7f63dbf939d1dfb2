"""Test helper: a folder of part images for the brightness "anomaly model" (onnx_graphs)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_parts(folder: Path, defects: list[bool]) -> None:
    """One dark 96x96 JPEG per entry, `part00.jpg` on; a defect is a bright 16x16 square."""
    folder.mkdir()
    for i, defect in enumerate(defects):
        image = np.zeros((96, 96, 3), np.uint8)
        if defect:
            image[40:56, 40:56] = 255
        cv2.imwrite(str(folder / f"part{i:02d}.jpg"), image)

"""Real textures with painted defects: fit on one half of an image, measure on the other.

The textures are the CC0 photographs that ship inside the scikit-image wheel
(`skimage/data/brick.png`, `gravel.png`, `grass.png`, 512x512 grey; CC0 per skimage.data's
own docstrings: CC0Textures Bricks25 and Gravel04, and Grass-01 on DeviantArt), so nothing is
downloaded. Good crops of the top half fit the model; good and defective crops of the bottom
half, which the fit never saw, measure it. Defects are painted on: a thin scratch (a bright
or dark line 1-2 px wide), a hole (a dark disc) and a stain (a soft darker blot), kept
inside the border band that inspection ignores.
"""

from __future__ import annotations

import importlib.resources
import math
from pathlib import Path

import cv2
import numpy as np

TEXTURES = ("brick", "gravel", "grass")
DEFECTS = ("scratch", "hole", "stain")
CROP = 128


def texture(name: str) -> np.ndarray:
    """The 512x512 texture as BGR uint8 (needs scikit-image installed, never imported)."""
    path = importlib.resources.files("skimage") / "data" / f"{name}.png"
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise FileNotFoundError(path)
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), np.uint8)


def crops(image: np.ndarray, rows: tuple[int, int], count: int, seed: int) -> list[np.ndarray]:
    """`count` CROPxCROP crops whose top-left row lies within `rows` (a half of the image)."""
    rng = np.random.default_rng(seed)
    width = image.shape[1]
    out = []
    for _ in range(count):
        y = int(rng.integers(rows[0], rows[1] - CROP + 1))
        x = int(rng.integers(0, width - CROP + 1))
        crop = image[y : y + CROP, x : x + CROP]
        crop = np.rot90(crop, int(rng.integers(4)))  # textures have no up
        out.append(np.ascontiguousarray(crop))
    return out


def paint(image: np.ndarray, defect: str, seed: int) -> np.ndarray:
    """A copy of the crop with one defect painted in its inner part."""
    rng = np.random.default_rng(seed)
    out = image.astype(np.float32)
    size = image.shape[0]
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    layer = np.zeros(image.shape[:2], np.float32)
    if defect == "scratch":
        angle = rng.uniform(0, math.pi)
        half = rng.uniform(0.12, 0.22) * size
        dx, dy = math.cos(angle) * half, math.sin(angle) * half
        p1 = (round((cx - dx) * 16), round((cy - dy) * 16))
        p2 = (round((cx + dx) * 16), round((cy + dy) * 16))
        cv2.line(layer, p1, p2, 1.0, int(rng.integers(1, 3)), cv2.LINE_AA, shift=4)
        sign = 1.0 if rng.random() < 0.5 else -1.0
        out += sign * rng.uniform(45, 70) * layer[:, :, None]
    elif defect == "hole":
        radius = rng.uniform(3, 7)
        cv2.circle(
            layer,
            (round(cx * 16), round(cy * 16)),
            round(radius * 16),
            1.0,
            -1,
            cv2.LINE_AA,
            shift=4,
        )
        out = out * (1 - 0.8 * layer[:, :, None]) + 10 * layer[:, :, None]
    elif defect == "stain":
        axes = (round(rng.uniform(6, 14)), round(rng.uniform(4, 10)))
        cv2.ellipse(layer, (round(cx), round(cy)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        layer = np.asarray(cv2.GaussianBlur(layer, (0, 0), 3), dtype=np.float32)
        out = out * (1 - rng.uniform(0.3, 0.45) * layer[:, :, None])
    else:
        raise ValueError(defect)
    clipped: np.ndarray = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return clipped


def write_split(root: Path, name: str, fit: int, test: int, seed: int) -> dict[str, Path]:
    """good/ (top half), test-good/ and test-bad/<defect>/ (bottom half) as PNG files."""
    image = texture(name)
    half = image.shape[0] // 2
    folders = {"good": root / "good", "test_good": root / "test-good", "bad": root / "test-bad"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(crops(image, (0, half), fit, seed)):
        cv2.imwrite(str(folders["good"] / f"{i:04d}.png"), crop)
    test_crops = crops(image, (half, image.shape[0]), 2 * test, seed + 1)
    for i, crop in enumerate(test_crops[:test]):
        cv2.imwrite(str(folders["test_good"] / f"{i:04d}.png"), crop)
    for i, crop in enumerate(test_crops[test:]):
        defect = DEFECTS[i % len(DEFECTS)]
        (folders["bad"] / defect).mkdir(exist_ok=True)
        cv2.imwrite(str(folders["bad"] / defect / f"{i:04d}.png"), paint(crop, defect, seed + i))
    return folders

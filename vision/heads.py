"""The two anomaly heads of `lineside vision fit`, in pure numpy, fitted on good patches only.

- `gaussian` (PaDiM with one shared Gaussian): mean and covariance, shrunk towards a scaled
  identity so few images still give an invertible matrix; the score of a patch is its
  Mahalanobis distance (`vision.head_graph` computes it in the graph);
- `coreset` (PatchCore-lite): a greedy k-center subset of the patches as a memory bank; the
  score is the distance to the nearest member.

`FitError` lives here, the lowest layer of fitting, so that every part of it raises the one
error (`vision.fit` re-exports it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.errors import LinesideError

Method = Literal["gaussian", "coreset"]
Features = npt.NDArray[np.float32]


class FitError(LinesideError):
    """Fitting cannot proceed: no usable images, or a backbone that gives no feature map."""


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


def fit_head(
    maps: Sequence[Features],
    indices: Sequence[int],
    method: Method,
    shrinkage: float,
    coreset_ratio: float,
    coreset_max: int,
    seed: int,
) -> dict[str, Features]:
    """The parameters of a `method` head fitted on every patch of the maps at `indices`."""
    channels = maps[0].shape[0]
    patches = np.concatenate([maps[i].reshape(channels, -1).T for i in indices])
    if method == "gaussian":
        mean, whiten = gaussian(patches, shrinkage)
        return {"mean": mean, "whiten": whiten}
    k = min(coreset_max, max(1, round(patches.shape[0] * coreset_ratio)))
    return {"bank": coreset(patches, k, seed=seed)}

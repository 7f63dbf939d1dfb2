"""The threshold of `lineside vision fit`, in pure Python: where good parts end.

The threshold comes from good images only, scored by heads that were NOT fitted on them: a head
scores its own training patches too low (the coreset holds many of them exactly), which would
put the threshold under the scores of unseen good parts and reject them. So the images are split
into folds (`folds`) and each is scored by a head fitted on the others (out-of-fold scores). The
threshold either rejects at most a share of those scores (`threshold_for_rate`, which needs at
least ceil(3 / rate) good images, see `needed_images`) or is their percentile (`threshold_of`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision.heads import FitError


def threshold_of(scores: Sequence[float], percentile: float) -> float:
    """The raw image score that becomes the 0.5 boundary: a percentile of good-image scores."""
    if not scores:
        raise FitError("no calibration scores")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be within (0, 100], got {percentile}")
    return float(np.percentile(np.asarray(scores, np.float64), percentile))


def needed_images(rate: float) -> int:
    """Good images needed to check a false-reject rate: ceil(3 / rate).

    The rule of three: with no rejects among n good images, the true rate is below 3/n at 95 %
    confidence. Fewer images than 3/rate cannot tell a rate of `rate` from one of zero.
    """
    return math.ceil(3 / rate - 1e-9)


def threshold_for_rate(scores: Sequence[float], rate: float) -> float:
    """The lowest score that rejects at most floor(rate x n) of these good images.

    A part is rejected when its score is above the threshold, so the image AT the threshold
    passes: the threshold is the (k+1)-th highest score, k = floor(rate x n).
    """
    if not scores:
        raise FitError("no calibration scores")
    ranked = sorted(scores, reverse=True)
    allowed = min(math.floor(rate * len(ranked) + 1e-9), len(ranked) - 1)
    return float(ranked[allowed])


def check_enough(count: int, rate: float, folder: Path) -> None:
    """Refuse a false-reject rate that `count` good images cannot check."""
    need = needed_images(rate)
    if count < need:
        raise FitError(
            f"{folder}: --max-false-reject {rate:.2%} needs at least {need} good images "
            f"(ceil(3 / rate): with no rejects among n good images the rate is below 3/n at "
            f"95 % confidence), there are {count}; add {need - count} more, or ask for "
            f"{3 / count:.2%} or more"
        )


def folds_of(count: int, folds: int) -> tuple[int, list[tuple[list[int], list[int]]]]:
    """The folds used and, for each, (images held out and scored, images the head is fitted on).

    Image i goes in fold i % folds. Too few images for folds: one group, scored by the head
    fitted on all of them (the threshold comes out low, so good parts may be rejected; the fit
    says so: 0 folds).
    """
    everything = list(range(count))
    k = folds if count >= max(folds, 2) else 0
    if not k:
        return 0, [(everything, everything)]
    groups = [[i for i in everything if i % k == f] for f in range(k)]
    return k, [(held, [i for i in everything if i not in held]) for held in groups]

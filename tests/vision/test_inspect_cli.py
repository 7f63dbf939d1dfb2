"""`lineside inspect` as a user runs it: a real process on generated part images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.vision import onnx_graphs as graphs
from vision.adapters import Box, Verdict
from vision.inspect_cli import annotate, table


def lineside(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    """Generated part images (vision/synthetic.py): two good, one scratched, one truncated."""
    synthetic = pytest.importorskip("vision.synthetic")
    folder = tmp_path / "parts"
    folder.mkdir()
    for name, defect in (("a_good", None), ("b_scratch", "scratch"), ("c_good", None)):
        sample = synthetic.render("metal", defect, seed=7, size=(160, 128))
        cv2.imwrite(str(folder / f"{name}.jpg"), sample.image)
    data = (folder / "a_good.jpg").read_bytes()
    (folder / "d_cut.jpg").write_bytes(data[: len(data) // 2])
    return folder


def test_inspect_folder_writes_json_and_annotated_images(tmp_path: Path, parts: Path) -> None:
    model = graphs.detect_model(
        tmp_path / "d.onnx", [[32, 32, 16, 16, 0.9, 0.0]], ["scratch", "dent"], imgsz=64
    )
    out = tmp_path / "out"
    result = lineside("inspect", str(parts), "--model", str(model), "--out", str(out), "--json")
    assert result.returncode == 1, result.stderr  # one image could not be read
    report = json.loads(result.stdout)
    assert (report["model"], report["adapter"]) == ("d.onnx", "detect")
    rows = report["images"]
    assert [Path(r["file"]).name for r in rows] == [
        "a_good.jpg",
        "b_scratch.jpg",
        "c_good.jpg",
        "d_cut.jpg",
    ]
    assert [r["verdict"] for r in rows] == ["NotOK", "NotOK", "NotOK", "error"]
    assert "truncated JPEG" in rows[3]["error"]
    # a 160x128 frame letterboxed into 64x64: scale 0.4, 6.4 → 6 px bars; box (24..40) model px
    assert rows[0]["boxes"] == [
        {"box": [60.0, 45.0, 100.0, 85.0], "score": 0.9, "class": "scratch"}
    ]
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_good.annotated.jpg", "b_scratch.annotated.jpg", "c_good.annotated.jpg"]
    image = cv2.imread(str(out / "a_good.annotated.jpg"))
    assert image is not None and image.shape == (128, 160, 3)


def test_inspect_table_with_an_anomaly_model(tmp_path: Path, parts: Path) -> None:
    model = graphs.anomaly_model(tmp_path / "a.onnx", size=(64, 64))
    files = [str(parts / "a_good.jpg"), str(parts / "b_scratch.jpg")]
    result = lineside("inspect", *files, "--model", str(model), "--threshold", "0.99")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["file", "verdict", "score", "classes", "/", "error"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["a_good.jpg", "OK"],
        ["b_scratch.jpg", "OK"],
    ]


def test_inspect_with_a_bad_model_exits_2(tmp_path: Path, parts: Path) -> None:
    result = lineside("inspect", str(parts), "--model", str(tmp_path / "none.onnx"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: model file not found: {tmp_path / 'none.onnx'}"
    result = lineside("inspect", str(parts), "--model", "x.onnx", "--adapter", "segment")
    assert result.returncode == 2 and "unknown adapter 'segment'" in result.stderr


def test_annotate_draws_boxes_and_the_heat_map() -> None:
    frame = np.zeros((40, 60, 3), np.uint8)
    heat = np.zeros((8, 8), np.float32)
    heat[4:, 4:] = 1.0
    verdict = Verdict(
        "NotOK", 0.9, "anomaly", ("anomaly",), (Box(2, 2, 20, 20, 0.9, 0, "anomaly"),), heat
    )
    out = annotate(frame, verdict)
    assert out.shape == frame.shape and frame.max() == 0  # the input is left alone
    assert out[35, 55].any() and out[2, 10].any()  # heat (lower right), box edge (red)
    assert tuple(out[11, 2]) == (40, 40, 230)


def test_table_lines() -> None:
    rows: list[dict[str, Any]] = [
        {"file": "/x/a.jpg", "verdict": "OK", "score": 0.1, "classes": []},
        {"file": "/x/bb.jpg", "verdict": "error", "error": "bb.jpg: empty file"},
    ]
    assert table(rows).splitlines() == [
        "file    verdict  score  classes / error",
        "a.jpg   OK       0.100",
        "bb.jpg  error           bb.jpg: empty file",
    ]

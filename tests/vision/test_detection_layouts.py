"""Ultralytics end-to-end and segmentation exports, and tiling of large frames.

Each model is a small real ONNX graph (tests/vision/onnx_graphs.py) run by onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vision.adapters import Box, Verdict
from vision.model import Model
from vision.tiles import grid, merge

from .onnx_graphs import bright_spot_model, constant_model, segment_model

BLACK = np.zeros((64, 64, 3), np.uint8)


def test_end2end_rows_are_boxes_without_a_second_nms(tmp_path: Path) -> None:
    """[1, N, 6] rows x1, y1, x2, y2, score, class: zero-score padding rows are no boxes, and
    two overlapping boxes the graph kept both stay (the graph did the NMS)."""
    table = np.zeros((1, 300, 6), np.float32)
    table[0, 0] = [10, 10, 30, 30, 0.9, 1]
    table[0, 1] = [12, 12, 32, 32, 0.6, 1]  # overlaps the first, same class: kept all the same
    table[0, 2] = [40, 40, 50, 50, 0.1, 0]  # under the 0.25 confidence
    meta = {"task": "detect", "names": repr({0: "dent", 1: "scratch"}), "imgsz": "[64, 64]"}
    path = constant_model(tmp_path / "e2e.onnx", table, metadata=meta)
    model = Model.load(path)
    assert model.layout.detect_format == "end2end"
    verdict = model.infer(BLACK)
    assert verdict.verdict == "NotOK" and verdict.label == "scratch"
    assert [(b.x1, b.y1, b.x2, b.y2, b.score) for b in verdict.boxes] == [  # type: ignore[comparison-overlap]
        (10, 10, 30, 30, pytest.approx(0.9)),
        (12, 12, 32, 32, pytest.approx(0.6)),
    ]
    table[0, :2, 4] = 0.0
    quiet = constant_model(tmp_path / "quiet.onnx", table, metadata=meta)
    assert Model.load(quiet).infer(BLACK).verdict == "OK"


def test_anchors_layout_of_two_classes_is_not_mistaken_for_end2end(tmp_path: Path) -> None:
    table = np.zeros((1, 6, 84), np.float32)  # 4 + 2 classes, 84 anchors
    path = constant_model(tmp_path / "anchors.onnx", table, metadata={"task": "detect"})
    assert Model.load(path).layout.detect_format == "anchors"


def test_segmentation_boxes_are_tightened_to_their_masks(tmp_path: Path) -> None:
    """One anchor, box (12, 9)-(52, 39) in input px, whose mask (protos at stride 4) covers
    proto cells rows 4-7, columns 6-9: the defect is at (24, 16)-(40, 32)."""
    nm, anchors = 2, 8
    output0 = np.zeros((1, 4 + 1 + nm, anchors), np.float32)
    output0[0, :4, 0] = [32, 24, 40, 30]  # cx, cy, w, h
    output0[0, 4, 0] = 0.8  # class score
    output0[0, 5:, 0] = [1.0, 0.0]  # mask coefficients
    protos = np.full((1, nm, 16, 16), -10.0, np.float32)
    protos[0, 0, 4:8, 6:10] = 10.0
    protos[0, 0, 0:2, 0:2] = 10.0  # outside the box: cropped away
    path = segment_model(tmp_path / "seg.onnx", output0, protos)
    model = Model.load(path)
    assert model.kind == "detect" and model.layout.detect_format == "segment"
    assert model.layout.protos_output == "output1"
    verdict = model.infer(BLACK)
    assert verdict.verdict == "NotOK" and verdict.label == "scratch"
    (box,) = verdict.boxes
    assert (box.x1, box.y1, box.x2, box.y2) == (24, 16, 40, 32)
    assert box.score == pytest.approx(0.8)
    output0[0, 5:, 0] = [0.0, 0.0]  # an empty mask (sigmoid 0.5 nowhere above): the box stands
    empty = Model.load(segment_model(tmp_path / "empty.onnx", output0, protos)).infer(BLACK)
    assert [(b.x1, b.y1, b.x2, b.y2) for b in empty.boxes] == [(12, 9, 52, 39)]


def test_tile_grid_covers_the_region_with_overlap() -> None:
    tiles = grid((0, 0, 160, 120), (64, 64), 0.2)
    xs = sorted({t[0] for t in tiles})
    ys = sorted({t[1] for t in tiles})
    assert xs == [0, 48, 96] and ys == [0, 28, 56]  # overlaps 16 and 36 px: at least 20 %
    assert all(t[2:] == (64, 64) for t in tiles)
    assert max(x + 64 for x in xs) == 160 and max(y + 64 for y in ys) == 120
    assert grid((10, 20, 50, 40), (64, 64)) == [(10, 20, 50, 40)]  # smaller than a tile
    with pytest.raises(ValueError):
        grid((0, 0, 100, 100), (64, 64), 1.0)


def test_merge_suppresses_the_same_defect_seen_by_two_tiles() -> None:
    a = Verdict("NotOK", 0.9, "spot", ("spot",), (Box(92, 52, 108, 68, 0.9, 0, "spot"),))
    b = Verdict("NotOK", 0.8, "spot", ("spot",), (Box(93, 52, 109, 68, 0.8, 0, "spot"),))
    c = Verdict("NotOK", 0.7, "spot", ("spot",), (Box(10, 10, 20, 20, 0.7, 0, "spot"),))
    merged = merge([a, Verdict("OK", 0.0), b, c])
    assert merged.verdict == "NotOK" and merged.score == 0.9
    assert [m.x1 for m in merged.boxes] == [92, 10]
    assert merge([Verdict("OK", 0.1), Verdict("OK", 0.2)]) == Verdict("OK", 0.2)


def test_a_large_frame_is_inspected_in_tiles(tmp_path: Path) -> None:
    """A 4x4 px white spot in a 640x640 frame: shrunk to the 64 px model it is a grey smear
    under the confidence; in 64 px tiles it is found, once, where it is."""
    frame = np.zeros((640, 640, 3), np.uint8)
    frame[300:304, 500:504] = 255
    path = bright_spot_model(tmp_path / "spot.onnx")
    whole = Model.load(path).infer(frame)
    assert whole.verdict == "OK"  # 4x4 px at 1/10 scale: 0.16 brightness
    tiled = Model.load(path, tile_overlap=0.2)
    prepared = tiled.prepare(frame)
    assert len(prepared.tiles) == 13 * 13
    verdict = tiled.predict(prepared)
    assert verdict.verdict == "NotOK"
    (box,) = verdict.boxes  # seen by up to four overlapping tiles, merged into one
    assert (box.x1, box.y1, box.x2, box.y2) == (492, 292, 508, 308)
    assert box.score == pytest.approx(1.0)
    # With an ROI, only its tiles: the spot outside it is not seen.
    assert tiled.infer(frame, roi=(0, 0, 320, 240)).verdict == "OK"


def test_cli_inspect_tile(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    frame = np.zeros((640, 640, 3), np.uint8)
    frame[300:304, 500:504] = 255
    cv2.imwrite(str(tmp_path / "big.png"), frame)
    path = bright_spot_model(tmp_path / "spot.onnx")
    runner = CliRunner()
    args = ["inspect", str(tmp_path / "big.png"), "--model", str(path), "--json"]
    assert '"verdict": "OK"' in runner.invoke(app, args).output
    tiled = runner.invoke(app, [*args, "--tile"])
    assert tiled.exit_code == 0, tiled.output
    assert '"verdict": "NotOK"' in tiled.output and "492.0" in tiled.output

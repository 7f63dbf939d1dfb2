"""The vision benchmark, run small: every stage measured, the JSON written, bad input refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import vision as entry
from vision import bench
from vision.model import Model


def test_smoke_run_writes_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "vision.json"
    code = bench.main(
        [
            "--frames",
            "6",
            "--threads",
            "1,2",
            "--sizes",
            "320x240",
            "--repeat",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    cases = result["cases"]
    detect = [c for c in cases if c["model"] == "detect-shaped.onnx"]
    assert [c["threads"] for c in detect] == [1, 2]
    bundled = bench.bundled_model()
    assert len(cases) == 2 * (2 if bundled is not None else 1)
    if bundled is None:
        assert any("no bundled model" in n for n in result["notes"])
    for case in cases:
        assert case["frame_size"] == [320, 240] and case["frames"] == 6
        for stage in ("decode", "infer", "pipeline"):
            figures = case[stage]
            assert figures["rate"] > 0
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        slower = min(case["decode"]["rate"], case["infer"]["rate"])
        assert case["ratio"] == pytest.approx(case["pipeline"]["rate"] / slower, rel=1e-2)
        assert case["meets_target"] == (case["ratio"] >= bench.TARGET_RATIO)
        both = case["alongside"]
        assert both["decode_rate"] > 0 and both["infer_rate"] > 0
        slower_both = min(both["decode_rate"], both["infer_rate"])
        assert case["ratio_alongside"] == pytest.approx(
            case["pipeline"]["rate"] / slower_both, rel=1e-2
        )
    assert result["host"]["opencv_threads"] == 1
    assert "pipeline >= 90%" in capsys.readouterr().out


def test_alongside_runs_both_loops_until_the_first_is_done(tmp_path: Path) -> None:
    model = Model.load(bench.detect_model(tmp_path / "d.onnx", imgsz=160))
    files = bench.write_frames(tmp_path / "f", (320, 240), 4)
    both = bench.alongside(model, files, 8)
    assert both.decode_rate > 0 and both.infer_rate > 0
    assert both.slower == min(both.decode_rate, both.infer_rate)


@pytest.mark.slow
def test_the_benchmark_is_package_code() -> None:
    # `lineside vision bench` from an installed package: nothing of benchmarks/ is imported.
    code = "import sys; sys.modules['benchmarks'] = None; import vision.bench; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert Path(bench.__file__).resolve().parent / "models" == bench.BUNDLED
    assert entry.RESULTS.parts[-3:] == ("benchmarks", "results", "vision.json")


def test_no_json_without_an_out_file(tmp_path: Path) -> None:
    model = bench.detect_model(tmp_path / "d.onnx", imgsz=160)
    args = ["--model", str(model), "--frames", "2", "--threads", "1", "--sizes", "160x120"]
    assert bench.main([*args, "--repeat", "1"]) == 0
    assert list(tmp_path.glob("*.json")) == []


def test_detect_shaped_model_is_read_as_ultralytics(tmp_path: Path) -> None:
    model = Model.load(bench.detect_model(tmp_path / "d.onnx", imgsz=160, classes=3))
    assert model.kind == "detect" and model.input_size == (160, 160)
    assert model.layout.names == ("defect0", "defect1", "defect2")
    output = next(iter(model.run(np.zeros((1, 3, 160, 160), np.float32)).values()))
    assert output.shape == (1, 7, 400)


def test_bad_arguments(tmp_path: Path) -> None:
    assert bench.main(["--model", str(tmp_path / "none.onnx"), "--no-json"]) == 2
    assert entry.main(["--model", str(tmp_path / "none.onnx"), "--no-json"]) == 2
    with pytest.raises(SystemExit):
        bench.main(["--frames", "1", "--no-json"])


def test_cli_bench(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    model = bench.detect_model(tmp_path / "d.onnx", imgsz=160)
    out = tmp_path / "r.json"
    args = ["vision", "bench", "--model", str(model), "--frames", "4", "--threads", "1"]
    done = CliRunner().invoke(app, [*args, "--sizes", "320x240", "--json-out", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads(out.read_text())["cases"][0]["model"] == "d.onnx"
    missing = CliRunner().invoke(app, ["vision", "bench", "--model", str(tmp_path / "x.onnx")])
    assert missing.exit_code == 2

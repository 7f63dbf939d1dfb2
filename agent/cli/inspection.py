"""Vision on the command line: `inspect` images with a model, and the `vision` group: fit a
model from good images, evaluate one, export a backbone, benchmark one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.cli.exits import Refused, refusing
from agent.cli.options import JsonOption
from agent.cli.output import console, err_console, print_json
from agent.extras import needs


def inspect(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders of images.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="The ONNX model file.")],
    adapter: Annotated[
        str, typer.Option("--adapter", help="auto, classify, detect or anomaly.")
    ] = "auto",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write annotated images to this folder.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Override the adapter's threshold.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="Inference threads.")] = 1,
    tile: Annotated[
        bool, typer.Option("--tile", help="Cut large images into model-sized tiles.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run an ONNX inspection model on images: verdicts as a table or JSON."""
    if adapter not in ("auto", "classify", "detect", "anomaly"):
        raise Refused(f"unknown adapter {adapter!r}: choose auto, classify, detect or anomaly")
    with needs("Vision", "vision"):
        from vision.inspect_cli import run as run_inspect

    code = run_inspect(
        paths,
        model,
        adapter=adapter,
        out=out,
        as_json=as_json,
        threshold=threshold,
        threads=max(threads, 1),
        tile=tile,
        stdout=sys.stdout,
        stderr=sys.stderr,
    )
    raise typer.Exit(code)


def _rate(text: str, option: str) -> float:
    """ "1%", "1 %" or "0.01" → 0.01; a clear error for anything else."""
    raw = text.strip()
    try:
        value = float(raw[:-1].strip()) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise Refused(f"{option} {text!r}: expected a rate such as 1% or 0.01") from None
    if not 0 < value < 1:
        raise Refused(f"{option} {text!r}: expected a rate between 0 % and 100 %")
    return value


def vision_fit(
    good: Annotated[Path, typer.Option("--good", help="Folder of images of good parts only.")],
    backbone: Annotated[
        Path,
        typer.Option("--backbone", help="ONNX feature backbone, or an ImageNet classifier to cut."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX model to write.")],
    method: Annotated[str, typer.Option("--method", help="gaussian or coreset.")] = "gaussian",
    size: Annotated[
        int | None, typer.Option("--size", help="Input size (px) for a dynamic backbone.")
    ] = None,
    percentile: Annotated[
        float, typer.Option("--percentile", help="Of good scores: the 0.5 boundary.")
    ] = 100.0,
    max_false_reject: Annotated[
        str | None,
        typer.Option(
            "--max-false-reject",
            help="Target share of good parts rejected, e.g. 1% (overrides --percentile).",
        ),
    ] = None,
    bad: Annotated[
        Path | None,
        typer.Option("--bad", help="Folder of defective images: report the escape rate."),
    ] = None,
) -> None:
    """Fit an anomaly model (anomalib layout) on good images, without PyTorch."""
    if method not in ("gaussian", "coreset"):
        raise Refused(f"unknown method {method!r}: choose gaussian or coreset")
    rate = None if max_false_reject is None else _rate(max_false_reject, "--max-false-reject")
    with needs("Vision", "vision"):
        from vision.fit import FitError
        from vision.fit import run as run_fit

    with refusing(FitError):
        result = run_fit(
            good,
            backbone,
            out,
            method=method,  # type: ignore[arg-type]
            size=size,
            percentile=percentile,
            max_false_reject=rate,
            bad=bad,
        )
    for problem in result.skipped:
        err_console.print(f"skipped: {problem}", markup=False, highlight=False, soft_wrap=True)
    calibration = (
        f"{result.folds}-fold out-of-fold scores"
        if result.folds
        else "the fitted images themselves (too few for folds: expect more false rejects)"
    )
    rejected = round(result.false_reject * result.calibrated_on)
    lines = [
        f"{result.path}: {result.method} head on {result.feature_shape} features of "
        f"{result.images} good images ({len(result.skipped)} skipped), threshold from "
        f"{calibration}, in {result.seconds:.1f} s",
        f"backbone: {result.backbone_cut}",
        f"false rejects on held-out good images: {result.false_reject:.1%} "
        f"({rejected} of {result.calibrated_on}); raw threshold {result.threshold:.4g}",
    ]
    if result.escape is not None:
        lines.append(
            f"escapes (defective images accepted): {result.escape:.1%} of {result.bad_images}"
        )
    lines.append(f"measure it: lineside vision evaluate {result.path} --good DIR --bad DIR")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def vision_evaluate(
    model: Annotated[Path, typer.Argument(help="The ONNX model to measure.")],
    good: Annotated[Path, typer.Option("--good", help="Folder of images of good parts.")],
    bad: Annotated[
        Path | None,
        typer.Option("--bad", help="Folder of defective images (one sub-folder per defect)."),
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option("--masks", help="Defect masks, laid out as --bad (white = defect)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for index.html, MODEL_CARD.md, evaluation.json."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """AUROC, false-reject and escape rates, pixel metrics and latency on labelled images."""
    with needs("Vision", "vision"):
        from vision.model import ModelError
        from vision.report import ReportError, lines
        from vision.report import run as run_report

    with refusing(ModelError, ReportError):
        report, folder = run_report(model, good, bad, masks, out)
    for problem in report.skipped:
        err_console.print(f"skipped: {problem}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        print_json(report.as_dict())
        return
    for line in [*lines(report), f"page and model card: {folder}/index.html, MODEL_CARD.md"]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def vision_backbone(
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX backbone to write.")],
    variant: Annotated[
        str, typer.Option("--variant", help="EfficientNet-Lite variant: lite0, lite1, lite2.")
    ] = "lite0",
    size: Annotated[
        int, typer.Option("--size", help="Fixed input size in px; 0 (default) for dynamic.")
    ] = 0,
) -> None:
    """Export an ImageNet feature backbone to ONNX for `vision fit` (no PyTorch needed)."""
    if size < 0:
        raise Refused(f"--size {size}: expected a size in px, or 0 for dynamic")
    with needs("Vision", "vision"):
        from vision.backbone import BackboneError, export

    with refusing(BackboneError):
        result = export(out, variant=variant, size=size or None)
    meta = {p.key: p.value for p in result.model.metadata_props}
    console.print(f"{out}: {result.describe()}", markup=False, highlight=False, soft_wrap=True)
    for key in ("weights_source", "weights_licence", "weights_sha256"):
        console.print(f"{key}: {meta[key]}", markup=False, highlight=False, soft_wrap=True)


def vision_bench(
    model: Annotated[Path, typer.Option("--model", "-m", help="The ONNX model file.")],
    frames: Annotated[int, typer.Option("--frames", help="JPEG frames per case.")] = 200,
    threads: Annotated[str, typer.Option("--threads", help="Inference threads to try.")] = "1,2",
    sizes: Annotated[str, typer.Option("--sizes", help="Frame sizes WxH.")] = "640x480,1280x1024",
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Write the results as JSON here.")
    ] = None,
) -> None:
    """Bare inference, bare decode+preprocess and full pipeline rates for one model."""
    with needs("Vision", "vision"):
        from vision.bench import main as run_bench

    argv = ["--model", str(model), "--frames", str(frames), "--threads", threads]
    argv += ["--sizes", sizes]
    argv += ["--out", str(json_out)] if json_out is not None else ["--no-json"]
    raise typer.Exit(run_bench(argv))

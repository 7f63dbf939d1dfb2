"""`lineside inspect PATH... --model FILE`: run a model on image files, print the verdicts.

Folders are read in name order (image files only). With `--out DIR` every image is written
there annotated: boxes with their class and score, and for anomaly models the map as a
heat-map overlay. Exit code 0 when every image was inspected, 1 when some could not be read,
2 when the model cannot be used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from vision.adapters import Verdict
from vision.frames import IMAGE_SUFFIXES, FrameError, read_image
from vision.model import Model, ModelError
from vision.preprocess import Image, Roi
from vision.tiles import DEFAULT_OVERLAP

COLOURS = {"OK": (60, 180, 75), "NotOK": (40, 40, 230), "NotDecidable": (0, 200, 255)}
EXIT_OK, EXIT_UNREADABLE, EXIT_BAD_MODEL = 0, 1, 2


def image_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given; folders expanded to their image files in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def annotate(image: Image, verdict: Verdict, roi: Roi | None = None) -> Image:
    """A copy of the frame with the heat map (anomaly), the boxes and the verdict drawn on."""
    out = image.copy()
    height, width = out.shape[:2]
    if verdict.anomaly_map is not None:
        x, y, w, h = roi if roi is not None else (0, 0, width, height)
        w, h = min(w, width - x), min(h, height - y)
        heat = cv2.resize(verdict.anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)
        colour = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
        region = out[y : y + h, x : x + w]
        out[y : y + h, x : x + w] = cv2.addWeighted(region, 0.6, colour, 0.4, 0)
    colour_of = COLOURS[verdict.verdict]
    for box in verdict.boxes:
        p1 = (round(box.x1), round(box.y1))
        p2 = (round(box.x2), round(box.y2))
        cv2.rectangle(out, p1, p2, colour_of, 2)
        text = f"{box.label} {box.score:.2f}"
        cv2.putText(
            out, text, (p1[0], max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour_of, 1
        )
    score = "" if math.isnan(verdict.score) else f" {verdict.score:.3f}"
    cv2.putText(
        out, f"{verdict.verdict}{score}", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour_of, 2
    )
    return out


def inspect_files(
    files: Sequence[Path],
    model: Model,
    *,
    out: Path | None = None,
    threshold: float | None = None,
    margin: int = 16,
    roi: Roi | None = None,
) -> list[dict[str, Any]]:
    """One row per file: the verdict (or the error), and the annotated image written to `out`."""
    rows: list[dict[str, Any]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    for path in files:
        row: dict[str, Any] = {"file": str(path)}
        try:
            frame = read_image(path)  # full size: the annotation is drawn on the frame itself
        except FrameError as exc:
            rows.append({**row, "verdict": "error", "error": str(exc)})
            continue
        try:
            verdict = model.infer(frame.image, roi=roi, threshold=threshold, margin=margin)
        except ValueError as exc:  # an ROI outside this frame
            rows.append({**row, "verdict": "error", "error": f"{path.name}: {exc}"})
            continue
        row.update(
            verdict=verdict.verdict,
            score=None if math.isnan(verdict.score) else round(verdict.score, 6),
            label=verdict.label,
            classes=list(verdict.classes),
            boxes=[b.as_dict() for b in verdict.boxes],
        )
        if out is not None:
            target = out / f"{path.stem}.annotated.jpg"
            cv2.imwrite(str(target), annotate(frame.image, verdict, roi))
            row["annotated"] = str(target)
        rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain aligned text, one line per image."""
    lines = [("file", "verdict", "score", "classes / error")]
    for r in rows:
        score = "" if r.get("score") is None else f"{r['score']:.3f}"
        detail = r.get("error") or ", ".join(r.get("classes", []))
        lines.append((Path(r["file"]).name, r["verdict"], score, detail))
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip()
        for a, b, c, d in lines
    )


def run(
    paths: Sequence[Path],
    model_path: Path,
    *,
    adapter: str = "auto",
    out: Path | None = None,
    as_json: bool = False,
    threshold: float | None = None,
    threads: int = 1,
    tile: bool = False,
    stdout: TextIO,
    stderr: TextIO,
) -> int:
    """The body of `lineside inspect`; returns the exit code."""
    try:
        overlap = DEFAULT_OVERLAP if tile else None
        model = Model.load(model_path, adapter=adapter, threads=threads, tile_overlap=overlap)
    except ModelError as exc:
        print(f"error: {exc}", file=stderr)
        return EXIT_BAD_MODEL
    missing = [p for p in paths if not p.exists()]
    files = image_files([p for p in paths if p.exists()])
    rows = [{"file": str(p), "verdict": "error", "error": f"{p}: not found"} for p in missing]
    rows += inspect_files(files, model, out=out, threshold=threshold)
    if as_json:
        print(
            json.dumps({"model": model.name, "adapter": model.kind, "images": rows}, indent=2),
            file=stdout,
        )
    else:
        print(table(rows), file=stdout)
    return EXIT_UNREADABLE if any(r["verdict"] == "error" for r in rows) else EXIT_OK

"""`lineside vision evaluate`: a model measured on a plant's own labelled images.

    lineside vision evaluate MODEL --good DIR --bad DIR [--masks DIR] [--out DIR]

`--good` holds images of good parts; `--bad` images of defective ones, in one sub-folder per
defect type if you like (`bad/scratch/`, `bad/dent/`: each gets its own line); `--masks`, when
given, mirrors `--bad` with one mask per defective image (same name, or `<name>_mask`, any image
type; white = defect), as MVTec AD lays them out. Every image runs through the model exactly as
inspection runs it (`Model.infer`: resize, adapter, border band, the model's own threshold), and
the report gives:

- image AUROC: the probability that a defective image scores above a good one (ties half);
  1.0 means some threshold separates them all, 0.5 is a coin;
- false-reject rate: the share of good images rejected at the model's threshold (NotOK or
  NotDecidable), and the escape rate: the share of defective images accepted (OK);
- per defect folder: its count, escape rate and AUROC against all good images;
- with masks and an anomaly map: pixel AUROC over every pixel of the good and the masked
  images, and PRO (MVTec's per-region overlap): for each defect region, the share of its pixels
  above a threshold, averaged over regions, integrated over thresholds whose false-positive
  rate on good pixels is at most 30 %, divided by 0.3 (1.0 is perfect). PRO weighs a small
  region as much as a large one, which pixel AUROC does not. Maps and masks are compared on a
  grid of at most `PIXEL_GRID`² cells;
- latency p50/p99 per image: preprocessing + inference + adapter (not the disk read);
- an HTML page with the good images that scored highest (the next false rejects) and the
  defective images that scored lowest (the escapes, or the nearest to escaping), annotated.

`card` writes a model card from the report and the model's own metadata (how it was fitted,
where its weights came from).
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.errors import LinesideError
from vision.evaluate import auroc
from vision.frames import IMAGE_SUFFIXES, FrameError, read_image
from vision.inspect_cli import annotate
from vision.model import Model

PIXEL_GRID = 128
PRO_MAX_FPR = 0.3
SHOWN = 6  # images per gallery on the HTML page
GOOD = "good"


class ReportError(LinesideError):
    """The folders cannot be evaluated: missing, empty or unreadable."""


@dataclass(slots=True)
class Scored:
    """One image through the model."""

    path: Path
    group: str  # GOOD, or the defect folder (the first sub-folder of --bad; "bad" when none)
    score: float
    rejected: bool
    heat: npt.NDArray[np.float32] | None = field(default=None, repr=False)
    mask: npt.NDArray[np.bool_] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DefectRow:
    group: str
    images: int
    escape: float
    auroc: float


@dataclass(frozen=True, slots=True)
class Report:
    model: str
    kind: str
    good: int
    bad: int
    auroc: float | None
    false_reject: float
    escape: float | None
    defects: tuple[DefectRow, ...]
    pixel_auroc: float | None
    pro: float | None
    masks: int  # defective images with a mask
    latency_p50_ms: float
    latency_p99_ms: float
    skipped: tuple[str, ...]
    worst_good: tuple[tuple[str, float], ...]  # (file, score), highest first
    hidden_bad: tuple[tuple[str, str, float], ...]  # (file, group, score), lowest first

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def images_in(folder: Path) -> list[Path]:
    """Image files in `folder` and its sub-folders, in name order."""
    if not folder.is_dir():
        raise ReportError(f"{folder}: not a folder of images")
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def group_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else "bad"


def mask_for(image: Path, bad: Path, masks: Path) -> Path | None:
    """MVTec layout: masks/<defect>/<name>_mask.png, or the same name with any image suffix."""
    folder = masks / image.parent.relative_to(bad)
    for stem in (image.stem, f"{image.stem}_mask"):
        for suffix in sorted(IMAGE_SUFFIXES):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _grid(heat: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    rows, cols = heat.shape
    scale = min(1.0, PIXEL_GRID / max(rows, cols))
    if scale == 1.0:
        return heat.astype(np.float32)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    out = np.asarray(cv2.resize(heat, size, interpolation=cv2.INTER_AREA), np.float32)
    return out


def score(
    model: Model,
    files: Sequence[tuple[Path, str]],
    *,
    margin: int = 16,
    masks: dict[Path, Path] | None = None,
) -> tuple[list[Scored], list[float], list[str]]:
    """Each (file, group) through the model: scored images, latencies (s), skipped files."""
    out: list[Scored] = []
    latencies: list[float] = []
    skipped: list[str] = []
    masks = masks or {}
    for path, group in files:
        try:
            frame = read_image(path, target=model.input_size)
        except FrameError as exc:
            skipped.append(str(exc))
            continue
        started = time.perf_counter()
        prepared = model.prepare(frame.image, decode_scale=frame.decode_scale)
        verdict = model.predict(prepared, margin=margin)
        latencies.append(time.perf_counter() - started)
        value = verdict.score if math.isfinite(verdict.score) else math.inf
        item = Scored(path, group, value, verdict.verdict != "OK")
        if verdict.anomaly_map is not None:
            item.heat = _grid(verdict.anomaly_map)
            mask_path = masks.get(path)
            if group == GOOD:
                item.mask = np.zeros(item.heat.shape, bool)
            elif mask_path is not None:
                raw = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
                if raw is None:
                    skipped.append(f"{mask_path}: not a readable mask")
                else:
                    rows, cols = item.heat.shape
                    resized = cv2.resize(raw, (cols, rows), interpolation=cv2.INTER_NEAREST)
                    item.mask = resized > 127
        out.append(item)
    return out, latencies, skipped


def pixel_auroc(items: Sequence[Scored]) -> float | None:
    """AUROC over the pixels of every image with a mask (good images: all normal)."""
    pairs = [(i.heat, i.mask) for i in items if i.heat is not None and i.mask is not None]
    if not pairs:
        return None
    values = np.concatenate([h.reshape(-1) for h, _ in pairs])
    labels = np.concatenate([m.reshape(-1) for _, m in pairs])
    if labels.all() or not labels.any():
        return None
    return auroc(values[~labels], values[labels])


def pro(items: Sequence[Scored], max_fpr: float = PRO_MAX_FPR, steps: int = 200) -> float | None:
    """Normalised area under the per-region-overlap curve up to `max_fpr` (MVTec AD's AU-PRO)."""
    pairs = [(i.heat, i.mask) for i in items if i.heat is not None and i.mask is not None]
    regions: list[npt.NDArray[np.float32]] = []
    normal: list[npt.NDArray[np.float32]] = []
    for heat, mask in pairs:
        assert heat is not None and mask is not None
        normal.append(heat[~mask])
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        regions += [heat[labels == r] for r in range(1, count)]
    if not regions or not normal:
        return None
    background = np.sort(np.concatenate(normal))
    everything = np.concatenate([background, *regions])
    thresholds = np.unique(np.quantile(everything, np.linspace(0, 1, steps)))[::-1]
    fprs, overlaps = [0.0], [0.0]
    for t in thresholds:
        fpr = 1.0 - np.searchsorted(background, t, side="right") / background.size
        fprs.append(float(fpr))
        overlaps.append(float(np.mean([np.mean(r > t) for r in regions])))
    fpr_a, pro_a = np.asarray(fprs), np.asarray(overlaps)
    order = np.argsort(fpr_a, kind="stable")
    fpr_a, pro_a = fpr_a[order], pro_a[order]
    if fpr_a[-1] < max_fpr:  # the curve ends early (ties at the map's floor): extend it flat
        fpr_a, pro_a = np.append(fpr_a, max_fpr), np.append(pro_a, pro_a[-1])
    at = float(np.interp(max_fpr, fpr_a, pro_a))
    keep = fpr_a <= max_fpr
    xs, ys = np.append(fpr_a[keep], max_fpr), np.append(pro_a[keep], at)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / max_fpr)


def summarise(
    model: Model, items: Sequence[Scored], latencies: Sequence[float], skipped: Sequence[str]
) -> Report:
    good = [i for i in items if i.group == GOOD]
    bad = [i for i in items if i.group != GOOD]
    if not good:
        raise ReportError("no readable good image: the false-reject rate needs some")
    good_scores = [i.score for i in good]
    rows = []
    for group in sorted({i.group for i in bad}):
        members = [i for i in bad if i.group == group]
        rows.append(
            DefectRow(
                group,
                len(members),
                round(float(np.mean([not i.rejected for i in members])), 4),
                round(auroc(good_scores, [i.score for i in members]), 4),
            )
        )
    ms = np.asarray(latencies, np.float64) * 1e3
    worst = sorted(good, key=lambda i: -i.score)[:SHOWN]
    hidden = sorted(bad, key=lambda i: i.score)[:SHOWN]
    pixel, region = pixel_auroc(items), pro(items)
    return Report(
        model=model.name,
        kind=model.kind,
        good=len(good),
        bad=len(bad),
        auroc=round(auroc(good_scores, [i.score for i in bad]), 4) if bad else None,
        false_reject=round(float(np.mean([i.rejected for i in good])), 4),
        escape=round(float(np.mean([not i.rejected for i in bad])), 4) if bad else None,
        defects=tuple(rows),
        pixel_auroc=None if pixel is None else round(pixel, 4),
        pro=None if region is None else round(region, 4),
        masks=sum(1 for i in bad if i.mask is not None),
        latency_p50_ms=round(float(np.percentile(ms, 50)), 2) if ms.size else math.nan,
        latency_p99_ms=round(float(np.percentile(ms, 99)), 2) if ms.size else math.nan,
        skipped=tuple(skipped),
        worst_good=tuple((str(i.path), round(i.score, 4)) for i in worst),
        hidden_bad=tuple((str(i.path), i.group, round(i.score, 4)) for i in hidden),
    )


def evaluate_folders(
    model: Model,
    good: Path,
    bad: Path | None = None,
    masks: Path | None = None,
    *,
    margin: int = 16,
) -> Report:
    good_files = images_in(good)
    if not good_files:
        raise ReportError(f"{good}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    files = [(p, GOOD) for p in good_files]
    mask_files: dict[Path, Path] = {}
    if bad is not None:
        bad_files = images_in(bad)
        if not bad_files:
            raise ReportError(f"{bad}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(p, group_of(p, bad)) for p in bad_files]
        if masks is not None:
            if not masks.is_dir():
                raise ReportError(f"{masks}: not a folder of masks")
            for p in bad_files:
                found = mask_for(p, bad, masks)
                if found is not None:
                    mask_files[p] = found
    items, latencies, skipped = score(model, files, margin=margin, masks=mask_files)
    return summarise(model, items, latencies, skipped)


# ---------------------------------------------------------------------------------------------
# What a person reads: a text table, the HTML page, the model card


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def lines(report: Report) -> list[str]:
    out = [
        f"{report.model} ({report.kind}): {report.good} good, {report.bad} defective images"
        + (f", {len(report.skipped)} skipped" if report.skipped else ""),
        f"image AUROC {_num(report.auroc)}; at the model's threshold: false rejects "
        f"{_pct(report.false_reject)}, escapes {_pct(report.escape)}",
    ]
    for row in report.defects:
        out.append(
            f"  {row.group}: {row.images} images, escapes {row.escape:.1%}, AUROC {row.auroc:.3f}"
        )
    if report.masks:
        out.append(
            f"pixel AUROC {_num(report.pixel_auroc)}, PRO (FPR ≤ 30 %) {_num(report.pro)} "
            f"on {report.masks} masked images"
        )
    out.append(f"latency per image p50 {report.latency_p50_ms} ms, p99 {report.latency_p99_ms} ms")
    return out


def _thumbnail(model: Model, path: Path, margin: int) -> str:
    """The image annotated as `lineside inspect --out` draws it, as a data: URL."""
    try:
        frame = read_image(path)
    except FrameError:
        return ""
    verdict = model.infer(frame.image, margin=margin)
    image = annotate(frame.image, verdict)
    height, width = image.shape[:2]
    scale = min(1.0, 320 / max(height, width))
    if scale < 1.0:
        image = np.asarray(cv2.resize(image, (round(width * scale), round(height * scale))))
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else ""


def page(report: Report, model: Model, *, margin: int = 16) -> str:
    """One self-contained HTML page: the figures and the two galleries."""

    def gallery(title: str, entries: Sequence[tuple[str, str]]) -> str:
        cells = "".join(
            f'<figure><img src="{_thumbnail(model, Path(f), margin)}" alt="">'
            f"<figcaption>{html.escape(Path(f).name)}<br>{html.escape(note)}</figcaption></figure>"
            for f, note in entries
        )
        return f"<h2>{html.escape(title)}</h2><div class=g>{cells or '<p>none</p>'}</div>"

    figures = "".join(f"<li>{html.escape(line)}</li>" for line in lines(report))
    worst = [(f, f"score {s:.3f}") for f, s in report.worst_good]
    hidden = [(f, f"{g}, score {s:.3f}") for f, g, s in report.hidden_bad]
    style = (
        "body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.4em}"
        "img{max-width:320px;display:block}figcaption{font-size:.85em}"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(report.model)}"
        f"</title><style>{style}</style></head><body><h1>{html.escape(report.model)}</h1>"
        f"<ul>{figures}</ul>"
        + gallery("Good parts that scored highest (the next false rejects)", worst)
        + gallery("Defective parts that scored lowest (escapes first)", hidden)
        + "<p>Scores are normalised: above 0.5 is rejected.</p></body></html>\n"
    )


def card(report: Report, metadata: dict[str, str]) -> str:
    """A model card in Markdown: what the model is (its metadata) and how it measured."""
    out = [
        f"# Model card: `{report.model}`",
        "",
        "Written by `lineside vision evaluate` from the images it was given.",
        "",
        "## How it measured",
        "",
        "| figure | value |",
        "|---|---|",
        f"| good images | {report.good} |",
        f"| defective images | {report.bad} |",
        f"| image AUROC | {_num(report.auroc)} |",
        f"| false rejects at the threshold | {_pct(report.false_reject)} |",
        f"| escapes at the threshold | {_pct(report.escape)} |",
        f"| pixel AUROC ({report.masks} masked images) | {_num(report.pixel_auroc)} |",
        f"| PRO, FPR ≤ 30 % | {_num(report.pro)} |",
        f"| latency p50 / p99 | {report.latency_p50_ms} / {report.latency_p99_ms} ms |",
        "",
    ]
    if report.defects:
        out += ["| defect folder | images | escapes | AUROC |", "|---|---|---|---|"]
        out += [
            f"| {r.group} | {r.images} | {r.escape:.1%} | {r.auroc:.3f} |" for r in report.defects
        ]
        out.append("")
    if metadata:
        out += ["## What it is (the model's metadata)", "", "| key | value |", "|---|---|"]
        out += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in sorted(metadata.items())]
        out.append("")
    return "\n".join(out)


def run(
    model_path: Path,
    good: Path,
    bad: Path | None,
    masks: Path | None,
    out: Path | None,
    *,
    margin: int = 16,
    threads: int = 1,
) -> tuple[Report, Path]:
    """The body of `lineside vision evaluate`: the report, and the folder its files went to."""
    model = Model.load(model_path, threads=threads)
    report = evaluate_folders(model, good, bad, masks, margin=margin)
    folder = out if out is not None else model_path.with_name(f"{model_path.stem}-evaluation")
    folder.mkdir(parents=True, exist_ok=True)
    metadata = dict(model.session.get_modelmeta().custom_metadata_map)
    (folder / "index.html").write_text(page(report, model, margin=margin), encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(card(report, metadata), encoding="utf-8")
    (folder / "evaluation.json").write_text(
        json.dumps(report.as_dict(), indent=1) + "\n", encoding="utf-8"
    )
    return report, folder

"""Train the bundled demo defect model on synthetic parts and export it to ONNX.

    python -m vision.training.train --out vision/models/lineside-surface.onnx

Needs the `train` extra (PyTorch, CPU). Steps, all deterministic from `--seed`:

1. generate training parts (vision.synthetic), leaving one defect type out entirely
   (`--hold-out`, default "stain") so the card can show how the model does on a defect it
   never saw; a share of the defective examples are cut-and-paste patches from other parts,
   a generic "something foreign here" signal that is not any of the named defect types;
2. train a small fully convolutional segmenter from scratch (no pretrained weights: none with
   a clear licence and provenance ship offline) on pixel masks plus an image-level loss;
3. set the decision threshold from *good* calibration parts only (their highest score);
4. export ONNX in the anomalib-2 layout with the scoring and the normalisation inside the
   graph, and store threshold, normalisation and provenance in `metadata_props`;
5. measure the exported file with onnxruntime (vision.evaluate) and print the card's tables.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from vision import evaluate
from vision.synthetic import DEFECTS_BY_SURFACE, SURFACES, render

# Scores ignore a band this wide at the image edge: in trials border effects caused most false
# alarms; the anomaly map is zero there as well so map and verdict agree.
ROI_MARGIN = 16
INPUT_SIZE = 256
MODEL_NAME = "lineside-surface"


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SurfaceNet(nn.Module):
    """A small encoder (stride 16, dilated) with one skip; defect logits at stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 16, 2), _conv(16, 32, 2), _conv(32, 32))  # /4
        self.mid = nn.Sequential(_conv(32, 48, 2), _conv(48, 48, dilation=2))  # /8
        self.deep = nn.Sequential(
            _conv(48, 64, 2), _conv(64, 64, dilation=2), _conv(64, 64, dilation=4)
        )  # /16
        self.fuse8 = _conv(64 + 48, 48)
        self.skip4 = nn.Conv2d(32, 16, 1)
        self.fuse4 = _conv(48 + 16, 24)
        self.head = nn.Conv2d(24, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Per-image standardisation: the exposure and the lighting level vary part to part.
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (std + 0.02)
        f4 = self.stem(x)
        f8 = self.mid(f4)
        f16 = self.deep(f8)
        up8 = F.interpolate(f16, size=f8.shape[2:], mode="bilinear", align_corners=False)
        g8 = self.fuse8(torch.cat([up8, f8], 1))
        up4 = F.interpolate(g8, size=f4.shape[2:], mode="bilinear", align_corners=False)
        g4 = self.fuse4(torch.cat([up4, self.skip4(f4)], 1))
        logits: torch.Tensor = self.head(g4)
        return logits


class Exported(nn.Module):
    """The deployed graph: segmenter → full-size map → ROI max → anomalib-2 normalisation."""

    def __init__(self, net: SurfaceNet, threshold: float, lo: float, hi: float) -> None:
        super().__init__()
        self.net = net
        # Plain floats: the export bakes them into the graph as constants.
        self.threshold = float(threshold)
        self.span = float(max(hi - lo, 1e-6))

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        # A 3x3 mean over the stride-4 logits: one noisy cell should not reject a part.
        logits = F.avg_pool2d(logits, 3, 1, 1, count_include_pad=False)
        full = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
        m = ROI_MARGIN
        inner = full[:, :, m:-m, m:-m]
        return inner, inner.amax(dim=(1, 2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner, score = self.raw(x)
        thr, span = self.threshold, self.span
        pred_score = torch.clamp((score - thr) / span + 0.5, 0.0, 1.0)
        m = ROI_MARGIN
        norm_map = torch.clamp((inner - thr) / span + 0.5, 0.0, 1.0)
        anomaly_map = F.pad(norm_map, (m, m, m, m), value=0.0)
        return pred_score, anomaly_map


# --- data ---------------------------------------------------------------------------------------


def _cut_paste(
    rng: np.random.Generator, host: np.ndarray, donor: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Paste an irregular patch of another part (rotated, rescaled) into `host`."""
    h, w = host.shape[:2]
    r = rng.uniform(6, 28)
    cx, cy = rng.uniform(40, w - 40), rng.uniform(40, h - 40)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi, 5)
    d = np.sqrt((xx - cx) ** 2 + ((yy - cy) * rng.uniform(0.3, 1.0)) ** 2) / r
    wobble = 1 + 0.2 * np.sin(np.arctan2(yy - cy, xx - cx)[..., None] * np.arange(1, 6) + angle)
    alpha = np.clip((wobble.mean(-1) - d) * 4, 0, 1).astype(np.float32)
    shift = rng.integers(-60, 60, 2)
    patch = np.roll(donor, tuple(int(s) for s in shift), axis=(0, 1)).astype(np.float32)
    out = host.astype(np.float32) * (1 - alpha[..., None]) + patch * alpha[..., None]
    return np.clip(out, 0, 255).astype(np.uint8), (alpha > 0.5).astype(np.uint8) * 255


def make_set(
    seed: int, n_good: int, n_bad: int, hold_out: str, cut_paste: float
) -> tuple[np.ndarray, np.ndarray]:
    """Images [N,256,256,3] RGB uint8 and masks [N,256,256] uint8 (0/255), balanced surfaces."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for k in range(n_good + n_bad):
        surface = SURFACES[k % len(SURFACES)]
        s = int(rng.integers(2**62))
        if k < n_good:
            sample = render(surface, None, s)
            image, mask = sample.image, sample.mask
        elif rng.random() < cut_paste:
            host = render(surface, None, s).image
            donor = render(SURFACES[int(rng.integers(3))], None, s + 1).image
            image, mask = _cut_paste(rng, host, donor)
        else:
            choices = [d for d in DEFECTS_BY_SURFACE[surface] if d != hold_out]
            sample = render(surface, choices[int(rng.integers(len(choices)))], s)
            image, mask = sample.image, sample.mask
        images.append(image[:, :, ::-1])
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def _batch(
    images: np.ndarray, masks: np.ndarray, idx: np.ndarray, rng: np.random.Generator, crop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i in idx:
        oy, ox = rng.integers(0, INPUT_SIZE - crop + 1, 2)
        x = images[i, oy : oy + crop, ox : ox + crop]
        y = masks[i, oy : oy + crop, ox : ox + crop]
        k = int(rng.integers(4))
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    xt = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    # Photometric jitter: gain and offset per image, so brightness alone is never a cue.
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, (len(idx), 1, 1, 1))).float()
    offset = torch.from_numpy(rng.uniform(-0.06, 0.06, (len(idx), 1, 1, 1))).float()
    xt = torch.clamp(xt * gain + offset, 0, 1)
    yt = torch.from_numpy(np.stack(ys)).float().unsqueeze(1) / 255.0
    return xt, yt


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Soft pixel targets at stride 4 (area share of defect pixels in each cell).
    t4 = F.avg_pool2d(target, 4)
    t4 = torch.clamp(t4 * 3.0, 0, 1)  # a thin scratch covers a small share of its cell
    pos = torch.tensor(6.0)
    pixel = F.binary_cross_entropy_with_logits(logits, t4, pos_weight=pos)
    # Image level: a smooth maximum over the interior must say "defect" iff the crop has one.
    m = ROI_MARGIN // 4
    inner = logits[:, :, m:-m, m:-m].flatten(1)
    smooth_max = torch.logsumexp(inner * 4.0, dim=1) / 4.0 - math.log(inner.shape[1]) / 4.0
    label = target[:, :, ROI_MARGIN:-ROI_MARGIN, ROI_MARGIN:-ROI_MARGIN].flatten(1).amax(1) > 0.5
    image = F.binary_cross_entropy_with_logits(smooth_max, label.float())
    return pixel + 0.5 * image


def train(
    net: SurfaceNet,
    images: np.ndarray,
    masks: np.ndarray,
    steps: int,
    batch: int,
    crop: int,
    seed: int,
    log_every: int = 100,
) -> None:
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    t0 = time.perf_counter()
    running = 0.0
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(images), batch)
        x, y = _batch(images, masks, idx, rng, crop)
        loss = _loss(net(x), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        running += loss.item()
        if step % log_every == 0:
            print(
                f"step {step}/{steps} loss {running / log_every:.4f} "
                f"{time.perf_counter() - t0:.0f}s",
                flush=True,
            )
            running = 0.0


@torch.no_grad()
def raw_scores(model: Exported, images: np.ndarray, batch: int = 16) -> np.ndarray:
    model.eval()
    out = []
    for k in range(0, len(images), batch):
        x = torch.from_numpy(images[k : k + batch]).permute(0, 3, 1, 2).float() / 255.0
        out.append(model.raw(x)[1].numpy())
    return np.concatenate(out)


def export(model: Exported, path: Path, metadata: dict[str, str]) -> None:
    model.eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["pred_score", "anomaly_map"],
        dynamic_axes={
            "input": {0: "N", 2: "H", 3: "W"},
            "pred_score": {0: "N"},
            "anomaly_map": {0: "N", 2: "H", 3: "W"},
        },
        opset_version=17,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vision.training.train", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--seed", type=int, default=1, help="training data and init seed")
    p.add_argument("--calib-seed", type=int, default=2, help="seed of the good calibration set")
    p.add_argument("--eval-seed", type=int, default=3, help="seed of the card's test set")
    p.add_argument("--hold-out", default="stain", help="defect type never shown in training")
    p.add_argument("--good", type=int, default=1200, help="good training images")
    p.add_argument("--defective", type=int, default=1200, help="defective training images")
    p.add_argument("--cut-paste", type=float, default=0.2, help="share of cut-paste defects")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=160, help="training crop size (px)")
    p.add_argument("--calib", type=int, default=150, help="good calibration images per surface")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-good", type=int, default=200, help="card: good images per surface")
    p.add_argument("--eval-per-defect", type=int, default=100, help="card: images per defect")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    images, masks = make_set(args.seed, args.good, args.defective, args.hold_out, args.cut_paste)
    print(f"data: {len(images)} images in {time.perf_counter() - t0:.0f}s", flush=True)

    net = SurfaceNet()
    print(f"parameters: {sum(q.numel() for q in net.parameters())}", flush=True)
    t1 = time.perf_counter()
    train(net, images, masks, args.steps, args.batch, args.crop, args.seed)
    train_s = time.perf_counter() - t1
    del images, masks

    # Threshold from good parts only: the highest calibration score.
    calib, _ = make_set(args.calib_seed, args.calib * len(SURFACES), 0, args.hold_out, 0.0)
    model = Exported(net, 0.0, 0.0, 1.0)
    good = raw_scores(model, calib)
    threshold = float(good.max())
    lo = float(np.percentile(good, 1))
    # Good parts land in [0, 0.5]; a score `threshold - lo` above the threshold reads 1.
    model = Exported(net, threshold, lo, threshold)
    metadata = {
        "model": MODEL_NAME,
        "task": "anomaly",
        "layout": "anomalib2",
        "input_size": f"{INPUT_SIZE},{INPUT_SIZE}",
        "color_order": "RGB",
        "input_range": "0,1",
        "image_threshold": f"{threshold:.6f}",
        "pixel_threshold": f"{threshold:.6f}",
        "min": f"{lo:.6f}",
        "max": f"{threshold:.6f}",
        "normalization": "clamp((x - image_threshold) / (max - min) + 0.5, 0, 1)",
        "roi_margin_px": str(ROI_MARGIN),
        "surfaces": ",".join(SURFACES),
        "held_out_defect": args.hold_out,
        "threshold_from": f"max score of {len(good)} good parts (seed {args.calib_seed})",
        "training": (
            f"python -m vision.training.train --out {args.out} --seed {args.seed} "
            f"--steps {args.steps} --batch {args.batch} --crop {args.crop} "
            f"--good {args.good} --defective {args.defective} --hold-out {args.hold_out} "
            f"--cut-paste {args.cut_paste}"
        ),
        "licence": "Apache-2.0; trained from scratch on procedurally generated images",
    }
    export(model, args.out, metadata)
    print(
        f"threshold {threshold:.4f} (good scores min {good.min():.4f} p1 {lo:.4f}); "
        f"train {train_s:.0f}s; wrote {args.out} ({args.out.stat().st_size} bytes)",
        flush=True,
    )

    result = evaluate.evaluate(args.out, args.eval_seed, args.eval_good, args.eval_per_defect)
    print(evaluate.table(result))
    print(json.dumps([r.__dict__ for r in result]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

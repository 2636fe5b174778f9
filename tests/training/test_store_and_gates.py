"""The store's versioning and atomic publish, the parity gate, and training augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from service.manifest import Artifacts, TensorSpec
from tests.training.conftest import train
from training import pipeline
from training.augment import random_shift
from training.errors import ParityError, TrainingError
from training.export import GraphSignature, export_all
from training.models import TabularClassifierGraph, mlp
from training.parity import check_parity, tiled_batches
from training.store import has_complete_version, next_version, staged_version_dir


def test_versions_count_up(tmp_path: Path) -> None:
    assert next_version(tmp_path, "iris") == 1
    (tmp_path / "iris" / "1").mkdir(parents=True)
    (tmp_path / "iris" / "7").mkdir()
    (tmp_path / "iris" / ".staging-8-abc").mkdir()
    assert next_version(tmp_path, "iris") == 8
    assert not has_complete_version(tmp_path, "iris")
    (tmp_path / "iris" / "7" / "model.json").write_text("{}")
    assert has_complete_version(tmp_path, "iris")


def _fail_while_staging(store: Path) -> None:
    with staged_version_dir(store, "m", 2) as staging:
        (staging / "model.onnx").write_text("half")
        raise RuntimeError("export broke")


def test_staged_version_is_published_only_on_success(tmp_path: Path) -> None:
    with staged_version_dir(tmp_path, "m", 1) as staging:
        (staging / "model.json").write_text("{}")
        assert not (tmp_path / "m" / "1").exists()
    assert (tmp_path / "m" / "1" / "model.json").is_file()
    assert (tmp_path / "m" / "1").stat().st_mode & 0o777 == 0o755
    with pytest.raises(RuntimeError, match="export broke"):
        _fail_while_staging(tmp_path)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]
    with pytest.raises(TrainingError, match="already exists"), staged_version_dir(tmp_path, "m", 1):
        pass


def test_failed_parity_fails_the_run_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def strict(module: Any, out_dir: Any, artifacts: Any, cases: Any, names: Any) -> Any:
        return check_parity(module, out_dir, artifacts, cases, names, tolerance=-1.0)

    monkeypatch.setattr(pipeline, "check_parity", strict)
    store = tmp_path / "store"
    with pytest.raises(ParityError, match="differs from eager PyTorch"):
        train("iris", "--model-store", store, "--epochs", "1")
    assert list((store / "iris").iterdir()) == []


def test_parity_gate_catches_a_mismatched_export(tmp_path: Path) -> None:
    torch.manual_seed(0)
    graph = TabularClassifierGraph(mlp([4, 8, 3]), [0.0] * 4, [1.0] * 4).eval()
    signature = GraphSignature(
        inputs=[TensorSpec(name="features", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
        dynamic_axes={"features": {0: "batch"}},
    )
    cases = tiled_batches(torch.randn(5, 4))
    assert [case[0].shape[0] for case in cases] == [1, 7, 32]
    artifacts = export_all(graph, cases[1], signature, tmp_path, pt2=False)
    assert artifacts == Artifacts(onnx="model.onnx", torchscript="model.pt", pt2=None)
    parity = check_parity(graph, tmp_path, artifacts, cases, signature.input_names)
    assert set(parity) == {"torchscript", "onnx"}
    first_layer = next(m for m in graph.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        first_layer.weight.add_(0.5)  # the eager model drifts away from what was exported
    with pytest.raises(ParityError, match="torchscript export differs"):
        check_parity(graph, tmp_path, artifacts, cases, signature.input_names)


def test_random_shift_moves_pixels_and_repeats_with_the_seed() -> None:
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    images[:, 0, 4, 4] = 255
    first = random_shift(images, 2, torch.Generator().manual_seed(1))
    again = random_shift(images, 2, torch.Generator().manual_seed(1))
    assert first.dtype == torch.uint8
    assert first.shape == images.shape
    assert torch.equal(first, again)
    assert (first.flatten(1).sum(dim=1) == 255).all()  # the dot moved, never cut off
    positions = {int(torch.argmax(image.flatten())) for image in first}
    assert len(positions) > 5
    assert all(abs(p // 8 - 4) <= 2 and abs(p % 8 - 4) <= 2 for p in positions)
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)

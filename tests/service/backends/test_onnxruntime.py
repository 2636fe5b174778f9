"""ONNX Runtime backend: provider fallback and load errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.backends.onnxruntime import OnnxRuntimeBackend, choose_providers
from service.errors import BackendError
from service.manifest import Manifest
from tests.tiny_models import classifier


def test_missing_providers_fall_back_to_cpu() -> None:
    available = ["CPUExecutionProvider"]
    assert choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"], available) == [
        "CPUExecutionProvider"
    ]
    assert choose_providers(
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
    ) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


async def test_cuda_request_runs_on_cpu_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = classifier(tmp_path)
    backend = OnnxRuntimeBackend(
        Manifest.read(directory), directory / "model.onnx", providers=["CUDAExecutionProvider"]
    )
    await backend.load()
    assert backend.providers == ["CPUExecutionProvider"]
    assert "skipped" in caplog.text
    outputs = await backend.infer({"features": np.zeros((2, 4), dtype=np.float32)})
    assert outputs["probabilities"].shape == (2, 3)
    await backend.close()


async def test_corrupt_file_is_a_backend_error(tmp_path: Path) -> None:
    directory = classifier(tmp_path)
    (directory / "model.onnx").write_bytes(b"garbage")
    backend = OnnxRuntimeBackend(Manifest.read(directory), directory / "model.onnx")
    with pytest.raises(BackendError, match="cannot load"):
        await backend.load()
    await backend.close()


@pytest.mark.parametrize(("spinning", "entry"), [(True, "1"), (False, "0")])
async def test_spinning_setting_reaches_the_session(
    tmp_path: Path, spinning: bool, entry: str
) -> None:
    from service.models.manifests import build_backend
    from service.settings import Settings

    directory = classifier(tmp_path)
    settings = Settings(intra_op_spinning=spinning, _env_file=None)  # type: ignore[call-arg]
    backend = build_backend(Manifest.read(directory), directory, settings)
    assert isinstance(backend, OnnxRuntimeBackend)
    await backend.load()
    options = backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    await backend.close()


@pytest.mark.parametrize(("default", "override", "entry"), [(False, True, "1"), (True, False, "0")])
async def test_spinning_per_model_overrides_the_default(
    tmp_path: Path, default: bool, override: bool, entry: str
) -> None:
    from service.models.manifests import build_backend
    from service.settings import Settings

    directory = classifier(tmp_path)
    manifest = Manifest.read(directory)
    settings = Settings(
        intra_op_spinning=default,
        intra_op_spinning_models={manifest.name: override, "other": default},
        _env_file=None,
    )  # type: ignore[call-arg]
    backend = build_backend(manifest, directory, settings)
    assert isinstance(backend, OnnxRuntimeBackend)
    await backend.load()
    options = backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    await backend.close()

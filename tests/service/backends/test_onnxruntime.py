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


@pytest.mark.parametrize(("after_run", "entry"), [(True, "0"), (False, "1")])
async def test_spinning_can_stop_when_the_last_run_returns(
    tmp_path: Path, after_run: bool, entry: str
) -> None:
    from service.models.manifests import build_backend
    from service.settings import Settings

    directory = classifier(tmp_path)
    settings = Settings(
        intra_op_spinning=True, intra_op_spinning_after_run=after_run, _env_file=None
    )  # type: ignore[call-arg]
    backend = build_backend(Manifest.read(directory), directory, settings)
    assert isinstance(backend, OnnxRuntimeBackend)
    await backend.load()
    options = backend.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.force_spinning_stop") == entry
    await backend.close()


def test_each_model_gets_its_own_spinning_and_the_shared_after_run() -> None:
    from service.backends.spinning import Spinning
    from service.settings import Settings

    settings = Settings(
        intra_op_spinning_models={"heavy": True},
        intra_op_spinning_after_run=False,
        _env_file=None,
    )  # type: ignore[call-arg]
    assert settings.spinning("heavy") == Spinning(within_runs=True, after_runs=False)
    assert settings.spinning("tiny") == Spinning(within_runs=False, after_runs=False)
    # By default: no spinning, and ONNX Runtime's own after-run behaviour once it is turned on.
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default.spinning("any") == Spinning(within_runs=False, after_runs=True)


async def test_a_triton_repository_model_takes_the_same_spinning(tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings
    from tests.conftest import wait_ready
    from tests.service.triton.models import model_folder, two_heads_model

    store = tmp_path / "store"
    for name in ("spins", "sleeps"):
        two_heads_model(model_folder(store, name, "max_batch_size: 4\n") / "1" / "model.onnx")
    settings = Settings(
        model_store=store,
        intra_op_spinning_models={"spins": True},
        intra_op_spinning_after_run=False,
        _env_file=None,
    )  # type: ignore[call-arg]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await wait_ready(app)
        for name in ("spins", "sleeps"):
            backend = app.state.dataplane.repository.serving(name).backend
            assert isinstance(backend, OnnxRuntimeBackend)
            options = backend.session.get_session_options()
            expected = settings.spinning(name).session_config()
            assert {key: options.get_session_config_entry(key) for key in expected} == expected
    assert settings.spinning("spins").within_runs and not settings.spinning("sleeps").within_runs

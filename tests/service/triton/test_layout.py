"""Model folders, bare files, and the backend fields picked from file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ModelConfigError
from service.triton.layout import complete_backend_fields, model_files
from service.triton.pbtxt import parse_config
from tests.service.triton.models import model_folder, two_heads_model


@pytest.mark.parametrize(
    ("filename", "backend", "platform"),
    [
        ("model.onnx", "onnxruntime", "onnxruntime_onnx"),
        ("model.pt", "pytorch", "pytorch_libtorch"),
        ("model.pt2", "pytorch", "torch_aoti"),
    ],
)
def test_file_in_the_first_version_picks_the_backend(
    tmp_path: Path, filename: str, backend: str, platform: str
) -> None:
    folder = model_folder(tmp_path, "net")
    (folder / "3").mkdir()
    (folder / "3" / filename).write_bytes(b"")
    files = model_files(folder)
    config = files.config
    complete_backend_fields(config, files.name, files.versions)
    assert (config.name, config.backend, config.platform) == ("net", backend, platform)
    assert config.default_model_filename == filename


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('platform: "onnxruntime_onnx"', ("onnxruntime", "onnxruntime_onnx", "model.onnx")),
        ('backend: "onnxruntime"', ("onnxruntime", "onnxruntime_onnx", "model.onnx")),
        ('platform: "libtorch"', ("pytorch", "libtorch", "model.pt")),
        ('backend: "pytorch"', ("pytorch", "pytorch_libtorch", "model.pt")),
        (
            'backend: "pytorch" default_model_filename: "model.pt2"',
            ("pytorch", "torch_aoti", "model.pt2"),
        ),
        ('platform: "torch_aoti"', ("pytorch", "torch_aoti", "model.pt2")),
        ('default_model_filename: "net.onnx"', ("onnxruntime", "onnxruntime_onnx", "net.onnx")),
        ('default_model_filename: "net.pt2"', ("pytorch", "torch_aoti", "net.pt2")),
    ],
)
def test_configured_fields_pick_the_backend(text: str, expected: tuple[str, str, str]) -> None:
    config = parse_config(text)
    complete_backend_fields(config, "net", {})
    assert (config.backend, config.platform, config.default_model_filename) == expected


def test_unknown_fields_are_left_for_validation(tmp_path: Path) -> None:
    config = parse_config('backend: "python"')
    complete_backend_fields(config, "net", {})
    assert (config.backend, config.platform, config.default_model_filename) == ("python", "", "")


def test_bare_file_is_a_model_with_one_version(tmp_path: Path) -> None:
    path = two_heads_model(tmp_path / "mounted" / "model.onnx")
    files = model_files(path)
    assert files.name == "model"
    assert dict(files.versions) == {"1": path.parent}
    assert files.config.default_model_filename == "model.onnx"
    assert model_files(path, "scorer").name == "scorer"


def test_a_file_we_do_not_serve(tmp_path: Path) -> None:
    path = tmp_path / "model.plan"
    path.write_bytes(b"")
    with pytest.raises(ModelConfigError, match=r"model.plan: not a model file we serve"):
        model_files(path)
    with pytest.raises(ModelConfigError, match="no such model file or folder"):
        model_files(tmp_path / "absent")

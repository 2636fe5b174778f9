"""One model's files: a Triton model folder, or a bare model file; and the backend fields
(`backend`, `platform`, `default_model_filename`) filled in from the file names.

A model folder is `<model>/[config.pbtxt]` with numeric version folders, each holding the
model file: `model.onnx`, `model.pt` (TorchScript), `model.pt2`, or the configuration's
`default_model_filename`. A bare file (`/mnt/models/model.onnx`) is a model of its own: one
version, "1", whose folder is the file's folder.

The backend fields follow Triton's core (`AutoCompleteBackendFields`): a platform or file
name we know picks the backend, else the first version folder's files do. `model.pt2` is
Triton's `pytorch` backend on platform `torch_aoti`; such an archive may hold an
AOTInductor package (what Triton serves) or a `torch.export` program (what we can also read).
Beyond Triton, a `default_model_filename` with a known suffix (`net.onnx`) picks the backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tritonclient.grpc.model_config_pb2 import ModelConfig

from service.errors import ModelConfigError
from service.triton.pbtxt import CONFIG_FILE, read_config
from service.triton.versions import version_folders

Runtime = Literal["onnxruntime", "torchscript", "pt2"]
"""Which of the gateway's runtimes serves a model (the `backend` setting's names)."""


@dataclass(frozen=True, slots=True)
class Platform:
    """One kind of model file we serve, in Triton's terms."""

    backend: str
    platform: str
    filename: str
    runtime: Runtime


ONNX = Platform("onnxruntime", "onnxruntime_onnx", "model.onnx", "onnxruntime")
TORCHSCRIPT = Platform("pytorch", "pytorch_libtorch", "model.pt", "torchscript")
PT2 = Platform("pytorch", "torch_aoti", "model.pt2", "pt2")
PLATFORMS = (ONNX, TORCHSCRIPT, PT2)
_BY_PLATFORM = {p.platform: p for p in PLATFORMS} | {"libtorch": TORCHSCRIPT}
_BY_SUFFIX = {Path(p.filename).suffix: p for p in PLATFORMS}


@dataclass(frozen=True)
class ModelFiles:
    """What is on disk for one model, before any configuration is completed."""

    name: str
    directory: Path
    """The model folder: label files are found here (Triton's place for them)."""
    config: ModelConfig
    """`config.pbtxt` as written; empty when there is none. Do not mutate: copy it."""
    config_file: Path | None
    versions: Mapping[str, Path]
    """Every version folder, in numeric order."""


def model_files(path: Path, name: str | None = None) -> ModelFiles:
    """Read a model folder or a bare model file. `name` defaults to the folder's name, or
    the bare file's stem."""
    if path.is_file():
        platform = _BY_SUFFIX.get(path.suffix)
        if platform is None:
            known = ", ".join(sorted(_BY_SUFFIX))
            raise ModelConfigError(f"{path.name}: not a model file we serve ({known})")
        config = ModelConfig(default_model_filename=path.name)
        return ModelFiles(name or path.stem, path.parent, config, None, {"1": path.parent})
    if not path.is_dir():
        raise ModelConfigError(f"{path}: no such model file or folder")
    config_file = path / CONFIG_FILE
    has_config = config_file.is_file()
    config = read_config(config_file) if has_config else ModelConfig()
    return ModelFiles(
        name or path.name,
        path,
        config,
        config_file if has_config else None,
        version_folders(path),
    )


def complete_backend_fields(config: ModelConfig, name: str, versions: Mapping[str, Path]) -> None:
    """Fill `name`, `backend`, `platform` and `default_model_filename` where missing.

    Fields naming something we do not serve (a TensorRT plan, `backend: "python"`) are left
    as written: `check_servable` refuses them with their field's name."""
    if not config.name:
        config.name = name
    platform = _platform_from_fields(config) or _platform_from_files(config, versions)
    if platform is None:
        return
    if not config.backend:
        config.backend = platform.backend
    if not config.platform:
        config.platform = platform.platform
    if not config.default_model_filename:
        config.default_model_filename = platform.filename


def served_platform(config: ModelConfig) -> Platform:
    """The platform of a configuration whose backend fields are complete."""
    platform = _BY_PLATFORM.get(config.platform)
    if platform is None:
        raise ModelConfigError(
            f"platform: {config.platform or '(none)'!r} is not one we serve "
            f"({', '.join(sorted(_BY_PLATFORM))})"
        )
    return platform


def _platform_from_fields(config: ModelConfig) -> Platform | None:
    if config.platform:
        return _BY_PLATFORM.get(config.platform)
    filename = config.default_model_filename
    if config.backend == ONNX.backend:
        return ONNX
    if config.backend == TORCHSCRIPT.backend:
        # Triton: the pytorch backend means LibTorch unless the platform or file says AOTI.
        return PT2 if filename == PT2.filename or filename.endswith(".pt2") else TORCHSCRIPT
    if config.backend or not filename:
        return None
    return _BY_SUFFIX.get(Path(filename).suffix)


def _platform_from_files(config: ModelConfig, versions: Mapping[str, Path]) -> Platform | None:
    if config.backend or config.platform or config.default_model_filename or not versions:
        return None
    first = next(iter(versions.values()))  # as Triton: only the first version folder
    for platform in PLATFORMS:
        if (first / platform.filename).is_file():
            return platform
    return None

"""From a model folder or file to everything the loader needs: the completed configuration
(Triton's protobuf, for the configuration endpoints), its typed view, and the version files.

    model = resolve_model(Path("store/mymodel"))
    model.serving.max_batch_size, model.serving.inputs, model.versions[-1].model_file
    model.pbtxt()          # config.pbtxt text
    model.config_json()    # GET /v2/models/mymodel/config

Steps, each raising `ModelConfigError` with the field's name: read `config.pbtxt`; fill the
backend fields from the file names; refuse what we cannot serve; pick the versions; complete
inputs, outputs and batching from the newest version's file; check the tensors; write
Triton's defaults; read the labels; build the typed view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonclient.grpc.model_config_pb2 import ModelConfig

from service.errors import ModelConfigError
from service.triton.completion import complete_from_model
from service.triton.json_form import config_json
from service.triton.labels import read_labels
from service.triton.layout import (
    PLATFORMS,
    ModelFiles,
    complete_backend_fields,
    model_files,
    served_platform,
)
from service.triton.normalization import normalize
from service.triton.pbtxt import render_pbtxt
from service.triton.validation import check_servable, check_tensors
from service.triton.versions import missing_versions, versions_to_serve
from service.triton.view import ServingConfig, serving_view


@dataclass(frozen=True, slots=True)
class ServedVersion:
    version: str
    directory: Path
    model_file: Path


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    directory: Path
    config: ModelConfig
    """Completed and normalized; shared, so copy it (`CopyFrom`) before changing anything."""
    serving: ServingConfig
    versions: tuple[ServedVersion, ...]
    """The versions the version policy serves, in numeric order (the newest last)."""
    missing_versions: tuple[str, ...] = ()
    """Versions a `specific` policy lists without a folder; Triton logs them as errors."""

    def pbtxt(self) -> str:
        return render_pbtxt(self.config)

    def config_json(self) -> dict[str, Any]:
        return config_json(self.config)


def resolve_model(
    path: Path, *, name: str | None = None, gpus: Sequence[int] = ()
) -> ResolvedModel:
    """Resolve a Triton model folder or a bare model file (`model.onnx`, `model.pt2`).

    `name` defaults to the folder's name or the file's stem; `gpus` are the device ids this
    process may use (none: every instance group runs on the CPU)."""
    files = model_files(path, name)
    try:
        return _resolve(files, gpus)
    except ModelConfigError as error:
        raise ModelConfigError(f"model {files.name!r}: {error.message}") from None


def _resolve(files: ModelFiles, gpus: Sequence[int]) -> ResolvedModel:
    config = ModelConfig()
    config.CopyFrom(files.config)
    if config.name and config.name != files.name:
        raise ModelConfigError(
            f"name: {config.name!r} in {files.config_file} differs from the folder's name"
        )
    complete_backend_fields(config, files.name, files.versions)
    check_servable(config)
    if not config.platform:
        raise ModelConfigError(_no_model_file(files))
    platform = served_platform(config)
    chosen = versions_to_serve(config.version_policy, files.versions)
    served = []
    for version in chosen:
        directory = files.versions[version]
        model_file = directory / config.default_model_filename
        if not model_file.is_file():
            raise ModelConfigError(f"version {version}: {model_file.name} not found in {directory}")
        served.append(ServedVersion(version, directory, model_file))
    newest = served[-1]
    complete_from_model(config, newest.model_file, platform)
    check_tensors(config)
    normalize(config, gpus)
    labels = {
        output.name: read_labels(output.label_filename, files.directory, newest.directory)
        for output in config.output
        if output.label_filename
    }
    return ResolvedModel(
        name=files.name,
        directory=files.directory,
        config=config,
        serving=serving_view(config, files.directory, labels),
        versions=tuple(served),
        missing_versions=tuple(missing_versions(config.version_policy, files.versions)),
    )


def _no_model_file(files: ModelFiles) -> str:
    known = ", ".join(platform.filename for platform in PLATFORMS)
    if not files.versions:
        return f"no version folder (a sub-folder named by a number, like 1/) in {files.directory}"
    version, folder = next(iter(files.versions.items()))
    found = sorted(child.name for child in folder.iterdir())
    return (
        f"version {version} holds no model file we serve ({known}) and config.pbtxt names "
        f"no platform; found: {found}"
    )

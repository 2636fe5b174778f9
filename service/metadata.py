"""Server and model metadata as the Open Inference Protocol defines them, for REST and gRPC."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.repository import ModelVersion

SERVER_NAME = "model-serving-gateway"
EXTENSIONS = ("binary_tensor_data", "model_repository", "parameters")
PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "pt2": "pytorch_aoti",
    "torchserve": "torchserve",
}


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(model: ModelVersion, versions: list[str]) -> dict[str, Any]:
    """Name, versions, platform and tensors; a version that did not load has no tensors."""
    loaded = model.loaded
    if loaded is None:
        return {
            "name": model.name,
            "versions": versions,
            "platform": "",
            "inputs": [],
            "outputs": [],
        }
    backend = loaded.backend.name
    return {
        "name": model.name,
        "versions": versions,
        "platform": PLATFORMS.get(backend, backend),
        "inputs": [spec.model_dump() for spec in loaded.processor.input_specs],
        "outputs": [spec.model_dump() for spec in loaded.manifest.outputs],
        "parameters": {
            "task": loaded.manifest.task.value,
            "max_batch_size": loaded.batcher.max_batch_size,
            "labels": loaded.manifest.labels,
            "state": model.state.value,
        },
    }

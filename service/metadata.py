"""Server and model metadata as the Open Inference Protocol defines them, for REST and gRPC."""

from __future__ import annotations

from typing import Any

from service import __version__
from service.manifest import Manifest, SeriesPreprocessing, TabularPreprocessing, ValueRange
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
            **input_parameters(loaded.manifest),
        },
    }


def input_parameters(manifest: Manifest) -> dict[str, Any]:
    """What a client needs to build a sensible input: tabular features with their training
    ranges (raw units), a forecaster's window and horizon."""
    pre = manifest.preprocessing
    if isinstance(pre, TabularPreprocessing):
        ranges: list[ValueRange | None] = [*(pre.feature_ranges or [])] or [None] * len(
            pre.feature_names
        )
        features = [
            {"name": name, **({"min": r.min, "max": r.max} if r else {})}
            for name, r in zip(pre.feature_names, ranges, strict=True)
        ]
        extra: dict[str, Any] = {"features": features}
        if pre.target_range is not None:
            extra["target_range"] = [pre.target_range.min, pre.target_range.max]
        return extra
    if isinstance(pre, SeriesPreprocessing):
        extra = {"window": pre.window, "horizon": pre.horizon}
        if pre.value_range is not None:
            extra["value_range"] = [pre.value_range.min, pre.value_range.max]
        return extra
    return {}

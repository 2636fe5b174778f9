"""Our own `model.json` models described as a Triton `ModelConfig`, for the configuration
endpoints: what a Triton client reads before building its requests."""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig

from service.manifest import Manifest, TensorSpec
from service.triton import datatypes
from service.triton.layout import PLATFORMS
from service.triton.normalization import normalize

_BACKENDS = {platform.platform: platform.backend for platform in PLATFORMS}


def config_from_manifest(manifest: Manifest, platform: str, max_batch_size: int) -> ModelConfig:
    """The manifest's tensors (their first dimension is the batch: it leaves `dims` when
    `max_batch_size` > 0), dynamic batching as the gateway does it, the task and labels as
    `parameters`, and Triton's defaults. `platform` is Triton's name (`onnxruntime_onnx`);
    `max_batch_size` the one the gateway applies."""
    config = ModelConfig(
        name=manifest.name,
        platform=platform,
        backend=_BACKENDS.get(platform, ""),
        max_batch_size=max_batch_size,
    )
    batching = max_batch_size > 0
    for spec in manifest.inputs:
        config.input.add(name=spec.name, data_type=_data_type(spec), dims=_dims(spec, batching))
    for spec in manifest.outputs:
        config.output.add(name=spec.name, data_type=_data_type(spec), dims=_dims(spec, batching))
    if batching:
        config.dynamic_batching.SetInParent()
    config.parameters["task"].string_value = manifest.task.value
    config.version_policy.all.SetInParent()  # the gateway serves every manifest version
    normalize(config)
    return config


def _data_type(spec: TensorSpec) -> int:
    return int(DataType.Value(datatypes.config_type(spec.datatype)))


def _dims(spec: TensorSpec, batching: bool) -> list[int]:
    dims = spec.shape[1:] if batching else spec.shape
    return dims or [1]

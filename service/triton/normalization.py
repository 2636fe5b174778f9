"""The defaults Triton's core writes into every configuration (`NormalizeModelConfig`,
`NormalizeInstanceGroup`), so that the configuration endpoint answers what Triton would:

- `version_policy`: latest 1;
- `dynamic_batching.preferred_batch_size`: [max_batch_size] when batching;
- `optimization.input_pinned_memory` / `output_pinned_memory`: enabled;
- one instance group when none is given; each group named `<model>_<i>`, `KIND_AUTO` resolved
  to GPU when GPUs are given (and all of its `gpus` exist) else CPU, `count` 1 (2 for
  ONNX Runtime on the CPU, Triton's choice), `gpus` every GPU for a GPU group.
"""

from __future__ import annotations

from collections.abc import Sequence

from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from service.errors import ModelConfigError

_CPU_COUNT_2_BACKENDS = ("onnxruntime", "tensorflow")


def normalize(config: ModelConfig, gpus: Sequence[int] = ()) -> None:
    """Write Triton's defaults into a completed configuration; `gpus` are the device ids
    this process can use."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if (
        config.HasField("dynamic_batching")
        and not config.dynamic_batching.preferred_batch_size
        and config.max_batch_size > 0
    ):
        config.dynamic_batching.preferred_batch_size.append(config.max_batch_size)
    if not config.optimization.HasField("input_pinned_memory"):
        config.optimization.input_pinned_memory.enable = True
    if not config.optimization.HasField("output_pinned_memory"):
        config.optimization.output_pinned_memory.enable = True
    _normalize_instance_groups(config, gpus)


def _normalize_instance_groups(config: ModelConfig, gpus: Sequence[int]) -> None:
    if not config.instance_group:
        config.instance_group.add(name=config.name)
    available = set(gpus)
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == ModelInstanceGroup.KIND_AUTO:
            on_gpu = bool(available) and set(group.gpus) <= available
            group.kind = ModelInstanceGroup.KIND_GPU if on_gpu else ModelInstanceGroup.KIND_CPU
        if group.count < 1:
            cpu_default = 2 if config.backend in _CPU_COUNT_2_BACKENDS else 1
            group.count = cpu_default if group.kind == ModelInstanceGroup.KIND_CPU else 1
        if group.kind == ModelInstanceGroup.KIND_GPU:
            if not available:
                raise ModelConfigError(
                    f"instance_group {group.name!r}: KIND_GPU, but no GPU is available"
                )
            if not group.gpus:
                group.gpus.extend(sorted(available))
            absent = [gpu for gpu in group.gpus if gpu not in available]
            if absent:
                raise ModelConfigError(
                    f"instance_group {group.name!r}: gpus {absent} are not available "
                    f"(available: {sorted(available)})"
                )

"""What the gateway cannot honour in a configuration, refused with the field's name.

A refused model is not servable; the loader reports it with this reason and the other models
serve. Refused: ensembles, backends and platforms other than ONNX Runtime and PyTorch,
sequence batching (for now), and the fields whose meaning we would silently drop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from tritonclient.grpc.model_config_pb2 import (
    DataType,
    ModelConfig,
    ModelInput,
    ModelInstanceGroup,
    ModelOutput,
)

from service.errors import ModelConfigError
from service.triton.datatypes import served_types

WILDCARD = -1

ONNX_ACCELERATORS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}
"""`gpu_execution_accelerator` names (Triton's ONNX Runtime backend) -> provider names."""
ONNX_CPU_ACCELERATORS = {"openvino": "OpenVINOExecutionProvider"}
"""`cpu_execution_accelerator` names -> provider names."""

THREAD_PARAMETERS = {
    "onnxruntime": ("intra_op_thread_count", "inter_op_thread_count"),
    "pytorch": ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT"),
}
"""`parameters` keys of each Triton backend that set the runtime's intra/inter-op threads."""

_SERVED_BACKENDS = ("onnxruntime", "pytorch")


def check_servable(config: ModelConfig) -> None:
    """Refuse what we cannot honour; the message names the field."""
    if config.platform == "ensemble" or config.HasField("ensemble_scheduling"):
        raise ModelConfigError("ensemble_scheduling: ensembles are not served")
    if config.backend and config.backend not in _SERVED_BACKENDS:
        raise ModelConfigError(
            f"backend: {config.backend!r} is not served (served: {', '.join(_SERVED_BACKENDS)})"
        )
    if config.HasField("sequence_batching"):
        raise ModelConfigError("sequence_batching: sequence batching is not served yet")
    if config.batch_input or config.batch_output:
        field = "batch_input" if config.batch_input else "batch_output"
        raise ModelConfigError(f"{field}: batch inputs and outputs are not served")
    if config.model_transaction_policy.decoupled:
        raise ModelConfigError(
            "model_transaction_policy.decoupled: decoupled models are not served"
        )
    if config.response_cache.enable:
        raise ModelConfigError("response_cache: the response cache is not served")
    if config.dynamic_batching.priority_queue_policy:
        raise ModelConfigError(
            "dynamic_batching.priority_queue_policy: per-priority queue policies are not "
            "served (default_queue_policy is)"
        )
    for group in config.instance_group:
        if group.kind == ModelInstanceGroup.KIND_MODEL:
            raise ModelConfigError(f"instance_group {group.name!r}: KIND_MODEL is not served")
        if group.secondary_devices or group.host_policy or group.HasField("rate_limiter"):
            raise ModelConfigError(
                f"instance_group {group.name!r}: secondary_devices, host_policy and "
                "rate_limiter are not served"
            )
    _check_accelerators(config)
    _check_thread_parameters(config)
    for tensor in config.input:
        if tensor.is_shape_tensor or tensor.allow_ragged_batch or tensor.is_non_linear_format_io:
            raise ModelConfigError(
                f"input {tensor.name!r}: is_shape_tensor, allow_ragged_batch and "
                "is_non_linear_format_io are not served"
            )
    for output in config.output:
        if output.is_shape_tensor or output.is_non_linear_format_io:
            raise ModelConfigError(
                f"output {output.name!r}: is_shape_tensor and is_non_linear_format_io are not "
                "served"
            )


def check_tensors(config: ModelConfig) -> None:
    """The inputs and outputs of a completed configuration, checked as Triton checks them."""
    if not config.input:
        raise ModelConfigError("input: the configuration names no input")
    if not config.output:
        raise ModelConfigError("output: the configuration names no output")
    if config.max_batch_size < 0:
        raise ModelConfigError("max_batch_size: must be 0 (no batching) or more")
    _unique("input", (tensor.name for tensor in config.input))
    _unique("output", (tensor.name for tensor in config.output))
    for tensor in config.input:
        _check_tensor("input", tensor, config.max_batch_size)
        if tensor.optional and config.max_batch_size > 0:
            raise ModelConfigError(
                f"input {tensor.name!r}: optional inputs are not served for models that "
                "support batching (max_batch_size > 0)"
            )
    for output in config.output:
        _check_tensor("output", output, config.max_batch_size)
    _check_warmup(config)


def _check_warmup(config: ModelConfig) -> None:
    inputs = {tensor.name for tensor in config.input}
    for sample in config.model_warmup:
        where = f"model_warmup {sample.name!r}"
        if config.max_batch_size > 0 and not 1 <= sample.batch_size <= config.max_batch_size:
            raise ModelConfigError(
                f"{where}: batch_size must be between 1 and max_batch_size "
                f"{config.max_batch_size} (got {sample.batch_size})"
            )
        for name, given in sample.inputs.items():
            if name not in inputs:
                raise ModelConfigError(f"{where}: input {name!r} is not an input of the model")
            type_name = DataType.Name(given.data_type)
            if type_name not in served_types():
                raise ModelConfigError(
                    f"{where}: input {name!r}: data_type {type_name} is not served"
                )


def _check_tensor(kind: str, tensor: ModelInput | ModelOutput, max_batch_size: int) -> None:
    if not tensor.name:
        raise ModelConfigError(f"{kind}: must specify 'name'")
    where = f"{kind} {tensor.name!r}"
    type_name = DataType.Name(tensor.data_type)
    if tensor.data_type == DataType.TYPE_INVALID:
        raise ModelConfigError(f"{where}: must specify 'data_type'")
    if type_name not in served_types():
        raise ModelConfigError(f"{where}: data_type {type_name} is not served")
    if not tensor.dims:
        raise ModelConfigError(f"{where}: must specify 'dims'")
    _check_dims(where, "dims", tensor.dims)
    if not tensor.HasField("reshape"):
        return
    shape = tensor.reshape.shape
    if not shape and max_batch_size == 0:
        raise ModelConfigError(
            f"{where}: reshape: cannot be empty for a model without batching "
            "(scalar tensors are not supported)"
        )
    _check_dims(where, "reshape", shape)
    if not _same_size(tensor.dims, shape):
        raise ModelConfigError(
            f"{where}: reshape {list(shape)} holds a different number of elements than "
            f"dims {list(tensor.dims)}"
        )


def _check_dims(where: str, field: str, dims: Iterable[int]) -> None:
    for dim in dims:
        if dim < 1 and dim != WILDCARD:
            raise ModelConfigError(
                f"{where}: {field}: dimension must be integer >= 1, or -1 to indicate a "
                f"variable-size dimension (got {dim})"
            )


def _same_size(dims: Sequence[int], reshape: Sequence[int]) -> bool:
    """Equal element counts; with -1s, equal counts between each pair of -1s (Triton's rule:
    [2, 4, -1, 6] may become [8, -1, 1, 6]). An empty reshape takes one element."""
    if not reshape:
        return WILDCARD not in dims and math.prod(dims) == 1
    return _segments(dims) == _segments(reshape)


def _segments(dims: Sequence[int]) -> list[int]:
    counts = [1]
    for dim in dims:
        if dim == WILDCARD:
            counts.append(1)
        else:
            counts[-1] *= dim
    return counts


def _unique(kind: str, names: Iterable[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelConfigError(f"{kind} {name!r}: named twice")
        seen.add(name)


def _check_accelerators(config: ModelConfig) -> None:
    accelerators = config.optimization.execution_accelerators
    chosen = [(a.name, ONNX_ACCELERATORS) for a in accelerators.gpu_execution_accelerator] + [
        (a.name, ONNX_CPU_ACCELERATORS) for a in accelerators.cpu_execution_accelerator
    ]
    if chosen and config.backend != "onnxruntime":
        raise ModelConfigError(
            "optimization.execution_accelerators: only served for the onnxruntime backend"
        )
    for name, known in chosen:
        if name not in known:
            # Triton's words, then which ones we know.
            raise ModelConfigError(
                f"optimization.execution_accelerators: unknown Execution Accelerator "
                f"'{name}' is requested (known: {', '.join(known)})"
            )


def _check_thread_parameters(config: ModelConfig) -> None:
    for key in THREAD_PARAMETERS.get(config.backend, ()):
        if key not in config.parameters:
            continue
        value = config.parameters[key].string_value
        if not value.strip().isdigit():
            raise ModelConfigError(
                f"parameters {key!r}: expected a whole number of threads, got {value!r}"
            )

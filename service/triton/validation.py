"""What the gateway cannot honour in a configuration, refused with the field's name.

A refused model is not servable; the loader reports it with this reason and the other models
serve. Refused: ensembles, backends and platforms other than ONNX Runtime and PyTorch,
iterative sequences, initial states read from files, and the fields whose meaning we would
silently drop.
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
    ModelSequenceBatching,
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
        _check_sequence_batching(config)
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


_CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
"""The data types Triton allows for a CONTROL_SEQUENCE_CORRID tensor."""


def _check_sequence_batching(config: ModelConfig) -> None:
    """Control inputs and implicit states as Triton defines them: one control per control
    input, each kind at most once, a true/false pair (or a CORRID data type); states named,
    typed and shaped, starting from zeros."""
    batching = config.sequence_batching
    where = "sequence_batching"
    if batching.iterative_sequence:
        raise ModelConfigError(f"{where}.iterative_sequence: iterative sequences are not served")
    kinds: set[int] = set()
    names: set[str] = set()
    for control_input in batching.control_input:
        name = control_input.name
        if not name:
            raise ModelConfigError(f"{where}.control_input: must specify 'name'")
        if len(control_input.control) != 1:
            raise ModelConfigError(
                f"{where}.control_input {name!r}: must specify exactly one 'control'"
            )
        if name in names:
            raise ModelConfigError(f"{where}.control_input {name!r}: named twice")
        names.add(name)
        (control,) = control_input.control
        kind = ModelSequenceBatching.Control.Kind.Name(control.kind)
        if control.kind in kinds:
            raise ModelConfigError(f"{where}.control_input {name!r}: a second {kind} control")
        kinds.add(control.kind)
        pairs = [
            values
            for values in (
                control.int32_false_true,
                control.fp32_false_true,
                control.bool_false_true,
            )
            if values
        ]
        if control.kind == ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID:
            type_name = DataType.Name(control.data_type)
            if pairs or type_name not in _CORRID_TYPES:
                raise ModelConfigError(
                    f"{where}.control_input {name!r}: {kind} takes a data_type "
                    f"({', '.join(_CORRID_TYPES)}) and no false/true values"
                )
        elif len(pairs) != 1 or len(pairs[0]) != 2:
            raise ModelConfigError(
                f"{where}.control_input {name!r}: {kind} needs exactly one of "
                "int32_false_true, fp32_false_true, bool_false_true, with two values"
            )
    for state in batching.state:
        _check_state(state, names)


def _check_state(state: ModelSequenceBatching.State, names: set[str]) -> None:
    where = f"sequence_batching.state {state.input_name!r}"
    if not state.input_name or not state.output_name:
        raise ModelConfigError("sequence_batching.state: must specify input_name and output_name")
    if state.input_name in names:
        raise ModelConfigError(f"{where}: input_name is already a control or state input")
    names.add(state.input_name)
    type_name = DataType.Name(state.data_type)
    if type_name not in served_types() or type_name == "TYPE_STRING":
        raise ModelConfigError(f"{where}: data_type {type_name} is not served for a state")
    if not state.dims:
        raise ModelConfigError(f"{where}: must specify 'dims'")
    _check_dims(where, "dims", state.dims)
    if len(state.initial_state) > 1:
        raise ModelConfigError(f"{where}: initial_state: at most one is served")
    for initial in state.initial_state:
        if initial.WhichOneof("state_data") == "data_file":
            raise ModelConfigError(
                f"{where}: initial_state {initial.name!r}: data_file is not served (use zero_data)"
            )
        if initial.data_type != state.data_type:
            raise ModelConfigError(f"{where}: initial_state data_type differs from the state's")
        if len(initial.dims) != len(state.dims) or any(
            dim < 1 or want not in (WILDCARD, dim)
            for dim, want in zip(initial.dims, state.dims, strict=True)
        ):
            raise ModelConfigError(
                f"{where}: initial_state dims {list(initial.dims)} do not fit dims "
                f"{list(state.dims)}"
            )
    if not state.initial_state and WILDCARD in state.dims:
        raise ModelConfigError(
            f"{where}: dims {list(state.dims)} hold a variable size: give an initial_state "
            "with its dims (zero_data: true)"
        )

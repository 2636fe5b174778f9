"""Completing a configuration from the model file, as Triton's auto-complete does.

For ONNX, as Triton's ONNX Runtime backend (`AutoCompleteConfig`): when the configuration
names both inputs and outputs nothing is added; otherwise the missing inputs or outputs come
from the graph, and a model whose every input and output has a dynamic first dimension is
batchable: `max_batch_size` 0 becomes the default (4, Triton's `default-max-batch-size`),
the batch dimension leaves `dims`, and `dynamic_batching {}` is switched on when the maximum
is over 1. A tensor without dimensions becomes `dims: [1]` (with an empty `reshape` when
batching). Beyond Triton, a tensor that is named without `data_type` or `dims` gets them.

Whatever the configuration gives is checked against the file, with Triton's rules: the same
data type; with batching, a dynamic first dimension in the model; the same number of
dimensions; equal sizes, except that a dynamic model dimension accepts any input size.

`.pt2` archives holding a `torch.export` program are completed the same way from what the
program records. TorchScript and AOTInductor-only archives record nothing we can read, so
their configuration must give every field; the error says which are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tritonclient.grpc.model_config_pb2 import DataType, ModelConfig, ModelInput, ModelOutput

from service.errors import ModelConfigError
from service.triton.layout import ONNX, PT2, TORCHSCRIPT, Platform
from service.triton.signatures import (
    DYNAMIC,
    GraphTensor,
    Signature,
    onnx_signature,
    pt2_contents,
    pt2_signature,
)

DEFAULT_MAX_BATCH_SIZE = 4
"""Triton's `--backend-config=default-max-batch-size` default."""


def complete_from_model(config: ModelConfig, model_file: Path, platform: Platform) -> None:
    """Fill what `config` leaves out from `model_file`, and check what it gives."""
    if platform == ONNX:
        complete_from_signature(config, onnx_signature(model_file))
        return
    if platform == PT2:
        program, _ = pt2_contents(model_file)
        if program:
            complete_from_signature(config, pt2_signature(model_file))
            return
        require_complete(config, f"{model_file.name} (an AOTInductor package) records no shapes")
        return
    if platform == TORCHSCRIPT:
        require_complete(
            config, f"{model_file.name} (TorchScript) records no tensor names, types or shapes"
        )
        return
    raise ModelConfigError(f"platform: {config.platform!r} cannot be completed")


def complete_from_signature(config: ModelConfig, signature: Signature) -> None:
    """Triton's auto-complete of batching and tensors from a recorded signature. A sequence
    model's control and state inputs, and its state outputs, are the server's: they are
    checked against the model and left out of `input` (and of `output` unless listed)."""
    signature = _without_sequence_tensors(config, signature)
    if not (config.input and config.output):
        if signature.batchable and config.max_batch_size == 0:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        if (
            config.max_batch_size > 1
            and not config.HasField("dynamic_batching")
            and not config.HasField("sequence_batching")
        ):
            config.dynamic_batching.SetInParent()
    batching = config.max_batch_size > 0
    _complete_tensors("input", config.input, signature.inputs, batching, every_one=True)
    _complete_tensors("output", config.output, signature.outputs, batching, every_one=False)


def _without_sequence_tensors(config: ModelConfig, signature: Signature) -> Signature:
    if not config.HasField("sequence_batching"):
        return signature
    batching = config.sequence_batching
    inputs = {tensor.name: tensor for tensor in signature.inputs}
    outputs = {tensor.name: tensor for tensor in signature.outputs}
    hidden: set[str] = set()
    for control in batching.control_input:
        _check_hidden("control_input", control.name, inputs, None)
        hidden.add(control.name)
    for state in batching.state:
        _check_hidden("state", state.input_name, inputs, state.data_type)
        _check_hidden("state", state.output_name, outputs, state.data_type, kind="output")
        hidden.add(state.input_name)
    listed = {output.name for output in config.output}
    states = {state.output_name for state in batching.state} - listed
    return Signature(
        tuple(tensor for tensor in signature.inputs if tensor.name not in hidden),
        tuple(tensor for tensor in signature.outputs if tensor.name not in states),
    )


def _check_hidden(
    field: str,
    name: str,
    recorded: dict[str, GraphTensor],
    data_type: int | None,
    kind: str = "input",
) -> None:
    found = recorded.get(name)
    where = f"sequence_batching.{field} {name!r}"
    if found is None:
        names = ", ".join(repr(tensor) for tensor in recorded)
        raise ModelConfigError(f"{where}: the model has no {kind} of that name (it has {names})")
    if data_type is not None and DataType.Name(data_type) != found.data_type:
        raise ModelConfigError(
            f"{where}: data_type {DataType.Name(data_type)} in the configuration, the model's "
            f"{kind} is {found.data_type}"
        )


def require_complete(config: ModelConfig, why: str) -> None:
    """For files that record nothing: every tensor field must be in the configuration."""
    missing = []
    for kind, tensors in (("input", config.input), ("output", config.output)):
        if not tensors:
            missing.append(kind)
        for tensor in tensors:
            if not tensor.name:
                missing.append(f"{kind} name")
            if tensor.data_type == DataType.TYPE_INVALID:
                missing.append(f"{kind} {tensor.name!r} data_type")
            if not tensor.dims:
                missing.append(f"{kind} {tensor.name!r} dims")
    if missing:
        raise ModelConfigError(
            f"{why}: config.pbtxt must give max_batch_size (0: no batching), "
            "input [{name, data_type, dims}] and output [{name, data_type, dims}]; "
            f"missing: {', '.join(missing)}"
        )


def _complete_tensors(
    kind: str,
    configured: Sequence[ModelInput] | Sequence[ModelOutput],
    recorded: tuple[GraphTensor, ...],
    batching: bool,
    *,
    every_one: bool,
) -> None:
    by_name = {tensor.name: tensor for tensor in recorded}
    if not configured:
        for graph in recorded:
            tensor = configured.add()  # type: ignore[attr-defined]
            tensor.name = graph.name
            _fill(tensor, graph, batching)
            _check(kind, tensor, graph, batching)
        return
    for tensor in configured:
        found = by_name.get(tensor.name)
        if found is None:
            names = ", ".join(repr(t.name) for t in recorded)
            raise ModelConfigError(
                f"{kind} {tensor.name!r}: the model has no {kind} of that name (it has {names})"
            )
        _fill(tensor, found, batching)
        _check(kind, tensor, found, batching)
    if every_one:
        named = {tensor.name for tensor in configured}
        left_out = [t.name for t in recorded if t.name not in named]
        if left_out:
            raise ModelConfigError(
                f"{kind}: the configuration leaves out the model's {kind} "
                f"{', '.join(map(repr, left_out))}"
            )


def _fill(tensor: ModelInput | ModelOutput, graph: GraphTensor, batching: bool) -> None:
    if tensor.data_type == DataType.TYPE_INVALID:
        tensor.data_type = DataType.Value(graph.data_type)
    if tensor.dims or tensor.HasField("reshape"):
        return
    dims = graph.shape[1:] if batching else graph.shape
    if dims:
        tensor.dims.extend(dims)
        return
    tensor.dims.append(1)
    if batching:
        tensor.reshape.SetInParent()  # one element per row, the model's tensor is [batch]


def _check(kind: str, tensor: ModelInput | ModelOutput, graph: GraphTensor, batching: bool) -> None:
    where = f"{kind} {tensor.name!r}"
    given = DataType.Name(tensor.data_type)
    if given != graph.data_type:
        raise ModelConfigError(
            f"{where}: data_type {given} in the configuration, the model has {graph.data_type}"
        )
    dims = list(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims)
    field = "reshape" if tensor.HasField("reshape") else "dims"
    model = list(graph.shape)
    if not model:
        if any(dim != 1 for dim in dims):
            raise ModelConfigError(
                f"{where}: the model's tensor is a scalar; {field} must only hold 1 (got {dims})"
            )
        return
    if batching and model[0] != DYNAMIC:
        raise ModelConfigError(
            f"{where}: max_batch_size > 0 needs a dynamic first dimension, the model's shape is "
            f"{model}; set max_batch_size: 0 and give the whole shape in dims"
        )
    full = [DYNAMIC, *dims] if batching else dims
    exact = kind == "output"
    fits = len(full) == len(model) and all(
        mine == theirs or (theirs == DYNAMIC and not exact)
        for mine, theirs in zip(full, model, strict=False)
    )
    if not fits:
        batch_note = " (with the batch dimension first)" if batching else ""
        raise ModelConfigError(
            f"{where}: {field} {dims} give the shape {full}{batch_note}; the model's shape "
            f"is {model}"
        )
